"""GAN objectives (a registry selected by `config.loss`) and the discriminator penalties.

Every loss takes D's raw logits (one per example) and returns batch means:
- non_saturating: Goodfellow et al. (2014), G maximises log D(G(z)) (their practical variant).
- hinge: Lim & Ye (2017) / Miyato et al. (2018), as used by SNGAN and BigGAN.
- wgan_gp: the Wasserstein critic of Arjovsky et al. (2017); pair it with `gradient_penalty`
  (Gulrajani et al., 2017).
- least_squares: LSGAN with targets a=0, b=c=1 (Mao et al., 2017).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GANLoss:
    """`d(real_logits, fake_logits)` is minimised by D, `g(fake_logits)` by G (scalars)."""

    d: Callable[[jax.Array, jax.Array], jax.Array]
    g: Callable[[jax.Array], jax.Array]


def _ns_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    # -log sigmoid(r) - log(1 - sigmoid(f)), written with softplus for stability.
    return jax.nn.softplus(-real).mean() + jax.nn.softplus(fake).mean()


def _ns_g(fake: jax.Array) -> jax.Array:
    return jax.nn.softplus(-fake).mean()  # -log sigmoid(f)


def _hinge_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    return jax.nn.relu(1.0 - real).mean() + jax.nn.relu(1.0 + fake).mean()


def _wasserstein_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    return fake.mean() - real.mean()


def _minus_mean(fake: jax.Array) -> jax.Array:
    return -fake.mean()


def _ls_d(real: jax.Array, fake: jax.Array) -> jax.Array:
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def _ls_g(fake: jax.Array) -> jax.Array:
    return 0.5 * ((fake - 1.0) ** 2).mean()


LOSSES: dict[str, GANLoss] = {
    "non_saturating": GANLoss(_ns_d, _ns_g),
    "hinge": GANLoss(_hinge_d, _minus_mean),
    "wgan_gp": GANLoss(_wasserstein_d, _minus_mean),
    "least_squares": GANLoss(_ls_d, _ls_g),
}


def input_gradients(d_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """Per-example gradients dD(x_i)/dx_i [B, H, W, C] (D must not mix examples, e.g. no BN)."""
    return jax.grad(lambda v: d_fn(v).sum())(x)


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], x_real: jax.Array,
                     x_fake: jax.Array, rng: jax.Array) -> jax.Array:
    """WGAN-GP: E[(||grad D(x_hat)||_2 - 1)^2] at x_hat = eps x_real + (1 - eps) x_fake."""
    eps = jax.random.uniform(rng, (x_real.shape[0],) + (1,) * (x_real.ndim - 1))
    x_hat = eps * x_real + (1.0 - eps) * x_fake
    grads = input_gradients(d_fn, x_hat)
    # The 1e-12 keeps the norm differentiable where a gradient is exactly zero.
    norms = jnp.sqrt(jnp.sum(grads**2, axis=tuple(range(1, grads.ndim))) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], x_real: jax.Array) -> jax.Array:
    """R1 (Mescheder et al., 2018): E_real[||grad D(x)||^2]; the loss adds gamma / 2 times it."""
    grads = input_gradients(d_fn, x_real)
    return jnp.mean(jnp.sum(grads**2, axis=tuple(range(1, grads.ndim))))
