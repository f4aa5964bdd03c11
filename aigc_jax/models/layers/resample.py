"""Up- and down-sampling: strided / nearest + conv (U-Net, autoencoders), pooling, and the
4x4 stride-2 (transposed) convolutions of DCGAN as XLA convolutions or patch matmuls.

XLA:CPU runs transposed and small-spatial strided convolutions through a slow generic path
(10-100x), so `impl="auto"` picks "matmul" on CPU and "lax" on GPU/TPU; both have flax's
Conv/ConvTranspose parameters and outputs (tested).
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def upsample_nearest(h: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of [B, H, W, C]."""
    return h.repeat(2, axis=1).repeat(2, axis=2)


def avg_pool2(h: jax.Array) -> jax.Array:
    """2x2 average pooling of [B, H, W, C]."""
    return nn.avg_pool(h, (2, 2), (2, 2))


class Downsample(nn.Module):
    """3x3 stride-2 'SAME' convolution keeping the width: [B, H, W, C] -> [B, H/2, W/2, C]."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Conv(x.shape[-1], (3, 3), strides=(2, 2), dtype=self.dtype, name="conv")(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 convolution: [B, H, W, C] -> [B, 2H, 2W, C]."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype, name="conv")(upsample_nearest(x))


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


def _im2col_conv(xp: jax.Array, kernel: jax.Array, out_hw: tuple[int, int],
                 stride: int) -> jax.Array:
    """Convolve padded `xp` by kernel [k, k, Cin, Cout] as one matmul over its k^2 shifted
    (strided) slices, in the kernel's (u, v, cin) order; `out_hw` is the unpadded input size."""
    k, h, w = kernel.shape[0], *out_hw
    patches = jnp.concatenate([xp[:, u:u + h:stride, v:v + w:stride]
                               for u in range(k) for v in range(k)], -1)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def conv_down2(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """4x4 stride-2 'SAME' conv: [B, H, W, Cin], kernel [4, 4, Cin, Cout] -> [B, H/2, W/2, Cout]."""
    if impl == "lax":
        return lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=_DN)
    return _im2col_conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), kernel, x.shape[1:3], 2)


def conv_same(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """k x k stride-1 'SAME' conv (odd k): [B, H, W, Cin], kernel [k, k, Cin, Cout]; "matmul"
    is im2col (k^2 shifted slices, one matmul), whose first and second derivatives are slices
    and matmuls too: the StyleGAN2 mnist32 step, with R1 and path-length double backprop,
    runs 1.7x faster on CPU than via lax (BENCHMARKS.md)."""
    k = kernel.shape[0]
    if k == 1:  # a 1x1 convolution is a matmul on every backend
        return x @ kernel[0, 0]
    if impl == "lax":
        return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)
    p = (k - 1) // 2
    return _im2col_conv(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))), kernel, x.shape[1:3], 1)


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


class _Conv4x4Stride2(nn.Module):
    """A 4x4 stride-2 convolution (`_op`: conv_down2 or conv_up2) with flax's parameters."""

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    impl: str = "auto"
    _op = staticmethod(conv_down2)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features))
        y = self._op(x, kernel, resolve_impl(self.impl))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class Down2(_Conv4x4Stride2):
    """nn.Conv(features, (4, 4), (2, 2), "SAME") with a choice of implementation."""

    _op = staticmethod(conv_down2)


class Up2(_Conv4x4Stride2):
    """nn.ConvTranspose(features, (4, 4), (2, 2), "SAME") with a choice of implementation."""

    _op = staticmethod(conv_up2)
