"""Convolutional residual and attention blocks (DDPM's U-Net, LDM's autoencoder)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers.attention import MultiHeadAttention
from aigc_jax.models.layers.core import zero_init
from aigc_jax.models.layers.norms import GroupNorm32


class ResBlock(nn.Module):
    """GN-swish-conv, (+ Dense(temb)), GN-swish-dropout-conv, with a 1x1 shortcut if widths
    differ. `temb` [B, T] is the timestep embedding (None for unconditional blocks)."""

    out_ch: int
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        h = nn.swish(GroupNorm32(self.num_groups, name="Norm_0")(x)).astype(self.dtype)
        h = nn.Conv(self.out_ch, (3, 3), dtype=self.dtype, name="conv1")(h)
        if temb is not None:
            h = h + nn.Dense(self.out_ch, dtype=self.dtype, name="temb_proj")(
                nn.swish(temb))[:, None, None, :]
        h = nn.swish(GroupNorm32(self.num_groups, name="Norm_1")(h)).astype(self.dtype)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(self.out_ch, (3, 3), dtype=self.dtype, kernel_init=zero_init(),
                    name="conv2")(h)
        if x.shape[-1] != self.out_ch:
            x = nn.Dense(self.out_ch, dtype=self.dtype, name="shortcut")(x)
        return x.astype(self.dtype) + h


class AttnBlock(nn.Module):
    """x + attention(GN(x)) over all H x W positions: single-head in DDPM and LDM's
    autoencoder; the output projection starts at zero so the block starts as the identity."""

    num_heads: int = 1
    num_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = GroupNorm32(self.num_groups, name="Norm_0")(x).astype(self.dtype)
        y, _ = MultiHeadAttention(self.num_heads, use_bias=True,
                                  kernel_init=nn.initializers.lecun_normal(),
                                  out_kernel_init=zero_init(), dtype=self.dtype,
                                  name="attn")(h.reshape(b, hgt * wid, c))
        return x.astype(self.dtype) + y.reshape(b, hgt, wid, c)
