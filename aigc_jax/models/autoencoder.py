"""The convolutional autoencoder of latent diffusion (Rombach et al., 2022; Esser et al., 2021's
VQGAN encoder/decoder) and the PatchGAN discriminator of its loss (Isola et al., 2017).

Encoder: conv_in, then per level of `ch_mult` `num_res_blocks` ResBlocks (+ attention at the
resolutions in `attn_resolutions`) and a stride-2 Downsample except after the last level, then
a mid-block (ResBlock, AttnBlock, ResBlock), GroupNorm-swish and conv_out to `2 z_channels`
(mean and log-variance, KL) or `z_channels` (VQ/FSQ). `quant_conv` (1x1) maps to `embed_dim`
latent channels, `post_quant_conv` back. The decoder mirrors it with `num_res_blocks + 1`
ResBlocks per level. The downsampling factor is f = 2^(len(ch_mult) - 1).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import AttnBlock, Down2, Downsample, GroupNorm32, ResBlock, Upsample


def downsampling_factor(ch_mult: Sequence[int]) -> int:
    """f = 2^(len(ch_mult) - 1): one stride-2 stage between consecutive levels."""
    return 2 ** (len(ch_mult) - 1)


def _level(h: jax.Array, width: int, num_blocks: int, prefix: str,
           attn_resolutions: Sequence[int], block: dict, train: bool) -> jax.Array:
    """One level: `num_blocks` ResBlocks `{prefix}_block_i`, each followed by an AttnBlock
    `{prefix}_attn_i` at the resolutions in `attn_resolutions` (called inside a compact method)."""
    for i in range(num_blocks):
        h = ResBlock(width, name=f"{prefix}_block_{i}", **block)(h, None, train)
        if h.shape[1] in attn_resolutions:
            h = AttnBlock(num_groups=block["num_groups"], dtype=block["dtype"],
                          name=f"{prefix}_attn_{i}")(h)
    return h


def _mid_block(h: jax.Array, block: dict, train: bool) -> jax.Array:
    """The mid-block of encoder and decoder: ResBlock, AttnBlock, ResBlock at h's width."""
    h = ResBlock(h.shape[-1], name="mid_block_1", **block)(h, None, train)
    h = AttnBlock(num_groups=block["num_groups"], dtype=block["dtype"], name="mid_attn_1")(h)
    return ResBlock(h.shape[-1], name="mid_block_2", **block)(h, None, train)


class Encoder(nn.Module):
    """x [B, H, W, C] in [-1, 1] -> h [B, H/f, W/f, out_channels]."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int
    attn_resolutions: Sequence[int] = ()
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        block = dict(dropout=self.dropout, num_groups=self.num_groups, dtype=self.dtype)
        h = nn.Conv(self.ch, (3, 3), dtype=self.dtype, name="conv_in")(x)
        for level, mult in enumerate(self.ch_mult):
            h = _level(h, self.ch * mult, self.num_res_blocks, f"down_{level}",
                       self.attn_resolutions, block, train)
            if level != len(self.ch_mult) - 1:
                h = Downsample(self.dtype, name=f"down_{level}_downsample")(h)
        h = _mid_block(h, block, train)
        h = nn.swish(GroupNorm32(self.num_groups, name="norm_out")(h)).astype(self.dtype)
        return nn.Conv(self.out_channels, (3, 3), dtype=self.dtype, name="conv_out")(h)


class Decoder(nn.Module):
    """z [B, h, w, z_channels] -> (x [B, f h, f w, out_channels], the input of conv_out).

    The second output is what the adaptive GAN weight needs: the gradient of a loss with
    respect to conv_out's kernel is a linear function of it (see `methods.autoencoder.losses`).
    """

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int
    attn_resolutions: Sequence[int] = ()
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        block = dict(dropout=self.dropout, num_groups=self.num_groups, dtype=self.dtype)
        h = nn.Conv(self.ch * self.ch_mult[-1], (3, 3), dtype=self.dtype, name="conv_in")(z)
        h = _mid_block(h, block, train)
        for level in reversed(range(len(self.ch_mult))):
            h = _level(h, self.ch * self.ch_mult[level], self.num_res_blocks + 1, f"up_{level}",
                       self.attn_resolutions, block, train)
            if level != 0:
                h = Upsample(self.dtype, name=f"up_{level}_upsample")(h)
        h = nn.swish(GroupNorm32(self.num_groups, name="norm_out")(h)).astype(jnp.float32)
        x = nn.Conv(self.out_channels, (3, 3), name="conv_out")(h)
        return x, h


class Autoencoder(nn.Module):
    """Encoder + 1x1 quant_conv, 1x1 post_quant_conv + Decoder (LDM's AutoencoderKL/VQModel).

    `moments=True` (the KL autoencoder) makes `encode` return [..., 2 embed_dim]: the mean and
    log-variance of the diagonal Gaussian posterior. The regulariser (sampling, quantisation)
    sits between `encode` and `decode` and is the method's business.
    """

    image_channels: int
    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 3
    embed_dim: int = 3
    moments: bool = True
    attn_resolutions: Sequence[int] = ()
    dropout: float = 0.0
    num_groups: int = 32
    dtype: Any = jnp.float32

    def setup(self):
        arch = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                    attn_resolutions=tuple(self.attn_resolutions), dropout=self.dropout,
                    num_groups=self.num_groups, dtype=self.dtype)
        k = 2 if self.moments else 1
        self.encoder = Encoder(out_channels=k * self.z_channels, **arch)
        self.quant_conv = nn.Conv(k * self.embed_dim, (1, 1), name="quant_conv")
        self.post_quant_conv = nn.Conv(self.z_channels, (1, 1), name="post_quant_conv")
        self.decoder = Decoder(out_channels=self.image_channels, **arch)

    def encode(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x [B, H, W, C] -> [B, H/f, W/f, (2 if moments else 1) * embed_dim], float32."""
        return self.quant_conv(self.encoder(x, train).astype(jnp.float32))

    def decode(self, z: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """z [B, h, w, embed_dim] -> (x [B, f h, f w, C], conv_out's input)."""
        return self.decoder(self.post_quant_conv(z), train)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Used only to initialise every parameter: decode(encode(x)) without a regulariser."""
        z = self.encode(x, train)
        return self.decode(z[..., :self.embed_dim], train)[0]


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al., 2017; LDM's NLayerDiscriminator): x [B, H, W, C] -> logits
    [B, H', W'], one per overlapping patch. 4x4 convolutions, LeakyReLU(0.2); the first
    `n_layers` halve the resolution. GroupNorm where LDM has BatchNorm (no running averages
    to carry, and per-example outputs)."""

    ndf: int = 64
    n_layers: int = 3
    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.leaky_relu(Down2(self.ndf, name="conv_0")(x), 0.2)
        for n in range(1, self.n_layers):
            h = Down2(self.ndf * min(2**n, 8), use_bias=False, name=f"conv_{n}")(h)
            h = nn.leaky_relu(GroupNorm32(self.num_groups, name=f"norm_{n}")(h), 0.2)
        h = nn.Conv(self.ndf * min(2**self.n_layers, 8), (4, 4), use_bias=False,
                    name=f"conv_{self.n_layers}")(h)
        h = nn.leaky_relu(GroupNorm32(self.num_groups, name=f"norm_{self.n_layers}")(h), 0.2)
        return nn.Conv(1, (4, 4), name="conv_out")(h)[..., 0]
