"""uint8 pixels <-> float images: the one spelling every family and model uses (a change of
value range lands everywhere). `methods.common` re-exports both."""

import jax
import jax.numpy as jnp
import numpy as np


def to_float(images: jax.Array, value_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
    """uint8 images [B, H, W, C] to float32 in `value_range` ([-1, 1] for diffusion, GANs and
    autoencoders; [0, 1] for Bernoulli likelihoods)."""
    lo, hi = value_range
    return images.astype(jnp.float32) * ((hi - lo) / 255.0) + lo


def to_uint8(x: jax.Array, value_range: tuple[float, float] = (-1.0, 1.0)) -> jax.Array:
    """Float images in `value_range` to uint8 pixels (rounded, clipped); uint8 passes through.
    Works on numpy arrays as well as jax ones."""
    if x.dtype == np.uint8:
        return x
    lo, hi = value_range
    return jnp.clip(jnp.round((x - lo) * (255.0 / (hi - lo))), 0, 255).astype(jnp.uint8)
