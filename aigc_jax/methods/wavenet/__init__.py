"""The wavenet family; `create(config, info) -> Method` and `validate` live in `method.py`."""

from aigc_jax.methods.wavenet.method import create, validate

__all__ = ["create", "validate"]
