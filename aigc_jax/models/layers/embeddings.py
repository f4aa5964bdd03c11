"""Position and timestep embeddings: DDPM's sinusoidal timestep embedding, a 2D sin-cos
position embedding for image tokens, and RoPE."""

import math

import jax
import jax.numpy as jnp


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of (integer or real) timesteps t [B] -> [B, dim], as in DDPM."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def sincos_2d(height: int, width: int, dim: int) -> jax.Array:
    """Fixed 2D sin-cos position embedding [height * width, dim] of a row-major grid: the first
    half of the channels embeds the row, the second the column (as MAE / ViT-sincos do)."""
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    half = dim // 2
    return jnp.concatenate([timestep_embedding(rows.reshape(-1), half, 100.0),
                            timestep_embedding(cols.reshape(-1), dim - half, 100.0)], axis=-1)


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding (Su et al., 2021) of x [B, S, H, D_h] at positions [S]
    (rotate-half layout)."""
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [D_h / 2]
    angles = positions.astype(jnp.float32)[:, None] * freqs  # [S, D_h / 2]
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)
