"""VAE encoders and decoders: the MLP of Kingma & Welling / Burda et al., and a small ConvNet.

The encoder gives q(z|x) = N(mu, exp(log_sigma)^2); the decoder gives the parameters of p(x|z):
Bernoulli `logits`, or the `mean` and `log_sigma` of a discretized Gaussian over 8-bit values.
Parameters are float32; `dtype` sets the compute precision of the hidden layers (bfloat16 for
speed), while the latent heads and the decoder's output layer compute in float32, so the
likelihood and the KL are float32 whatever the switch.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"tanh": jnp.tanh, "relu": nn.relu, "swish": nn.swish, "softplus": nn.softplus}


def gaussian_head(h: jax.Array, latent_dim: int) -> tuple[jax.Array, jax.Array]:
    """Two float32 dense heads giving (mu, log_sigma) of q(z|x); call inside a compact module."""
    h = h.astype(jnp.float32)
    return nn.Dense(latent_dim, name="mu")(h), nn.Dense(latent_dim, name="log_sigma")(h)


class MLPEncoder(nn.Module):
    """x [B, H, W, C] -> (mu, log_sigma) [B, latent_dim] through dense hidden layers."""

    hidden: Sequence[int]
    latent_dim: int
    activation: str = "tanh"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            h = ACTIVATIONS[self.activation](nn.Dense(width, dtype=self.dtype)(h))
        return gaussian_head(h, self.latent_dim)


class MLPDecoder(nn.Module):
    """z [B, latent_dim] -> per-pixel outputs [B, H, W, C * num_outputs]."""

    hidden: Sequence[int]
    image_shape: Sequence[int]
    num_outputs: int
    activation: str = "tanh"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        x = z
        for width in self.hidden:
            x = ACTIVATIONS[self.activation](nn.Dense(width, dtype=self.dtype)(x))
        h, w, c = self.image_shape
        out = nn.Dense(h * w * c * self.num_outputs)(x.astype(jnp.float32))
        return out.reshape(z.shape[0], h, w, c * self.num_outputs)


class ConvEncoder(nn.Module):
    """Strided 3x3 convolutions, then dense heads for (mu, log_sigma)."""

    channels: Sequence[int]
    latent_dim: int
    activation: str = "swish"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = ACTIVATIONS[self.activation]
        h = x
        for ch in self.channels:
            h = act(nn.Conv(ch, (3, 3), strides=(2, 2), dtype=self.dtype)(h))
        h = h.reshape(h.shape[0], -1)
        return gaussian_head(h, self.latent_dim)


class ConvDecoder(nn.Module):
    """Dense to a small feature map, then transposed convolutions back to the image size."""

    channels: Sequence[int]  # encoder order; used reversed
    image_shape: Sequence[int]
    num_outputs: int
    activation: str = "swish"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h, w, c = self.image_shape
        scale = 2 ** len(self.channels)
        fh, fw = -(-h // scale), -(-w // scale)
        x = act(nn.Dense(fh * fw * self.channels[-1], dtype=self.dtype)(z))
        x = x.reshape(z.shape[0], fh, fw, -1)
        for ch in reversed(self.channels):
            x = act(nn.ConvTranspose(ch, (3, 3), strides=(2, 2), dtype=self.dtype)(x))
        # Transposed convolutions may overshoot sizes that are not multiples of 2^levels.
        x = x[:, :h, :w]
        return nn.Conv(c * self.num_outputs, (3, 3))(x.astype(jnp.float32))


class VAE(nn.Module):
    """Encoder + decoder; `encode` and `decode` are applied separately by the objectives."""

    encoder: nn.Module
    decoder: nn.Module

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(z|x): (mu, log_sigma), each [B, latent_dim]."""
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """p(x|z) parameters [B, H, W, C * num_outputs]."""
        return self.decoder(z)

    def __call__(self, x: jax.Array) -> jax.Array:
        mu, _ = self.encode(x)
        return self.decode(mu)


def create_vae(model_cfg, image_shape: Sequence[int], num_outputs: int) -> VAE:
    """The VAE described by `config.model` for images of `image_shape` [H, W, C]."""
    latent = int(model_cfg.latent_dim)
    act = model_cfg.activation
    dtype = jnp.dtype(model_cfg.get("dtype", "float32"))
    if model_cfg.arch == "mlp":
        hidden = tuple(model_cfg.hidden)
        return VAE(MLPEncoder(hidden, latent, act, dtype),
                   MLPDecoder(tuple(reversed(hidden)), tuple(image_shape), num_outputs, act,
                              dtype))
    channels = tuple(model_cfg.channels)
    return VAE(ConvEncoder(channels, latent, act, dtype),
               ConvDecoder(channels, tuple(image_shape), num_outputs, act, dtype))
