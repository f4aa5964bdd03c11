"""Normalisation: GroupNorm statistics in float32, PyTorch-default BatchNorm, spectral norm."""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupNorm32(nn.Module):
    """GroupNorm computed in float32 whatever the compute dtype (bfloat16 stats are too coarse);
    the group count is the largest divisor of the channels up to `num_groups`."""

    num_groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        groups = math.gcd(self.num_groups, x.shape[-1])
        return nn.GroupNorm(num_groups=groups, dtype=jnp.float32)(x.astype(jnp.float32))


def bn_scale_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """BatchNorm gamma ~ N(1, 0.02) as in the DCGAN reference code."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, name: str | None = None, scale_init=bn_scale_init,
               **kwargs) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=scale_init, name=name, **kwargs)


def maybe_sn(layer: nn.Module, spectral_norm: bool, update_stats: bool, *args):
    """Apply `layer` to `args`, through flax's nn.SpectralNorm when `spectral_norm` is set
    (Miyato et al., 2018; the power-iteration vectors live in the `batch_stats` collection)."""
    if spectral_norm:
        return nn.SpectralNorm(layer)(*args, update_stats=update_stats)
    return layer(*args)
