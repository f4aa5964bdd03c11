"""The method registry: `config.method` names a module in this package with `create(config, info)`.

A method is the family-specific part of a run (model, objective, sampler, evaluation); the
loop in `aigc_jax.train` knows nothing else. See `aigc_jax.methods.base.Method`.
"""

import importlib

import ml_collections

from aigc_jax.errors import UserError
from aigc_jax.methods.base import Method

METHODS = {
    "vae": "aigc_jax.methods.vae",
    "diffusion": "aigc_jax.methods.diffusion",
    "gan": "aigc_jax.methods.gan",
    "lm": "aigc_jax.methods.lm",
}


def get_module(name: str):
    """The module implementing method `name`."""
    if name not in METHODS:
        raise UserError(f"config.method={name!r} is unknown; known methods: {sorted(METHODS)}.")
    return importlib.import_module(METHODS[name])


def create(config: ml_collections.ConfigDict, info: dict) -> Method:
    """Build the Method for `config.method` given the dataset info (shapes, classes, vocab)."""
    return get_module(config.method).create(config, info)


__all__ = ["METHODS", "Method", "create", "get_module"]
