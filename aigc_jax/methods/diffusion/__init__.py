"""The diffusion family; `create(config, info, components) -> Method` lives in `method.py`.

It takes an `autoencoder` component (latent diffusion: it then learns that run's latents).
"""

from aigc_jax.methods.diffusion.method import create, validate

ACCEPTS = ("autoencoder",)

__all__ = ["ACCEPTS", "create", "validate"]
