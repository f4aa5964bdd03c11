"""StyleGAN2 generator and residual discriminator (Karras et al., 2020, "Analyzing and Improving
the Image Quality of StyleGAN"), config E/F: modulated convolutions with weight demodulation,
noise inputs, a skip (toRGB) generator, a residual discriminator with minibatch stddev.

Every layer uses the equalised learning rate of Karras et al. (2018): parameters are drawn from
N(0, 1 / lr_mul) and scaled at run time by `lr_mul / sqrt(fan_in)` (`equalized_scale`), so Adam
sees the same dynamic range in every layer; the mapping network has lr_mul = 0.01.

Resampling differs from the paper's [1, 3, 3, 1] FIR upfirdn: G upsamples bilinearly (the
separable [1, 3, 3, 1] / 4 filter away from the border) before its 3x3 convolution, D averages
2x2 blocks after it. Everything else follows the official code (stylegan2-ada-pytorch).
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import avg_pool2
from aigc_jax.models.layers.resample import conv_same, resolve_impl

SQRT2 = math.sqrt(2.0)


def equalized_scale(fan_in: int, lr_mul: float = 1.0) -> float:
    """The run-time weight multiplier of an equalised-lr layer: lr_mul / sqrt(fan_in)."""
    return lr_mul / math.sqrt(fan_in)


def lrelu(x: jax.Array) -> jax.Array:
    """LeakyReLU(0.2) times sqrt(2), the gain that keeps unit variance."""
    return nn.leaky_relu(x, 0.2) * SQRT2


def pixel_norm(z: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Normalise each latent to unit second moment: z / sqrt(mean(z^2))."""
    return z * jax.lax.rsqrt(jnp.mean(z**2, axis=-1, keepdims=True) + eps)


