"""The VAE family; `create(config, info) -> Method` lives in `method.py`.

A trained VAE run can serve another run as its `autoencoder` component (`ROLES`).
"""

from aigc_jax.methods.vae.method import autoencoder_role, create, validate

ROLES = {"autoencoder": autoencoder_role}

__all__ = ["ROLES", "create", "validate"]
