"""Test helpers: run the CLI in a subprocess, hash a workdir, read final parameters."""

import hashlib
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny digits VAE of conftest.tiny_vae_config, as command-line overrides. Tuple-valued
# overrides accumulate when repeated, so `model.hidden` is left to each caller (`tiny_flags`).
TINY_VAE_FLAGS = [
    "--config=configs/vae.py:digits",
    "--config.train.batch_size=50",
    "--config.train.log_every=10",
    "--config.train.tensorboard=False",
    "--config.optimizer.warmup_steps=5",
    "--config.eval.iwae_k=8",
    "--config.eval.nll_samples=40",
    "--config.eval.nll_chunk=20",
    "--config.num_samples=16",
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
