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
    """The digits VAE, shrunk to a few seconds of training."""
    c = load_config("vae", "digits")
    c.model.hidden = (64,)
    c.train.num_steps = num_steps
    c.train.batch_size = 50
    c.train.log_every = 10
    c.train.eval_every = num_steps
    c.train.checkpoint_every = 20
    c.train.sample_every = num_steps
    c.train.tensorboard = False
    c.optimizer.warmup_steps = 5
    c.eval.iwae_k = 8
    c.eval.nll_samples = 40
    c.eval.nll_chunk = 20
    c.num_samples = 16
    return c


@pytest.fixture
def vae_config():
    return tiny_vae_config()
