"""Shared fixtures: tiny configs that train in seconds on CPU."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# One persistent XLA compilation cache for the whole session, inherited by the xdist workers
# and by every CLI subprocess (kill/resume tests start the same tiny programs many times): a
# cached executable is loaded instead of compiled again. Set before jax is imported.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="aigc_jax_tests_xla_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)


def load_config(name: str, variant: str):
    """`configs/<name>.py:get_config(variant)` without going through absl flags."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cfg_{name}", os.path.join(REPO, "configs",
                                                                               f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def tiny_vae_config(num_steps: int = 60):
    """`configs/vae.py:tiny` (the digits VAE in seconds) for `num_steps` steps."""
    c = load_config("vae", "tiny")
    c.train.num_steps = num_steps
    c.train.eval_every = num_steps
    c.train.sample_every = num_steps
    return c


@pytest.fixture
def vae_config():
    return tiny_vae_config()
