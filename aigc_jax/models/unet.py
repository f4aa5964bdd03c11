"""The DDPM U-Net (Ho, Jain & Abbeel, 2020), with an optional class embedding for guidance and,
for text conditioning, LDM's spatial transformers (Rombach et al., 2022).

Wide-ResNet blocks with GroupNorm + swish and a projected time embedding, self-attention at
chosen resolutions, strided-conv downsampling and nearest + conv upsampling. With
`context_dim` > 0 the attention blocks (at `attn_resolutions` and in the middle) are
SpatialTransformers instead: self-attention, cross-attention over a context [B, T,
context_dim] (a text encoder's per-token states) and a feed-forward, as LDM's UNetModel with
`use_spatial_transformer`. The paper's
CIFAR-10 model (ch=128, ch_mult=(1, 2, 2, 2), 2 blocks, attention at 16x16) has 35.7M params.
Parameters are float32; `dtype` sets the compute precision (bfloat16 for speed).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax.models.layers import (
    AttnBlock,
    Downsample,
    GroupNorm32,
    ResBlock,
    SpatialTransformer,
    Upsample,
    resolve_dtype,
    timestep_embedding,
    zero_init,
)


class UNet(nn.Module):
    """x_t [B, H, W, C], t [B] (, labels [B], context [B, T, D], context_mask [B, T]) ->
    [B, H, W, out_ch] (eps, x0 or v, + variance).

    `num_classes` > 0 adds a class embedding with one extra row, index `num_classes`, for the
    null label that classifier-free guidance trains with label dropout. `context_dim` > 0 makes
    the attention blocks SpatialTransformers of `transformer_depth` blocks with
    `transformer_heads` heads, which read `context` (required then) where `context_mask` is True.
    """

    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    out_ch: int = 3
    num_classes: int = 0
    num_groups: int = 32
    context_dim: int = 0
    transformer_depth: int = 1
    transformer_heads: int = 4
    transformer_position: str = "none"  # none | sincos (SpatialTransformer)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None,
                 train: bool = False, context: jax.Array | None = None,
                 context_mask: jax.Array | None = None) -> jax.Array:
        temb_ch = 4 * self.ch
        temb = timestep_embedding(t, self.ch)
        temb = nn.Dense(temb_ch, dtype=self.dtype, name="temb_dense0")(temb)
        temb = nn.Dense(temb_ch, dtype=self.dtype, name="temb_dense1")(nn.swish(temb))
        if self.num_classes:
            assert labels is not None, "a class-conditional UNet needs labels"
            temb = temb + nn.Embed(self.num_classes + 1, temb_ch, dtype=self.dtype,
                                   name="class_emb")(labels)
        block = dict(dropout=self.dropout, num_groups=self.num_groups, dtype=self.dtype)
        if self.context_dim:
            assert context is not None and context.shape[-1] == self.context_dim, \
                "a UNet with context_dim needs a context [B, T, context_dim]"

        def attend(h: jax.Array) -> jax.Array:
            if not self.context_dim:
                return AttnBlock(num_groups=self.num_groups, dtype=self.dtype)(h)
            return SpatialTransformer(self.transformer_heads, self.transformer_depth,
                                      self.num_groups, self.dtype,
                                      self.transformer_position)(h, context, context_mask)

        h = nn.Conv(self.ch, (3, 3), dtype=self.dtype, name="conv_in")(x.astype(self.dtype))
        hs = [h]
        for level, mult in enumerate(self.ch_mult):  # down: [B, H / 2^level, W / 2^level, C]
            for _ in range(self.num_res_blocks):
                h = ResBlock(self.ch * mult, **block)(h, temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attend(h)
                hs.append(h)
            if level != len(self.ch_mult) - 1:
                h = Downsample(self.dtype)(h)
                hs.append(h)
        h = ResBlock(h.shape[-1], **block)(h, temb, train)
        h = attend(h)
        h = ResBlock(h.shape[-1], **block)(h, temb, train)
        for level, mult in reversed(list(enumerate(self.ch_mult))):  # up, with skip concats
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop()], axis=-1)
                h = ResBlock(self.ch * mult, **block)(h, temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attend(h)
            if level != 0:
                h = Upsample(self.dtype)(h)
        assert not hs
        h = nn.swish(GroupNorm32(self.num_groups)(h)).astype(self.dtype)
        out = nn.Conv(self.out_ch, (3, 3), dtype=self.dtype, kernel_init=zero_init(),
                      name="conv_out")(h)
        return out.astype(jnp.float32)


def create_unet(cfg: ml_collections.ConfigDict, out_ch: int, context_dim: int = 0) -> UNet:
    """The UNet described by `config.model` with `out_ch` output channels (and cross-attention
    over a `context_dim`-wide context when it is > 0)."""
    return UNet(ch=int(cfg.ch), ch_mult=tuple(cfg.ch_mult), num_res_blocks=int(cfg.num_res_blocks),
                attn_resolutions=tuple(cfg.attn_resolutions), dropout=float(cfg.dropout),
                out_ch=out_ch, num_classes=int(cfg.num_classes),
                num_groups=int(cfg.num_groups), context_dim=context_dim,
                transformer_depth=int(cfg.get("transformer_depth", 1)),
                transformer_heads=int(cfg.get("transformer_heads", 4)),
                transformer_position=str(cfg.get("transformer_position", "none")),
                dtype=resolve_dtype(cfg.dtype))

