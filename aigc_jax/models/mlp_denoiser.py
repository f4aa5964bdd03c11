"""A residual-MLP denoiser for vector data: diffusion over an autoencoder's vector latents.

x_t [B, 1, 1, D] (vectors laid out as 1x1 images, so the diffusion code is shape-agnostic),
t [B] (, labels [B]) -> [B, 1, 1, out_dim]. Blocks are pre-LayerNorm, swish, Dense, with the
timestep embedding added inside every block and the last layer of each branch zero-initialised
(the same residual-network recipe as the U-Net's blocks, for vectors).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax.models.layers import resolve_dtype, timestep_embedding, zero_init


class MLPBlock(nn.Module):
    """h + Dense(swish(Dense(swish(LN(h))) + Dense(temb))), zero-initialised output."""

    width: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        y = nn.Dense(self.width, dtype=self.dtype)(nn.swish(nn.LayerNorm()(h)))
        y = y + nn.Dense(self.width, dtype=self.dtype, name="temb_proj")(nn.swish(temb))
        y = nn.Dropout(self.dropout, deterministic=not train)(nn.swish(y))
        return h + nn.Dense(self.width, dtype=self.dtype, kernel_init=zero_init())(y)


class MLPDenoiser(nn.Module):
    """Residual MLP with a sinusoidal timestep embedding and an optional class embedding
    (one extra "null" row for classifier-free guidance, as in the UNet)."""

    width: int = 256
    num_blocks: int = 3
    out_dim: int = 8
    num_classes: int = 0
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        temb = timestep_embedding(t, self.width)
        temb = nn.Dense(self.width, name="temb_dense")(temb)
        if self.num_classes:
            temb = temb + nn.Embed(self.num_classes + 1, self.width, name="class_emb")(labels)
        h = nn.Dense(self.width, dtype=self.dtype, name="proj_in")(x.reshape(x.shape[0], -1))
        for _ in range(self.num_blocks):
            h = MLPBlock(self.width, self.dropout, self.dtype)(h, temb, train)
        out = nn.Dense(self.out_dim, kernel_init=zero_init(), name="proj_out")(
            nn.swish(nn.LayerNorm()(h)))
        return out.astype(jnp.float32).reshape(*x.shape[:-1], self.out_dim)


def create_mlp_denoiser(cfg: ml_collections.ConfigDict, out_dim: int) -> MLPDenoiser:
    """The denoiser described by `config.model` (arch "mlp") with `out_dim` outputs."""
    return MLPDenoiser(width=int(cfg.mlp_width), num_blocks=int(cfg.mlp_blocks),
                       out_dim=out_dim, num_classes=int(cfg.num_classes),
                       dropout=float(cfg.dropout), dtype=resolve_dtype(cfg.dtype))
