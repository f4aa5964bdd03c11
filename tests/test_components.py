"""A trained run as a frozen component of another, and warm starts (aigc_jax/components.py).

Stage 1 is the tiny digits VAE; stage 2 is latent diffusion in its latent space
(`configs/diffusion.py:tiny_latent`), the two-stage recipe of the README.
"""

import json
import os
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from conftest import load_config, tiny_vae_config
from helpers import REPO, popen_cli, wait_for

from aigc_jax import components, parallel, train
from aigc_jax.errors import UserError

STAGE2_STEPS = 20


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> str:
    """A trained tiny VAE: the stage-1 run every test here builds on."""
    workdir = str(tmp_path_factory.mktemp("vae"))
    c = tiny_vae_config(40)
    c.train.eval_every = c.train.sample_every = 0
    train.train_and_evaluate(c, workdir)
    return workdir


def latent_config(vae_workdir: str, num_steps: int = STAGE2_STEPS):
    """Latent diffusion on `vae_workdir`'s latents (configs/diffusion.py:tiny_latent)."""
    c = load_config("diffusion", "tiny_latent")
    c.components.autoencoder.workdir = vae_workdir
    c.train.num_steps = num_steps
    return c


def _vae_ema(workdir: str):
    """The stage-1 run's EMA weights, read with its own full state restore."""
    state, found = train.Run(tiny_vae_config(40), workdir, need_data=False).restore_or_init()
    assert found
    return jax.device_get(state.ema_params)


def test_frozen_weights_are_stage1_ema_unchanged_by_training_and_not_checkpointed(
        vae_run, tmp_path):
    run = train.Run(latent_config(vae_run), str(tmp_path))
    frozen = run.frozen["autoencoder"]
    before = jax.device_get(frozen)
    jax.tree.map(np.testing.assert_array_equal, before, _vae_ema(vae_run))

    state, _ = run.restore_or_init()
    step = run.jit_train_step()
    for s in range(5):
        local = run.train_ds.train_batch(s, 32, 0, 1)
        state, _ = step(state, parallel.shard_batch(run.mesh, local), run.frozen)
    # Not donated (the buffers are still alive) and bit-identical after training steps.
    assert not any(x.is_deleted() for x in jax.tree.leaves(frozen))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.frozen["autoencoder"]),
                 before)
    run.ckpt.close()

    workdir = tmp_path / "trained"
    train.train_and_evaluate(latent_config(vae_run), str(workdir))
    # The checkpoint holds the stage-2 state only: its arrays are exactly the TrainState's.
    mngr = components.read_only_manager(str(workdir))
    saved = mngr.item_metadata(STAGE2_STEPS)["state"]
    saved = saved.tree if hasattr(saved, "tree") else saved
    mngr.close()
    assert set(saved) == {"step", "params", "opt_state", "ema_params", "rng", "model_state"}
    vae_sizes = sorted(x.size for x in jax.tree.leaves(before))
    saved_sizes = [int(np.prod(m.shape)) for m in jax.tree.leaves(saved["params"])]
    assert max(vae_sizes) not in saved_sizes  # the VAE's largest kernel is nowhere in it
    # Provenance: config.json and eval/<step>.json name stage 1's workdir, step and hash.
    with open(workdir / "config.json") as f:
        record = json.load(f)["provenance"]["components"]["autoencoder"]
    assert record["workdir"] == os.path.abspath(vae_run) and record["step"] == 40
    assert record["config_hash"] == components.config_hash(components.read_run(vae_run, "x")[0])
    results = train.evaluate(latent_config(vae_run), str(workdir))
    assert "vlb_bpd" not in results and np.isfinite(results["loss"])
    with open(workdir / "eval" / f"{STAGE2_STEPS}.json") as f:
        assert json.load(f)["provenance"]["components"]["autoencoder"]["step"] == 40
    files = train.sample(latent_config(vae_run), str(workdir), 8)
    images = np.load([f for f in files if f.endswith(".npz")][0])["images"]
    assert images.shape == (8, 8, 8, 1) and images.dtype == np.uint8  # decoded to pixels


def test_sigkill_resume_reloads_the_component_and_equals_uninterrupted(vae_run, tmp_path):
    steps = 60
    reference = train.train_and_evaluate(latent_config(vae_run, steps), str(tmp_path / "ref"))
    killed = tmp_path / "killed"
    proc = popen_cli("--config=configs/diffusion.py:tiny_latent", f"--workdir={killed}",
                     f"--config.components.autoencoder.workdir={vae_run}",
                     f"--config.train.num_steps={steps}")
    wait_for(killed / "checkpoints" / "20", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(killed / "checkpoints" / str(steps))
    resumed = train.train_and_evaluate(latent_config(vae_run, steps), str(killed))
    assert int(resumed.step) == steps
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.params),
                 jax.device_get(resumed.params))


def test_resume_uses_the_recorded_component_step_and_rejects_a_changed_component(
        vae_run, tmp_path):
    workdir = str(tmp_path / "stage2")
    train.train_and_evaluate(latent_config(vae_run), workdir)
    other = tmp_path / "vae_copy"
    subprocess.run(["cp", "-r", vae_run, str(other)], check=True)
    with open(other / "config.json") as f:
        saved = json.load(f)
    saved["seed"] = 123
    with open(other / "config.json", "w") as f:
        json.dump(saved, f)
    c = latent_config(str(other), STAGE2_STEPS + 10)
    with pytest.raises(UserError, match="different config.json than when this run started"):
        train.Run(c, workdir)


