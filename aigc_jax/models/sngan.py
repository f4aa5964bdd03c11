"""The ResNet SNGAN pair for 32x32 images (Miyato et al., 2018, CIFAR-10 ResNet, Table 4).

G: z [B, 128] -> dense 4x4x256 -> 3 up-ResBlocks (256 ch) -> BN, ReLU, 3x3 conv, tanh.
D: optimized down-ResBlock, down-ResBlock, 2 ResBlocks (128 ch) -> ReLU, global sum pooling,
dense, all spectrally normalised. Class-conditional: conditional BatchNorm in G (class-dependent
gain and bias) and the projection discriminator in D (Miyato & Koyama, 2018).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import avg_pool2, maybe_sn, upsample_nearest

xavier = nn.initializers.xavier_uniform()


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose gain and bias are per-class embeddings (plain BN when num_classes=0)."""

    num_classes: int = 0

    @nn.compact
    def __call__(self, h: jax.Array, labels: jax.Array | None, train: bool) -> jax.Array:
        if not self.num_classes:
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         use_scale=False, use_bias=False)(h)
        c = h.shape[-1]
        gamma = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.ones)(labels)
        beta = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.zeros)(labels)
        return h * gamma[:, None, None] + beta[:, None, None]


class GenBlock(nn.Module):
    """BN-ReLU-up-conv3x3-BN-ReLU-conv3x3, plus the shortcut up-conv1x1."""

    channels: int
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None, train: bool) -> jax.Array:
        h = nn.relu(ConditionalBatchNorm(self.num_classes)(x, labels, train))
        h = nn.Conv(self.channels, (3, 3), kernel_init=xavier)(upsample_nearest(h))
        h = nn.relu(ConditionalBatchNorm(self.num_classes)(h, labels, train))
        h = nn.Conv(self.channels, (3, 3), kernel_init=xavier)(h)
        return h + nn.Conv(self.channels, (1, 1), kernel_init=xavier)(upsample_nearest(x))


class SNGANGenerator(nn.Module):
    """z [B, Z] (+ labels [B]) -> images [B, 32, 32, C] in [-1, 1]."""

    image_shape: Sequence[int]
    channels: int = 256
    num_blocks: int = 3
    num_classes: int = 0

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None,
                 train: bool = True) -> jax.Array:
        side, _, out_channels = self.image_shape
        s0 = side // 2**self.num_blocks
        h = nn.Dense(s0 * s0 * self.channels, kernel_init=xavier)(z)
        h = h.reshape(z.shape[0], s0, s0, self.channels)  # [B, 4, 4, 256]
        for _ in range(self.num_blocks):
            h = GenBlock(self.channels, self.num_classes)(h, labels, train)
        h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h))
        return jnp.tanh(nn.Conv(out_channels, (3, 3), kernel_init=xavier)(h))  # [B, 32, 32, C]


class DiscBlock(nn.Module):
    """(ReLU)-conv3x3-ReLU-conv3x3-(pool) + shortcut conv1x1-(pool); `first`: optimized block."""

    channels: int
    downsample: bool = True
    first: bool = False
    update_stats: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        def conv(h, k):
            return maybe_sn(nn.Conv(self.channels, (k, k), kernel_init=xavier), True,
                            self.update_stats, h)

        h = x if self.first else nn.relu(x)
        h = conv(nn.relu(conv(h, 3)), 3)
        if self.downsample:
            h = avg_pool2(h)
        if self.first:
            shortcut = conv(avg_pool2(x), 1)
        elif self.downsample or x.shape[-1] != self.channels:
            shortcut = conv(x, 1)
            shortcut = avg_pool2(shortcut) if self.downsample else shortcut
        else:
            shortcut = x
        return h + shortcut


class SNGANDiscriminator(nn.Module):
    """images [B, 32, 32, C] (+ labels [B]) -> logits [B]; spectral norm on every layer."""

    channels: int = 128
    num_classes: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, train: bool = True,
                 update_stats: bool = True) -> jax.Array:
        del train  # no BatchNorm in D
        h = DiscBlock(self.channels, True, True, update_stats)(x)  # [B, 16, 16, 128]
        h = DiscBlock(self.channels, True, False, update_stats)(h)  # [B, 8, 8, 128]
        h = DiscBlock(self.channels, False, False, update_stats)(h)
        h = DiscBlock(self.channels, False, False, update_stats)(h)
        phi = nn.relu(h).sum(axis=(1, 2))  # global sum pooling, [B, 128]
        logits = maybe_sn(nn.Dense(1, kernel_init=xavier), True, update_stats, phi)[:, 0]
        if self.num_classes:
            embed = nn.Embed(self.num_classes, self.channels, embedding_init=xavier)
            logits += jnp.sum(maybe_sn(embed, True, update_stats, labels) * phi, -1)
        return logits
