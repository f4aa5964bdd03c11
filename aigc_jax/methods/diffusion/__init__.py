"""The diffusion family; `create(config, info, components) -> Method` lives in `method.py`.

It takes an `autoencoder` component (latent diffusion: it then learns that run's latents), a
`text_encoder` (a CLIP run whose per-token states condition the UNet, `conditioning.py`) and an
`image_encoder` (the same CLIP run, for FD and CLIP score in `text_eval.py`).
"""

from aigc_jax.methods.diffusion.method import create, validate

ACCEPTS = ("autoencoder", "text_encoder", "image_encoder")

__all__ = ["ACCEPTS", "create", "validate"]
