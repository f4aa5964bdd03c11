"""Multi-head attention for every model: self or cross, causal or not, with a key/value cache.

The attention itself is `jax.nn.dot_product_attention` (its default is XLA's kernel, on GPUs
too in jax 0.10-0.12; `implementation="cudnn"` takes cuDNN's fused one), except in training
with attention-probability dropout, which the fused kernels do not have. Shapes: x [B, S, D],
context [B, S_ctx, D_ctx], heads [B, S, H, D_h].
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers.core import Dense, normal_init
from aigc_jax.models.layers.embeddings import rope

Cache = tuple[tuple[jax.Array, jax.Array], ...]  # per layer (k, v), each [B, S_max, H, D_h]


def init_kv_cache(num_layers: int, batch: int, length: int, num_heads: int, head_dim: int,
                  dtype: Any = jnp.float32) -> Cache:
    """An empty key/value cache for `num_layers` attention layers and `length` positions."""
    shape = (batch, length, num_heads, head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(num_layers))


def _attention_with_dropout(q, k, v, rate: float, causal: bool,
                            mask: jax.Array | None) -> jax.Array:
    """softmax(q k^T / sqrt(D_h)) v with dropout on the probabilities (the fused kernel has
    none); called inside a module, so its Dropout is that module's."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    keep = jnp.ones(logits.shape[-2:], bool)
    if causal:
        keep = jnp.tril(keep)
    if mask is not None:
        keep = keep & mask
    probs = jax.nn.softmax(jnp.where(keep, logits, -jnp.inf), axis=-1).astype(v.dtype)
    probs = nn.Dropout(rate)(probs, deterministic=False)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False,
                          mask: jax.Array | None = None, dropout: float = 0.0,
                          deterministic: bool = True,
                          implementation: str | None = None) -> jax.Array:
    """Attention of q [B, S, H, D_h] over k, v [B, S_k, H, D_h] -> [B, S, H, D_h]; `mask`
    (bool, broadcastable to [B, H, S, S_k]) marks the keys each query may see."""
    if dropout > 0 and not deterministic:
        return _attention_with_dropout(q, k, v, dropout, causal, mask)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation=implementation)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with fused QKV (self) or Q + fused KV (cross) projections.

    `context=None` is self-attention over x (RoPE and the key/value cache apply to it); a
    context [B, S_ctx, D_ctx] makes it cross-attention (queries from x, keys and values from
    the context: LDM's SpatialTransformer). Returns (y [B, S, D], the updated cache or None).
    """

    num_heads: int
    features: int = 0  # width of q, k, v (0: the input's)
    use_bias: bool = False
    causal: bool = False
    dropout: float = 0.0
    position: str = "none"  # none | rope (self-attention only)
    rope_base: float = 10000.0
    kernel_init: Any = normal_init()
    out_kernel_init: Any = normal_init()
    dtype: Any = jnp.float32
    implementation: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None, *,
                 positions: jax.Array | None = None, mask: jax.Array | None = None,
                 deterministic: bool = True, kv: tuple[jax.Array, jax.Array] | None = None,
                 index: jax.Array | None = None):
        b, s, d_in = x.shape
        d = self.features or d_in
        h, d_h = self.num_heads, d // self.num_heads
        dense = dict(use_bias=self.use_bias, kernel_init=self.kernel_init, dtype=self.dtype)
        if context is None:
            qkv = Dense(3 * d, name="c_attn", **dense)(x)  # [B, S, 3 D]
            q, k, v = jnp.split(qkv.reshape(b, s, 3 * h, d_h), 3, axis=2)
            if self.position == "rope":
                positions = jnp.arange(s) if positions is None else positions
                q, k = rope(q, positions, self.rope_base), rope(k, positions, self.rope_base)
        else:
            q = Dense(d, name="q", **dense)(x).reshape(b, s, h, d_h)
            kv_ctx = Dense(2 * d, name="kv", **dense)(context.astype(self.dtype))
            k, v = jnp.split(kv_ctx.reshape(b, context.shape[1], 2 * h, d_h), 2, axis=2)
        causal = self.causal
        if kv is not None:  # incremental decoding: write this chunk, attend to the filled part
            k = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, index, 0, 0))
            v = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, index, 0, 0))
            kv = (k, v)
            key_pos = jnp.arange(k.shape[1])
            mask = (key_pos[None, :] <= (index + jnp.arange(s))[:, None])[None, None]
            causal = False  # the mask above is the causal mask at these positions
        y = dot_product_attention(q, k, v, causal=causal, mask=mask, dropout=self.dropout,
                                  deterministic=deterministic, implementation=self.implementation)
        y = Dense(d_in, use_bias=self.use_bias, kernel_init=self.out_kernel_init,
                  dtype=self.dtype, name="c_proj")(y.reshape(b, s, d))
        return nn.Dropout(self.dropout)(y, deterministic=deterministic), kv
