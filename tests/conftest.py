"""Shared fixtures: tiny configs that train in seconds on CPU."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


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
