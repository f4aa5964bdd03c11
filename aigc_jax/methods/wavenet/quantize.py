"""Sample quantization: mu-law companding (ITU-T G.711, WaveNet sec. 2.2) and linear grids."""

import jax.numpy as jnp
import numpy as np

Array = np.ndarray | jnp.ndarray


def mu_law_encode(x: Array, mu: int = 255) -> Array:
    """Audio in [-1, 1] -> classes 0..mu: sign(x) ln(1 + mu |x|) / ln(1 + mu), then rounded."""
    xp = jnp if isinstance(x, jnp.ndarray) else np
    x = xp.clip(x, -1.0, 1.0)
    y = xp.sign(x) * xp.log1p(mu * xp.abs(x)) / np.log1p(mu)
    return xp.floor((y + 1.0) * 0.5 * mu + 0.5).astype(xp.int32)


def mu_law_decode(q: Array, mu: int = 255) -> Array:
    """Classes 0..mu -> audio in [-1, 1], the inverse of `mu_law_encode` up to quantization."""
    xp = jnp if isinstance(q, jnp.ndarray) else np
    y = 2.0 * q.astype(xp.float32) / mu - 1.0
    return xp.sign(y) * ((1.0 + mu) ** xp.abs(y) - 1.0) / mu


def mu_law_error_bound(x: Array, mu: int = 255) -> Array:
    """|x - decode(encode(x))| <= (|x| + 1/mu) ((1 + mu)^(1/mu) - 1): half a companded step."""
    return (np.abs(x) + 1.0 / mu) * ((1.0 + mu) ** (1.0 / mu) - 1.0)


def linear_quantize(x: Array, bits: int) -> Array:
    """Audio in [-1, 1] snapped to 2^bits equally spaced levels (the logistic mixture's grid)."""
    xp = jnp if isinstance(x, jnp.ndarray) else np
    k = 2**bits - 1
    return xp.round((xp.clip(x, -1.0, 1.0) + 1.0) * 0.5 * k) / k * 2.0 - 1.0
