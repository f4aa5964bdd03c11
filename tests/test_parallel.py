"""Scale: 8 fake devices (data parallel and FSDP) and 2 processes over loopback (gloo) give the
parameters of a single-device run."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
from conftest import tiny_vae_config
from helpers import REPO, cli, tiny_flags

from aigc_jax import parallel, train

STEPS = 30


def _config(**changes):
    c = tiny_vae_config(STEPS)
    c.model.hidden = (128,)  # large enough that FSDP really shards the first kernel
    c.train.batch_size = 48
    c.train.eval_every = 0
    c.train.sample_every = 0
    c.train.checkpoint_every = 10
    for key, value in changes.items():
        c.train[key] = value
    return c


def _flags(workdir):
    return [*tiny_flags("(128,)"), f"--workdir={workdir}",
            "--config.train.batch_size=48", f"--config.train.num_steps={STEPS}",
            "--config.train.eval_every=0", "--config.train.sample_every=0",
            "--config.train.checkpoint_every=10"]


def _final_params(workdir):
    state, found = train.Run(_config(), str(workdir)).restore_or_init()
    assert found and int(state.step) == STEPS
    return jax.device_get(state.params)


def _assert_close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6), a, b)


def test_fsdp_shards_large_arrays_only():
    mesh = parallel.create_mesh(_config(), devices=jax.devices()[:1])
    assert mesh.shape == {"data": 1, "fsdp": 1}
    abstract = {"big": jax.ShapeDtypeStruct((64, 1024), np.float32),
                "small": jax.ShapeDtypeStruct((3,), np.float32)}
    shardings = parallel.state_shardings(mesh, abstract)
    assert shardings["big"].spec == shardings["small"].spec == jax.sharding.PartitionSpec()


def test_eight_devices_data_parallel_and_fsdp_match_one_device(tmp_path):
    reference = jax.device_get(train.train_and_evaluate(_config(), str(tmp_path / "one")).params)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    for name, extra in [("dp", []), ("fsdp", ["--config.parallel.fsdp=4"])]:
        workdir = tmp_path / name
        r = cli(*_flags(workdir), *extra, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "on 8 cpu device(s)" in r.stderr
        _assert_close(_final_params(workdir), reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir, *extra):
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
               "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid),
               "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo", "JAX_PLATFORMS": "cpu"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "aigc_jax.main", *_flags(workdir), *extra], cwd=REPO,
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]


def test_two_processes_over_loopback_checkpoint_resume_and_match(tmp_path):
    reference = jax.device_get(train.train_and_evaluate(_config(), str(tmp_path / "one")).params)
    workdir = tmp_path / "two"
    _two_processes(workdir, "--config.train.stop_after=20")
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]
    _two_processes(workdir)  # resumes from step 20
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20", "30"]
    _assert_close(_final_params(workdir), reference)
