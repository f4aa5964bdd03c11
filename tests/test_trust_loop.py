"""A run you can trust, the loop's side: eval and sample take the model from the run's
config.json, samples are never overwritten, Ctrl-C checkpoints, preemption has its own exit
status, resume refuses to re-stretch a schedule, the ETA leaves out compile and eval, and
TensorBoard gets samples, eval results and the learning rate."""

import json
import os
import signal

import numpy as np
import pytest
from conftest import tiny_vae_config
from helpers import cli, popen_cli, tree_digest, wait_for

from aigc_jax import checkpoint, train
from aigc_jax import logging as metric_logging
from aigc_jax.errors import UserError

# Trained with a non-default model and objective: a sample/eval that rebuilt the model from
# the command line's variant would fail to restore it (or silently use another objective).
TRAIN_FLAGS = ["--config=configs/vae.py:tiny", "--config.model.hidden=(48,)",
               "--config.model.latent_dim=4", "--config.vae.objective=iwae",
               "--config.train.num_steps=20", "--config.train.eval_every=0",
               "--config.train.sample_every=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("vae_trust"))
    r = cli(*TRAIN_FLAGS, f"--workdir={workdir}")
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def _error_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


def test_sample_and_eval_take_the_model_from_config_json(trained):
    r = cli("--config=configs/vae.py:tiny", f"--workdir={trained}", "--mode=sample",
            "--num_samples=6")
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.load(os.path.join(trained, "samples.npz"))["images"].shape == (6, 8, 8, 1)
    r = cli("--config=configs/vae.py:tiny", f"--workdir={trained}", "--mode=eval",
            "--config.eval.nll_samples=20")  # eval.* may change
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.load(open(os.path.join(trained, "eval", "20.json")))
    assert "nll_iwae_k20" in result


def test_a_changed_training_key_in_sample_mode_is_one_error(trained):
    before = tree_digest(trained)
    line = _error_line(cli("--config=configs/vae.py:tiny", f"--workdir={trained}",
                           "--mode=sample", "--config.vae.objective=elbo"))
    assert "--config.vae.objective='elbo' differs from the 'iwae'" in line
    assert tree_digest(trained) == before


def test_another_family_on_the_workdir_is_one_error(trained):
    line = _error_line(cli("--config=configs/diffusion.py:tiny", f"--workdir={trained}",
                           "--mode=sample"))
    assert "holds a 'vae' run" in line


def test_sample_never_overwrites_earlier_samples(trained):
    for _ in range(2):
        r = cli("--config=configs/vae.py:tiny", f"--workdir={trained}", "--mode=sample",
                "--num_samples=4")
        assert r.returncode == 0, r.stderr[-3000:]
    names = set(os.listdir(trained))
    assert {"samples.npz", "samples_1.npz"} <= names or {"samples_1.npz", "samples_2.npz"} <= names
    r = cli("--config=configs/vae.py:tiny", f"--workdir={trained}", "--mode=sample",
            "--num_samples=4", "--output=grid_a")
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.load(os.path.join(trained, "grid_a.npz"))["images"].shape[0] == 4
    before = tree_digest(trained)
    line = _error_line(cli("--config=configs/vae.py:tiny", f"--workdir={trained}",
                           "--mode=sample", "--output=grid_a"))
    assert "already exists" in line
    assert tree_digest(trained) == before


def test_a_one_device_run_samples_and_evaluates_on_eight_devices(trained):
    """train.batch_size (50) does not split over 8 devices: only training needs it to."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    r = cli("--config=configs/vae.py:tiny", f"--workdir={trained}", "--mode=sample",
            "--num_samples=6", "--output=eight_devices", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.load(os.path.join(trained, "eight_devices.npz"))["images"].shape[0] == 6
    r = cli("--config=configs/vae.py:tiny", f"--workdir={trained}", "--mode=eval",
            "--config.eval.nll_samples=40", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "nll_iwae_k40" in json.load(open(os.path.join(trained, "eval", "20.json")))
    line = _error_line(cli(*TRAIN_FLAGS, f"--workdir={trained}", "--config.train.num_steps=40",
                           env=env))
    assert "train.batch_size=50 must be a positive multiple of the 8 devices" in line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_checkpoints_and_exits_with_the_preempted_status(tmp_path, sig):
    workdir = tmp_path / "stopped"
    proc = popen_cli("--config=configs/vae.py:tiny", f"--workdir={workdir}",
                     "--config.train.num_steps=1000000", "--config.train.checkpoint_every=100000",
                     "--config.train.eval_every=0", "--config.train.sample_every=0")
    wait_for(workdir / "metrics.jsonl", proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == train.PREEMPTED_EXIT_CODE
    assert "Traceback" not in proc.stderr.read()
    steps = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
    assert len(steps) == 1 and 10 <= steps[0] < 100000


def test_resume_with_a_changed_schedule_length_is_an_error(tmp_path):
    config = tiny_vae_config(20)  # cosine schedule
    train.train_and_evaluate(config, str(tmp_path))
    saved = open(tmp_path / "config.json").read()
    longer = tiny_vae_config(40)
    with pytest.raises(UserError, match="train.num_steps=40 differs from the 20.*cosine"):
        train.train_and_evaluate(longer, str(tmp_path))
    assert open(tmp_path / "config.json").read() == saved


def test_resume_past_num_steps_warns_and_keeps_config_json(tmp_path, caplog):
    config = tiny_vae_config(20)
    config.optimizer.schedule = "constant"
    train.train_and_evaluate(config, str(tmp_path))
    saved = open(tmp_path / "config.json").read()
    shorter = tiny_vae_config(10)
    shorter.optimizer.schedule = "constant"
    with caplog.at_level("WARNING"):
        state = train.train_and_evaluate(shorter, str(tmp_path))
    assert int(state.step) == 20
    assert "already at or past train.num_steps=10" in caplog.text
    assert open(tmp_path / "config.json").read() == saved


def test_progress_rate_leaves_out_compile_and_eval(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(metric_logging.time, "perf_counter", lambda: now[0])
    p = metric_logging.Progress(0, 1000)
    now[0] += 30.0  # the first step compiles for 30 s
    p.restart(1)
    now[0] += 9.0  # 9 more steps at 1 step/s
    assert p.rate(10) == pytest.approx(1.0)
    now[0] += 10.0  # 10 steps ...
    p.exclude(20.0)
    now[0] += 20.0  # ... and a 20 s eval
    assert p.rate(20) == pytest.approx(1.0)
    assert "ETA 16m20s" in p.line(20, {"loss": 1.0, "steps_per_sec": 1.0})


def test_long_passes_print_progress_with_an_eta(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(metric_logging.time, "perf_counter", lambda: now[0])
    quiet = metric_logging.PassProgress("eval", 10)
    now[0] = 1.0
    quiet.update(9)
    quiet.done()
    assert quiet.lines == []  # short passes stay quiet
    p = metric_logging.PassProgress("eval", 10)
    now[0] = 13.0
    p.update(2)
    p.done()
    assert p.lines[0] == "eval 2/10 batches, 0m12s, ETA 0m48s"


class _Recorder:
    """Stands in for tensorboardX.SummaryWriter and records what is written."""

    calls: list = []

    def __init__(self, logdir):
        pass

    def add_scalar(self, tag, value, step):
        self.calls.append(("scalar", tag))

    def add_image(self, tag, image, step, dataformats):
        self.calls.append(("image", tag, image.shape))

    def add_text(self, tag, text, step):
        self.calls.append(("text", tag))

    def flush(self):
        pass

    def close(self):
        pass


def test_tensorboard_gets_samples_eval_results_and_learning_rate(tmp_path, monkeypatch):
    import tensorboardX

    monkeypatch.setattr(tensorboardX, "SummaryWriter", _Recorder)
    _Recorder.calls = []
    config = tiny_vae_config(20)
    config.train.tensorboard = True
    config.train.sample_every = 20
    config.train.eval_every = 20
    train.train_and_evaluate(config, str(tmp_path))
    config.eval.final_max_examples = 50
    train.evaluate(config, str(tmp_path))
    calls = _Recorder.calls
    assert ("scalar", "train/learning_rate") in calls
    assert any(c[0] == "image" and c[1] == "samples/step_20" for c in calls)
    assert ("scalar", "eval/nll_iwae_k40") in calls  # --mode=eval results
    text = tmp_path / "s.txt"
    text.write_text("ROMEO: hello\n")
    writer = metric_logging.MetricWriter(str(tmp_path / "tb"))
    writer.write_files(3, "samples", [str(text)])
    assert ("text", "samples/s") in _Recorder.calls


def test_final_max_examples_bounds_the_eval_passes(tmp_path, monkeypatch):
    config = tiny_vae_config(10)
    train.train_and_evaluate(config, str(tmp_path))
    totals = []
    real = train.PassProgress

    def recording(name, total, **kw):
        totals.append(total)
        return real(name, total, **kw)

    monkeypatch.setattr(train, "PassProgress", recording)
    config.eval.batch_size = config.eval.final_batch_size = 50
    config.eval.final_max_examples = 50
    train.evaluate(config, str(tmp_path))
    assert totals == [1, 1]  # both passes: one batch of 50 instead of the 300-image split


def test_save_waits_for_the_state_before_orbax_copies_it(tmp_path, monkeypatch):
    config = tiny_vae_config(2)
    state = train.train_and_evaluate(config, str(tmp_path / "a"))
    waited = []
    real = checkpoint.jax.block_until_ready
    monkeypatch.setattr(checkpoint.jax, "block_until_ready",
                        lambda x: waited.append(x) or real(x))
    ckpt = checkpoint.Checkpointer(str(tmp_path / "b"))
    ckpt.save(state, {"step": 2})
    ckpt.close()
    assert waited and waited[0] is state
