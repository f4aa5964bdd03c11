"""The autoencoder family (LDM's KL autoencoder, VQ-VAE/VQGAN, FSQ); `create`, `validate` and
the `autoencoder` component exporter live in `method.py`."""

from aigc_jax.methods.autoencoder.method import autoencoder_role, create, validate

ROLES = {"autoencoder": autoencoder_role}

__all__ = ["ROLES", "create", "validate"]
