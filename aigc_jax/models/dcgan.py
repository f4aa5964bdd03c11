"""DCGAN generator and discriminator (Radford, Metz & Chintala, 2016), sized for 8x8 to 64x64.

G: z -> dense "project and reshape" to s0 x s0 -> 4x4 stride-2 transposed convolutions with
BatchNorm and ReLU, doubling the side each time -> tanh. D mirrors it with 4x4 stride-2
convolutions and LeakyReLU(0.2): BatchNorm on every layer but the first (the paper), or
spectral normalisation on every layer (Miyato et al., 2018) when `spectral_norm` is set.
s0 is the side left after halving while it stays even and above `min_side` (4 in the paper):
8 -> 4, 28 -> 7, 32/64 -> 4; min_side=2 gives the 8x8 digits a second stage (8 -> 4 -> 2).

The 4x4 stride-2 layers are `layers.Down2`/`layers.Up2` (XLA convolutions, or patch matmuls on
CPU where XLA's generic path is 10-100x slower; `conv_impl`).

Class-conditional (`num_classes` > 0): G concatenates a learned label embedding to z; D adds
the projection term <embed(y), phi(x)> to its logit (Miyato & Koyama, 2018).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import CONV_IMPLS, Down2, Up2, batch_norm, maybe_sn

# DCGAN initialisation: weights from N(0, 0.02), BatchNorm scales from N(1, 0.02).
dcgan_init = nn.initializers.normal(0.02)


def num_upsamplings(side: int, min_side: int = 4) -> tuple[int, int]:
    """(number of stride-2 stages, starting side s0) for an image of side `side`."""
    n = 0
    while side % 2 == 0 and side > min_side:
        side //= 2
        n += 1
    return n, side


__all__ = ["CONV_IMPLS", "DCGANDiscriminator", "DCGANGenerator", "num_upsamplings"]


class DCGANGenerator(nn.Module):
    """z [B, Z] (+ labels [B]) -> images [B, H, W, C] in [-1, 1]."""

    image_shape: Sequence[int]
    base_channels: int = 64  # ngf: channels of the last hidden layer
    num_classes: int = 0
    embed_dim: int = 50
    min_side: int = 4
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None,
                 train: bool = True) -> jax.Array:
        side, _, channels = self.image_shape
        n, s0 = num_upsamplings(side, self.min_side)
        if n < 1:
            raise ValueError(f"image side {side} needs at least one stride-2 stage")
        if self.num_classes:
            z = jnp.concatenate([z, nn.Embed(self.num_classes, self.embed_dim,
                                             embedding_init=dcgan_init)(labels)], -1)
        width = self.base_channels * 2 ** (n - 1)
        h = nn.Dense(s0 * s0 * width, use_bias=False, kernel_init=dcgan_init)(z)
        h = h.reshape(z.shape[0], s0, s0, width)  # [B, s0, s0, ngf * 2^(n-1)]
        h = nn.relu(batch_norm(train)(h))
        for _ in range(n - 1):
            width //= 2
            h = Up2(width, False, dcgan_init, self.conv_impl)(h)
            h = nn.relu(batch_norm(train)(h))
        h = Up2(channels, True, dcgan_init, self.conv_impl)(h)
        return jnp.tanh(h)  # [B, H, W, C]


class DCGANDiscriminator(nn.Module):
    """images [B, H, W, C] in [-1, 1] (+ labels [B]) -> logits [B]."""

    base_channels: int = 64  # ndf: channels of the first layer
    num_classes: int = 0
    spectral_norm: bool = False
    batch_norm: bool = True
    min_side: int = 4
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = True,
                 update_stats: bool = True) -> jax.Array:
        n, _ = num_upsamplings(x.shape[1], self.min_side)
        h = x
        for i in range(n):
            conv = Down2(self.base_channels * 2**i,
                         self.spectral_norm or not self.batch_norm or i == 0, dcgan_init,
                         self.conv_impl)
            h = maybe_sn(conv, self.spectral_norm, update_stats, h)
            if self.batch_norm and i > 0:
                h = batch_norm(train)(h)
            h = nn.leaky_relu(h, 0.2)
        phi = h.reshape(h.shape[0], -1)  # [B, s0 * s0 * ndf * 2^(n-1)]
        logits = maybe_sn(nn.Dense(1, kernel_init=dcgan_init), self.spectral_norm,
                          update_stats, phi)[:, 0]
        if self.num_classes:
            embed = nn.Embed(self.num_classes, phi.shape[-1], embedding_init=dcgan_init)
            logits += jnp.sum(maybe_sn(embed, self.spectral_norm, update_stats, labels) * phi,
                              -1)
        return logits