def upsample_bilinear(x: jax.Array) -> jax.Array:
    """2x bilinear upsampling of [B, H, W, C]."""
    b, h, w, c = x.shape
    return jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution `res`: min(channel_base // res, channel_max) (the ADA code)."""
    return max(min(channel_base // res, channel_max), 1)


def num_ws(resolution: int) -> int:
    """How many style vectors the synthesis network takes: 2 log2(R) - 2 (8 at 32x32)."""
    return 2 * int(math.log2(resolution)) - 2


def modulated_kernel(weight: jax.Array, styles: jax.Array, demodulate: bool = True,
                     eps: float = 1e-8) -> jax.Array:
    """Per-sample kernels w'_ijk = s_i w_ijk, divided by ||w'_.jk|| if `demodulate` (Eq. 1, 3):
    weight [k, k, I, O], styles [B, I] -> [B, k, k, I, O]."""
    w = weight[None] * styles[:, None, None, :, None]
    if demodulate:
        w = w * jax.lax.rsqrt(jnp.sum(w**2, axis=(1, 2, 3), keepdims=True) + eps)
    return w


def minibatch_stddev(x: jax.Array, group_size: int = 4, num_features: int = 1) -> jax.Array:
    """Append the mean stddev over groups of `group_size` samples as `num_features` channels:
    [N, H, W, C] -> [N, H, W, C + F]. Sample n belongs to group n % (N / G), as in the ADA code;
    G is the largest divisor of N up to `group_size` (training batches are multiples of it)."""
    n, h, w, c = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    f = num_features
    y = x.reshape(g, n // g, h, w, f, c // f)  # [G, M, H, W, F, c]
    y = y - y.mean(axis=0)
    y = jnp.sqrt(jnp.mean(y**2, axis=0) + 1e-8)  # [M, H, W, F, c]
    y = y.mean(axis=(1, 2, 4))  # [M, F]
    y = jnp.tile(y, (g, 1))[:, None, None, :]  # [N, 1, 1, F]
    return jnp.concatenate([x, jnp.broadcast_to(y, (n, h, w, f))], axis=-1)


class EqualDense(nn.Module):
    """Dense layer with equalised lr: y = x (W lr_mul / sqrt(fan_in)) + b lr_mul."""

    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(1.0 / self.lr_mul),
                            (fan_in, self.features))
        bias = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))
        y = x @ (kernel * equalized_scale(fan_in, self.lr_mul)) + bias * self.lr_mul
        return lrelu(y) if self.activation else y


class EqualConv(nn.Module):
    """Conv with equalised lr (k x k, 'SAME'), optional lrelu and 2x2 average downsampling."""

    features: int
    kernel_size: int = 3
    use_bias: bool = True
    activation: bool = True
    down: bool = False
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
        y = conv_same(x, kernel * equalized_scale(k * k * cin), resolve_impl(self.conv_impl))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        if self.activation:
            y = lrelu(y)
        return avg_pool2(y) if self.down else y


class ModulatedConv(nn.Module):
    """Modulated (and demodulated) k x k convolution of [B, H, W, I] by w [B, w_dim].

    Computed as scale-convolve-scale (x s, conv with the shared kernel, times the demodulation
    coefficients), which equals convolving each sample with `modulated_kernel` (tested)."""

    features: int
    kernel_size: int = 3
    demodulate: bool = True
    up: bool = False
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        styles = EqualDense(cin, bias_init=1.0, name="affine")(w)  # [B, I]
        kernel = self.param("kernel", nn.initializers.normal(1.0), (k, k, cin, self.features))
        weight = kernel * equalized_scale(k * k * cin)
        if self.up:
            x = upsample_bilinear(x)
        y = conv_same(x * styles[:, None, None, :], weight, resolve_impl(self.conv_impl))
        if self.demodulate:
            d = jax.lax.rsqrt(jnp.einsum("hwio,bi->bo", weight**2, styles**2) + 1e-8)
            y = y * d[:, None, None, :]
        return y


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + per-pixel noise times a learned strength (init 0) + bias, lrelu;
    `use_noise=False` drops the noise input and its strength (the official code's use_noise)."""

    features: int
    up: bool = False
    conv_impl: str = "auto"
    use_noise: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array, noise_key: jax.Array | None) -> jax.Array:
        y = ModulatedConv(self.features, 3, up=self.up, conv_impl=self.conv_impl, name="conv")(
            x, w)
        if self.use_noise:
            strength = self.param("noise_strength", nn.initializers.zeros, ())
        if self.use_noise and noise_key is not None:
            y = y + strength * jax.random.normal(noise_key, (*y.shape[:3], 1))
        return lrelu(y + self.param("bias", nn.initializers.zeros, (self.features,)))


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation, plus bias (no activation)."""

    channels: int

    @nn.compact
    def __call__(self, x: jax.Array, w: jax.Array) -> jax.Array:
        y = ModulatedConv(self.channels, 1, demodulate=False, name="conv")(x, w)
        return y + self.param("bias", nn.initializers.zeros, (self.channels,))


class MappingNetwork(nn.Module):
    """z [B, Z] -> pixel norm -> `num_layers` EqualDense(lr_mul) + lrelu -> w [B, w_dim]."""

    w_dim: int
    num_layers: int = 8
    lr_mul: float = 0.01

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = pixel_norm(z)
        for i in range(self.num_layers):
            x = EqualDense(self.w_dim, self.lr_mul, activation=True, name=f"fc{i}")(x)
        return x


class SynthesisNetwork(nn.Module):
    """ws [B, num_ws, w_dim] -> image [B, R, R, C]: a learned 4x4 constant, two modulated convs
    per resolution (the first upsampling), toRGB at each resolution summed into an upsampled
    RGB skip path. Layer i reads ws[:, i]; toRGB at res r shares the next conv's w."""

    resolution: int
    channels: int = 3
    channel_base: int = 16384
    channel_max: int = 512
    conv_impl: str = "auto"
    use_noise: bool = True

    @nn.compact
    def __call__(self, ws: jax.Array, noise_key: jax.Array | None = None) -> jax.Array:
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        keys = iter(range(num_ws(self.resolution)))

        def noise(i):
            return None if noise_key is None else jax.random.fold_in(noise_key, i)

        layer = functools.partial(SynthesisLayer, conv_impl=self.conv_impl,
                                  use_noise=self.use_noise)
        const = self.param("const", nn.initializers.normal(1.0), (4, 4, ch(4)))
        x = jnp.broadcast_to(const, (ws.shape[0], *const.shape))
        i = next(keys)
        x = layer(ch(4), name="b4_conv1")(x, ws[:, i], noise(i))
        img = ToRGB(self.channels, name="b4_torgb")(x, ws[:, i + 1])
        res = 8
        while res <= self.resolution:
            i = next(keys)
            x = layer(ch(res), up=True, name=f"b{res}_conv0")(x, ws[:, i], noise(i))
            i = next(keys)
            x = layer(ch(res), name=f"b{res}_conv1")(x, ws[:, i], noise(i))
            img = upsample_bilinear(img) + ToRGB(self.channels, name=f"b{res}_torgb")(
                x, ws[:, i + 1])
            res *= 2
        return img


class StyleGAN2Generator(nn.Module):
    """G = synthesis(mapping(z)); `map` and `synthesize` are the two halves (method=...)."""

    resolution: int
    channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01
    channel_base: int = 16384
    channel_max: int = 512
    conv_impl: str = "auto"  # 3x3 convs: auto (matmul on CPU) | lax | matmul
    use_noise: bool = True  # per-pixel noise inputs

    def setup(self):
        self.mapping = MappingNetwork(self.w_dim, self.mapping_layers, self.mapping_lr_mul)
        self.synthesis = SynthesisNetwork(self.resolution, self.channels, self.channel_base,
                                          self.channel_max, self.conv_impl, self.use_noise)

    def map(self, z: jax.Array) -> jax.Array:
        """z [B, Z] -> w [B, w_dim]."""
        return self.mapping(z)

    def synthesize(self, ws: jax.Array, noise_key: jax.Array | None = None) -> jax.Array:
        """ws [B, num_ws, w_dim] -> images [B, R, R, C] (no noise if `noise_key` is None)."""
        return self.synthesis(ws, noise_key)

    def __call__(self, z: jax.Array, noise_key: jax.Array | None = None) -> jax.Array:
        w = self.mapping(z)
        ws = jnp.repeat(w[:, None], num_ws(self.resolution), axis=1)
        return self.synthesis(ws, noise_key)


class StyleGAN2Discriminator(nn.Module):
    """Residual D: fromRGB, per resolution (conv, conv+down) + (down, 1x1) skip scaled by
    1/sqrt(2), then minibatch stddev, conv, dense, dense -> logits [B]."""

    channel_base: int = 16384
    channel_max: int = 512
    mbstd_group_size: int = 4
    mbstd_num_features: int = 1
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ch = lambda r: channels_at(r, self.channel_base, self.channel_max)
        res = x.shape[1]
        conv = functools.partial(EqualConv, conv_impl=self.conv_impl)
        h = conv(ch(res), 1, name="fromrgb")(x)
        while res > 4:
            y = conv(ch(res // 2), 1, use_bias=False, activation=False, name=f"b{res}_skip")(
                avg_pool2(h))
            h = conv(ch(res), name=f"b{res}_conv0")(h)
            h = conv(ch(res // 2), down=True, name=f"b{res}_conv1")(h)
            h = (y + h) * math.sqrt(0.5)
            res //= 2
        h = minibatch_stddev(h, self.mbstd_group_size, self.mbstd_num_features)
        h = conv(ch(4), name="b4_conv")(h)
        h = EqualDense(ch(4), activation=True, name="b4_fc")(h.reshape(h.shape[0], -1))
        return EqualDense(1, name="b4_out")(h)[:, 0]
