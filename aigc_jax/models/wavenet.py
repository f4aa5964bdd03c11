"""WaveNet (van den Oord et al., 2016): an autoregressive model over raw audio samples.

Stacks of causal dilated convolutions (`nn.Conv(padding="CAUSAL", kernel_dilation=d)`) with
gated units tanh(W_f * x + V_f c) * sigmoid(W_g * x + V_g c), residual and skip 1x1
convolutions, and the head ReLU -> 1x1 -> ReLU -> 1x1 over the summed skips. The output at t
is the distribution of sample t + 1 given samples <= t: 256 mu-law classes, or the parameters
of a discretised logistic mixture (Salimans et al., 2017; Oord et al., 2018).

Conditioning: global, a class (speaker, digit) embedding added to every gate; local, log-mel
frames through a small non-causal frame network, repeated `hop` times to the sample rate and
projected into every gate; and/or local, sinusoidal features of the time since the clip's
onset (`position_dim`), which tell a class-conditional model where it is in the word when the
word is longer than its receptive field (a known deterministic input, available in generation).

`WaveNet.step` is the fast generation of Paine et al. (2016): each layer keeps a queue of its
last (kernel_size - 1) * dilation inputs, so one new sample costs one tap product per layer.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import Dense

OUTPUTS = ("mulaw", "logistic_mixture")

Caches = tuple[jax.Array, ...]  # one [B, (kernel_size - 1) * dilation, C] queue per layer


@dataclasses.dataclass(frozen=True)
class WaveNetConfig:
    """The network's shape; `dilations` lists every layer's dilation in order."""

    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    kernel_size: int = 2
    residual_channels: int = 32
    gate_channels: int = 32
    skip_channels: int = 64
    output: str = "mulaw"  # mulaw | logistic_mixture
    quantization_channels: int = 256  # mu-law classes
    num_mixtures: int = 10  # logistic mixture components
    num_labels: int = 0  # global conditioning classes (0: off)
    label_dim: int = 16
    mel_bins: int = 0  # local conditioning on log-mel frames (0: off)
    hop: int = 256  # samples per mel frame
    cond_channels: int = 64
    position_dim: int = 0  # local conditioning on the time since the clip's onset (0: off)
    dtype: Any = jnp.float32

    @property
    def receptive_field(self) -> int:
        """Samples the output at t sees: (kernel_size - 1) * sum(dilations) + 1."""
        return receptive_field(self.dilations, self.kernel_size)

    @property
    def out_channels(self) -> int:
        """Logits (mu-law) or 3 x mixtures (weights, means, log-scales)."""
        return self.quantization_channels if self.output == "mulaw" else 3 * self.num_mixtures


def receptive_field(dilations: tuple[int, ...], kernel_size: int = 2) -> int:
    """(kernel_size - 1) * sum(dilations) + 1: the samples one output depends on."""
    return (kernel_size - 1) * sum(dilations) + 1


def position_features(seconds: jax.Array, dim: int) -> jax.Array:
    """Time since onset [B, T] (seconds, negative before it) -> [B, T, dim] sin/cos features
    at dim / 2 frequencies spaced geometrically from 0.5 Hz to 64 Hz."""
    freqs = 0.5 * 128.0 ** (jnp.arange(dim // 2) / max(dim // 2 - 1, 1))
    angle = 2.0 * jnp.pi * seconds[..., None].astype(jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def dilation_stack(max_dilation: int, repeats: int) -> tuple[int, ...]:
    """(1, 2, 4, ..., max_dilation) repeated `repeats` times (the paper's 1..512 x 3)."""
    one = tuple(2**i for i in range(max_dilation.bit_length()) if 2**i <= max_dilation)
    return one * repeats


class ResidualLayer(nn.Module):
    """One gated dilated layer: (x, conditioning) -> (x + residual, skip)."""

    cfg: WaveNetConfig
    dilation: int

    def setup(self):
        c = self.cfg
        self.conv = nn.Conv(2 * c.gate_channels, (c.kernel_size,), padding="CAUSAL",
                            kernel_dilation=(self.dilation,), dtype=c.dtype, name="dilated")
        self.residual = Dense(c.residual_channels, dtype=c.dtype, name="residual")
        self.skip = Dense(c.skip_channels, dtype=c.dtype, name="skip")
        if c.num_labels:
            self.global_proj = Dense(2 * c.gate_channels, use_bias=False, dtype=c.dtype,
                                     name="global")
        if c.mel_bins or c.position_dim:
            self.local_proj = Dense(2 * c.gate_channels, use_bias=False, dtype=c.dtype,
                                    name="local")

    def gate(self, h: jax.Array, g: jax.Array | None, local: jax.Array | None):
        """tanh x sigmoid of the conv output plus conditioning -> (residual out, skip out)."""
        if g is not None:
            h = h + self.global_proj(g)  # g [B, 1, E] over time, [B, E] in `step`
        if local is not None:
            h = h + self.local_proj(local)
        f, s = jnp.split(h, 2, axis=-1)
        z = jnp.tanh(f) * jax.nn.sigmoid(s)
        return self.residual(z), self.skip(z)

    def __call__(self, x: jax.Array, g: jax.Array | None, local: jax.Array | None):
        """x [B, T, C] -> (x + residual [B, T, C], skip [B, T, S])."""
        res, skip = self.gate(self.conv(x), g, local)
        return x + res, skip

    def step(self, x: jax.Array, queue: jax.Array, pos: jax.Array, g: jax.Array | None,
             local: jax.Array | None):
        """One sample: x [B, C] at time pos, queue [B, (k-1) d, C] of past inputs ->
        (x + residual [B, C], skip [B, S], updated queue)."""
        k, d = self.cfg.kernel_size, self.dilation
        size = (k - 1) * d
        # Taps x_{t - (k-1) d}, ..., x_{t - d} sit at (t - j d) mod size of the circular queue.
        slots = (pos - jnp.arange(k - 1, 0, -1) * d) % size
        taps = jnp.concatenate([queue[:, slots], x[:, None]], axis=1)  # [B, k, C]
        params = self.conv.variables["params"]
        h = jnp.einsum("bkc,kco->bo", taps.astype(self.cfg.dtype),
                       params["kernel"].astype(self.cfg.dtype)) + params["bias"]
        res, skip = self.gate(h, g, local)
        queue = jax.lax.dynamic_update_index_in_dim(queue, x, pos % size, axis=1)
        return x + res, skip, queue


class WaveNet(nn.Module):
    """inputs [B, T] (mu-law classes int32, or floats in [-1, 1] for the logistic mixture)
    -> per-sample outputs [B, T, out_channels] predicting the next sample."""

    cfg: WaveNetConfig

    def setup(self):
        c = self.cfg
        if c.output == "mulaw":
            self.embed = nn.Embed(c.quantization_channels, c.residual_channels, name="embed")
        else:
            self.embed = Dense(c.residual_channels, dtype=c.dtype, name="embed")
        self.layers = [ResidualLayer(c, d, name=f"layer_{i}") for i, d in enumerate(c.dilations)]
        self.head1 = Dense(c.skip_channels, dtype=c.dtype, name="head1")
        self.head2 = Dense(c.out_channels, dtype=jnp.float32, name="head2")
        if c.num_labels:
            self.label_embed = nn.Embed(c.num_labels, c.label_dim, name="label_embed")
        if c.mel_bins:
            self.cond_net = nn.Conv(c.cond_channels, (3,), padding="SAME", name="cond_net")

    def _input(self, x: jax.Array) -> jax.Array:
        if self.cfg.output == "mulaw":
            return self.embed(x.astype(jnp.int32)).astype(self.cfg.dtype)
        return self.embed(x[..., None].astype(self.cfg.dtype))

    def _head(self, skip: jax.Array) -> jax.Array:
        h = self.head1(nn.relu(skip))
        return self.head2(nn.relu(h)).astype(jnp.float32)

    def upsample(self, mel: jax.Array, length: int) -> jax.Array:
        """Mel frames [B, F, M] -> conditioning at the sample rate [B, length, cond_channels]."""
        h = jnp.tanh(self.cond_net(mel.astype(jnp.float32)))
        return jnp.repeat(h, self.cfg.hop, axis=1)[:, :length].astype(self.cfg.dtype)

    def conditioning(self, label: jax.Array | None, mel: jax.Array | None, length: int,
                     position: jax.Array | None = None):
        """(global embedding [B, E] or None, local features [B, length, C] or None);
        `position` [B, length] is each input's time since the clip's onset in seconds."""
        c = self.cfg
        g = self.label_embed(label).astype(c.dtype) if c.num_labels else None
        local = []
        if c.mel_bins:
            local.append(self.upsample(mel, length))
        if c.position_dim:
            local.append(position_features(position[:, :length], c.position_dim).astype(c.dtype))
        return g, (jnp.concatenate(local, axis=-1) if local else None)

    def __call__(self, x: jax.Array, label: jax.Array | None = None,
                 mel: jax.Array | None = None, position: jax.Array | None = None) -> jax.Array:
        g, local = self.conditioning(label, mel, x.shape[1], position)
        h = self._input(x)  # [B, T, C]
        g = None if g is None else g[:, None]
        skips = 0.0
        for layer in self.layers:
            h, skip = layer(h, g, local)
            skips = skips + skip
        return self._head(skips)

    def step(self, x: jax.Array, caches: Caches, pos: jax.Array, g: jax.Array | None,
             local: jax.Array | None) -> tuple[jax.Array, Caches]:
        """One sample at time pos: x [B] -> (outputs [B, out_channels], updated queues).

        `g` and `local` [B, C] come from `conditioning` (local: the row at pos)."""
        h = self._input(x)  # [B, C]
        skips, new = 0.0, []
        for layer, queue in zip(self.layers, caches, strict=True):
            h, skip, queue = layer.step(h, queue, pos, g, local)
            skips, new = skips + skip, [*new, queue]
        return self._head(skips), tuple(new)


def init_caches(cfg: WaveNetConfig, batch: int) -> Caches:
    """Empty (silent) queues: the past before t = 0 is zero input, as the causal padding."""
    return tuple(jnp.zeros((batch, (cfg.kernel_size - 1) * d, cfg.residual_channels), cfg.dtype)
                 for d in cfg.dilations)
