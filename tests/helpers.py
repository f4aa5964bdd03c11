"""Test helpers: run the CLI in a subprocess, hash a workdir, read final parameters."""

import hashlib
import os
import subprocess
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny digits VAE (configs/vae.py:tiny, as conftest.tiny_vae_config) on the command line,
# with the digits variant's eval/sample/checkpoint cadence (only at the last step).
TINY_VAE_FLAGS = [
    "--config=configs/vae.py:tiny",
    "--config.train.eval_every=1000",
    "--config.train.sample_every=2000",
    "--config.train.checkpoint_every=1000",
]


def cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m aigc_jax.main ARGS` from the repo root and capture its output."""
    return subprocess.run([sys.executable, "-m", "aigc_jax.main", *args], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=600, **kwargs)


def popen_cli(*args: str) -> subprocess.Popen:
    """Start `python -m aigc_jax.main ARGS` without waiting."""
    return subprocess.Popen([sys.executable, "-m", "aigc_jax.main", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def tree_digest(path: str) -> dict[str, str]:
    """sha256 of every file under `path`, keyed by relative path."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def tiny_flags(hidden: str = "(64,)") -> list[str]:
    """TINY_VAE_FLAGS plus the hidden layer sizes."""
    return [*TINY_VAE_FLAGS, f"--config.model.hidden={hidden}"]


def wait_for(path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Block until `path` exists, failing if the process `proc` exits first or time runs out."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"training exited early: {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def assert_same_state(a, b) -> None:
    """Two TrainStates hold bit-identical params, EMA params, optimizer and model state."""
    for field in ("params", "ema_params", "opt_state", "model_state"):
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(getattr(a, field)),
                     jax.device_get(getattr(b, field)))
