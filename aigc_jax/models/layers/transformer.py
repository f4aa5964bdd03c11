"""LDM's SpatialTransformer: self-attention, cross-attention over a context, feed-forward.

Rombach et al. (2022), `ldm/modules/attention.py`: GroupNorm, a 1x1 projection in, `depth`
pre-LayerNorm blocks (self-attention over the H x W positions, cross-attention from them to
the context tokens, a GEGLU feed-forward), a zero-initialised projection out and the
residual, so a new block starts as the identity. `position="sincos"` adds a fixed 2D sin-cos
embedding to the H x W tokens after the projection in (LDM has none: its attention is blind
to where a token is, so "top left" can reach the image only through the convolutions' border
effects). Shapes: x [B, H, W, C], context [B, T, D_ctx],
context_mask bool [B, T] (True: a token the positions may attend to, e.g. not padding).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers.attention import MultiHeadAttention
from aigc_jax.models.layers.core import Dense, gelu, zero_init
from aigc_jax.models.layers.embeddings import sincos_2d
from aigc_jax.models.layers.norms import GroupNorm32


class GEGLU(nn.Module):
    """Dense to 2 x `mult` D, a * gelu(b), Dense back to D (Shazeer, 2020; LDM's FeedForward)."""

    mult: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        a, b = jnp.split(Dense(2 * self.mult * d, dtype=self.dtype, name="proj")(x), 2, -1)
        return Dense(d, dtype=self.dtype, name="out")(a * gelu(b))


class TransformerBlock(nn.Module):
    """x [B, S, D] -> x + self-attn, + cross-attn over context [B, T, D_ctx], + GEGLU, each
    after its LayerNorm (LDM's BasicTransformerBlock)."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array,
                 context_mask: jax.Array | None = None) -> jax.Array:
        attn = dict(num_heads=self.num_heads, kernel_init=nn.initializers.lecun_normal(),
                    out_kernel_init=nn.initializers.lecun_normal(), dtype=self.dtype)
        h = nn.LayerNorm(dtype=self.dtype, name="norm1")(x)
        x = x + MultiHeadAttention(name="attn1", **attn)(h)[0]
        h = nn.LayerNorm(dtype=self.dtype, name="norm2")(x)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # [B, 1, 1, T]
        x = x + MultiHeadAttention(name="attn2", **attn)(h, context, mask=mask)[0]
        h = nn.LayerNorm(dtype=self.dtype, name="norm3")(x)
        return x + GEGLU(dtype=self.dtype, name="ff")(h)


class SpatialTransformer(nn.Module):
    """x [B, H, W, C] + proj_out(blocks(proj_in(GN(x)), context)): `depth` TransformerBlocks
    over the H x W positions with `num_heads` heads (`position`: "none" or "sincos")."""

    num_heads: int = 4
    depth: int = 1
    num_groups: int = 32
    dtype: Any = jnp.float32
    position: str = "none"

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array,
                 context_mask: jax.Array | None = None) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = GroupNorm32(self.num_groups, name="norm")(x).astype(self.dtype)
        h = Dense(c, dtype=self.dtype, name="proj_in")(h.reshape(b, hgt * wid, c))
        if self.position == "sincos":
            h = h + sincos_2d(hgt, wid, c).astype(self.dtype)[None]
        for i in range(self.depth):
            h = TransformerBlock(self.num_heads, self.dtype, name=f"block_{i}")(
                h, context.astype(self.dtype), context_mask)
        h = Dense(c, dtype=self.dtype, kernel_init=zero_init(), name="proj_out")(h)
        return x.astype(self.dtype) + h.reshape(b, hgt, wid, c)
