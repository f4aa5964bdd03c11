"""DCGAN generator and discriminator (Radford, Metz & Chintala, 2016), sized for 8x8 to 64x64.

G: z -> dense "project and reshape" to s0 x s0 -> 4x4 stride-2 transposed convolutions with
BatchNorm and ReLU, doubling the side each time -> tanh. D mirrors it with 4x4 stride-2
convolutions and LeakyReLU(0.2): BatchNorm on every layer but the first (the paper), or
spectral normalisation on every layer (Miyato et al., 2018) when `spectral_norm` is set.
s0 is the side left after halving while it stays even and above `min_side` (4 in the paper):
8 -> 4, 28 -> 7, 32/64 -> 4; min_side=2 gives the 8x8 digits a second stage (8 -> 4 -> 2).

The 4x4 stride-2 layers are `Down2`/`Up2`: flax's Conv/ConvTranspose parameters and outputs,
computed either by XLA's convolutions ("lax") or as patch matmuls ("matmul"). XLA:CPU runs
transposed and small-spatial strided convolutions through a slow generic path (10-100x), so
`conv_impl="auto"` picks "matmul" on CPU and "lax" on GPU/TPU.

Class-conditional (`num_classes` > 0): G concatenates a learned label embedding to z; D adds
the projection term <embed(y), phi(x)> to its logit (Miyato & Koyama, 2018).
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# DCGAN initialisation: weights from N(0, 0.02), BatchNorm scales from N(1, 0.02).
dcgan_init = nn.initializers.normal(0.02)


def bn_scale_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """BatchNorm gamma ~ N(1, 0.02) as in the DCGAN reference code."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def num_upsamplings(side: int, min_side: int = 4) -> tuple[int, int]:
    """(number of stride-2 stages, starting side s0) for an image of side `side`."""
    n = 0
    while side % 2 == 0 and side > min_side:
        side //= 2
        n += 1
    return n, side


CONV_IMPLS = ("auto", "lax", "matmul")
_DN = ("NHWC", "HWIO", "NHWC")
# Transposed 4x4 stride-2 'SAME' convolution, one output phase per axis:
#   y[2j] = K[0] x[j-1] + K[2] x[j],   y[2j+1] = K[1] x[j] + K[3] x[j+1]
# as ((row offset into x padded by 1, kernel tap), ...) for phases 0 and 1.
_UP_TAPS = {0: ((0, 0), (1, 2)), 1: ((1, 1), (2, 3))}


def resolve_impl(impl: str) -> str:
    """"auto" -> "matmul" on CPU, "lax" elsewhere."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl={impl!r} is unknown; expected one of {CONV_IMPLS}")
    if impl == "auto":
        return "matmul" if jax.default_backend() == "cpu" else "lax"
    return impl


def conv_down2(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """4x4 stride-2 'SAME' conv: [B, H, W, Cin], kernel [4, 4, Cin, Cout] -> [B, H/2, W/2, Cout]."""
    if impl == "lax":
        return lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
    _, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = jnp.concatenate([xp[:, u:u + h:2, v:v + w:2] for u in range(4) for v in range(4)],
                              -1)  # [B, H/2, W/2, 16 Cin]
    return patches @ kernel.reshape(16 * c, -1)


def conv_up2(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """Transposed 4x4 stride-2 'SAME' conv (flax's ConvTranspose): -> [B, 2H, 2W, Cout]."""
    if impl == "lax":
        return lax.conv_transpose(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
    b, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = []
    for a in (0, 1):
        cols = []
        for c in (0, 1):
            taps = [(u, tu, v, tv) for u, tu in _UP_TAPS[a] for v, tv in _UP_TAPS[c]]
            patches = jnp.concatenate([xp[:, u:u + h, v:v + w] for u, _, v, _ in taps], -1)
            weights = jnp.concatenate([kernel[tu, tv] for _, tu, _, tv in taps], 0)
            cols.append(patches @ weights)  # [B, H, W, Cout], output pixels (2j + a, 2k + c)
        rows.append(jnp.stack(cols, 3))  # [B, H, W, 2, Cout]
    return jnp.stack(rows, 2).reshape(b, 2 * h, 2 * w, -1)  # [B, H, 2, W, 2, Cout] -> image


class Down2(nn.Module):
    """nn.Conv(features, (4, 4), (2, 2), "SAME") with a choice of implementation."""

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
        y = conv_down2(x, kernel, resolve_impl(self.impl))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class Up2(nn.Module):
    """nn.ConvTranspose(features, (4, 4), (2, 2), "SAME") with a choice of implementation."""

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
        y = conv_up2(x, kernel, resolve_impl(self.impl))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=bn_scale_init, name=name)


def maybe_sn(layer: nn.Module, spectral_norm: bool, update_stats: bool, *args):
    """Apply `layer` to `args`, through flax's nn.SpectralNorm when `spectral_norm` is set."""
    if spectral_norm:
        return nn.SpectralNorm(layer)(*args, update_stats=update_stats)
    return layer(*args)


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