def _fake_run(path, method: str) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(load_config(method, "tiny").to_dict(), f)
    with open(os.path.join(path, "data_info.json"), "w") as f:
        json.dump({"kind": "image", "image_shape": [8, 8, 1], "num_classes": 10}, f)
    return str(path)


def test_component_errors_are_one_line_before_anything_compiles(vae_run, tmp_path):
    cases = [
        (str(tmp_path / "missing"), "does not exist"),
        (_fake_run(tmp_path / "no_ckpt", "vae"), "holds no checkpoint"),
        (_fake_run(tmp_path / "gan", "gan"), "is a 'gan' run, which cannot serve as 'autoencoder'"),
        (str(tmp_path), "holds no trained run"),
    ]
    for workdir, message in cases:
        with pytest.raises(UserError, match=message) as e:
            train.Run(latent_config(workdir), str(tmp_path / "out"))
        assert "\n" not in str(e.value)
    c = latent_config(vae_run)
    c.data.image_size = 16  # the VAE was trained on 8x8 digits
    with pytest.raises(UserError, match="was trained on 8x8x1 images, but this run's data is 16"):
        train.Run(c, str(tmp_path / "out"))
    c = latent_config(vae_run)
    c.components.autoencoder.step = 7
    with pytest.raises(UserError, match="step=7 is not a checkpoint"):
        train.Run(c, str(tmp_path / "out"))
    gan = load_config("gan", "tiny")
    gan.components.autoencoder = ml_collections.ConfigDict(
        {"workdir": vae_run, "step": 0, "weights": "ema"})
    with pytest.raises(UserError, match="method 'gan' takes no components"):
        train.Run(gan, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "checkpoints" / "0")


def test_warm_start_copies_params_then_resume_uses_own_checkpoint(vae_run, tmp_path):
    c = tiny_vae_config(20)
    c.train.eval_every = c.train.sample_every = 0
    c.train.checkpoint_every = 10
    c.optimizer.learning_rate = 0.0  # nothing moves, so step-0 weights stay visible
    c.init_from.workdir = vae_run
    ema = _vae_ema(vae_run)
    state = train.train_and_evaluate(c, str(tmp_path / "warm"))
    jax.tree.map(np.testing.assert_allclose, jax.device_get(state.params), ema)
    with open(tmp_path / "warm" / "config.json") as f:
        assert json.load(f)["provenance"]["init_from"]["step"] == 40

    # Resumed: its own checkpoint, not init_from (a different learning rate shows it).
    c.optimizer.learning_rate = 1e-2
    c.train.num_steps = 30
    run = train.Run(c, str(tmp_path / "warm"))
    state, found = run.restore_or_init()
    run.ckpt.close()
    assert found and int(state.step) == 20 and "init_from" in run.provenance

    bad = tiny_vae_config(5)
    bad.init_from.workdir = vae_run
    bad.init_from.name_map = "nothing/here=params"
    with pytest.raises(UserError, match="no parameter matches|matches no parameter"):
        train.train_and_evaluate(bad, str(tmp_path / "bad"))
    diffusion = load_config("diffusion", "tiny")
    diffusion.init_from.workdir = vae_run
    with pytest.raises(UserError, match="no parameter matches"):
        train.train_and_evaluate(diffusion, str(tmp_path / "bad2"))
    shapes = tiny_vae_config(5)
    shapes.model.hidden = (32,)
    shapes.init_from.workdir = vae_run
    with pytest.raises(UserError, match="differ in shape"):
        train.train_and_evaluate(shapes, str(tmp_path / "bad3"))


FSDP_SCRIPT = r"""
import json, sys
import jax
from conftest import load_config, tiny_vae_config
from aigc_jax import train
vae_dir, out_dir = sys.argv[1], sys.argv[2]
c = tiny_vae_config(8)
c.model.hidden = (256,)  # 64 x 256 kernels: large enough for FSDP to shard
c.train.batch_size = 48
c.train.eval_every = c.train.sample_every = 0
c.train.checkpoint_every = 8
c.parallel.fsdp = 4
train.train_and_evaluate(c, vae_dir)
l = load_config("diffusion", "tiny_latent")
l.components.autoencoder.workdir = vae_dir
l.parallel.fsdp = 4
run = train.Run(l, out_dir)
frozen = run.frozen["autoencoder"]
stage1 = train.Run(c, vae_dir, need_data=False)
stage1.abstract_state()  # the trained run's own state shardings
expected = stage1.state_sharding.ema_params
same = jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), frozen, expected)
specs = [str(x.sharding.spec) for x in jax.tree.leaves(frozen)]
print(json.dumps({"devices": jax.device_count(), "same": all(jax.tree.leaves(same)),
                  "sharded": sum("fsdp" in s for s in specs)}))
"""


def test_frozen_weights_are_sharded_like_trained_ones_under_fsdp(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "tests")])}
    r = subprocess.run([sys.executable, "-c", FSDP_SCRIPT, str(tmp_path / "vae"),
                        str(tmp_path / "ldm")], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8 and out["same"] and out["sharded"] >= 1, out


def test_padded_chunks_pad_the_last_chunk_by_repeating_its_row():
    from aigc_jax.methods.common import padded_chunks

    got = list(padded_chunks(np.arange(5)[:, None], 2))
    assert [(s, n) for s, _, n in got] == [(0, 2), (2, 2), (4, 1)]
    np.testing.assert_array_equal(got[-1][1][:, 0], [4, 4])
    assert all(len(c) == 2 for _, c, _ in got)
