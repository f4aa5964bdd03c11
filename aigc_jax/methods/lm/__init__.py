"""The lm family; `create(config, info) -> Method` and `validate` live in `method.py`."""

from aigc_jax.methods.lm.method import create, validate

__all__ = ["create", "validate"]
