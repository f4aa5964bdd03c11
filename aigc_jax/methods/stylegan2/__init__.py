"""The stylegan2 family; `create(config, info) -> Method` and `validate` live in `method.py`."""

from aigc_jax.methods.stylegan2.method import create, validate

__all__ = ["create", "validate"]
