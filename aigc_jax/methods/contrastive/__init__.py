"""The contrastive family (CLIP, SigLIP); `create` and `validate` live in `method.py`, the roles
a trained run serves (TextEncoder, ImageEncoder) and `clip_score` in `components.py`."""

from aigc_jax.methods.contrastive.components import ROLES, clip_score
from aigc_jax.methods.contrastive.method import create, validate

__all__ = ["ROLES", "clip_score", "create", "validate"]
