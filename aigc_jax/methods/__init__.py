"""The method registry: `config.method` names a module in this package with `create(config, info)`.

A method is the family-specific part of a run (model, objective, sampler, evaluation); the
loop in `aigc_jax.train` knows nothing else. See `aigc_jax.methods.base.Method`. A family's
package may also export `ROLES` ({role: exporter}, what its trained runs can serve as, see
`aigc_jax.components`) and `ACCEPTS` (the component roles it takes).
"""

import importlib
from typing import Any

import ml_collections

from aigc_jax.errors import UserError
from aigc_jax.methods.base import Method

METHODS = {
    "vae": "aigc_jax.methods.vae",
    "diffusion": "aigc_jax.methods.diffusion",
    "gan": "aigc_jax.methods.gan",
    "stylegan2": "aigc_jax.methods.stylegan2",
    "lm": "aigc_jax.methods.lm",
    "contrastive": "aigc_jax.methods.contrastive",
    "wavenet": "aigc_jax.methods.wavenet",
    "autoencoder": "aigc_jax.methods.autoencoder",
    "dalle": "aigc_jax.methods.dalle",
}


def get_module(name: str):
    """The module implementing method `name`."""
    if name not in METHODS:
        raise UserError(f"config.method={name!r} is unknown; known methods: {sorted(METHODS)}.")
    return importlib.import_module(METHODS[name])


def accepted_roles(name: str) -> tuple[str, ...]:
    """The component roles method `name` takes (`config.components.<role>`): its `ACCEPTS`."""
    return tuple(getattr(get_module(name), "ACCEPTS", ()))


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict[str, Any] | None = None) -> Method:
    """Build the Method for `config.method` given the dataset info (shapes, classes, vocab) and
    the loaded components ({role: aigc_jax.components.Component})."""
    return get_module(config.method).create(config, info, components or {})


__all__ = ["METHODS", "Method", "accepted_roles", "create", "get_module"]
