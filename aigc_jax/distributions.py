"""Log-densities and KL terms shared by the VAE and diffusion objectives (all in nats)."""

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

LOG_2PI = jnp.log(2.0 * jnp.pi)


def normal_kl(mean1: jax.Array, log_sigma1: jax.Array, mean2: jax.Array,
              log_sigma2: jax.Array) -> jax.Array:
    """Elementwise KL(N(mean1, sigma1^2) || N(mean2, sigma2^2))."""
    return (log_sigma2 - log_sigma1
            + (jnp.exp(2.0 * log_sigma1) + (mean1 - mean2) ** 2) / (2.0 * jnp.exp(2.0 * log_sigma2))
            - 0.5)


def standard_normal_kl(mean: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """Elementwise KL(N(mean, sigma^2) || N(0, 1)), the VAE's analytic KL."""
    return 0.5 * (jnp.exp(2.0 * log_sigma) + mean**2 - 1.0) - log_sigma


def normal_log_prob(x: jax.Array, mean: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """Elementwise log N(x; mean, sigma^2)."""
    return -0.5 * (LOG_2PI + 2.0 * log_sigma + ((x - mean) * jnp.exp(-log_sigma)) ** 2)


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Elementwise log Bernoulli(x; sigmoid(logits)) for x in [0, 1]."""
    return x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)


def log_normal_interval(a: jax.Array, b: jax.Array) -> jax.Array:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails.

    The interval is reflected to lie mostly below zero, where Phi is far from 1, and the
    difference is taken in log space: log Phi(b) + log(1 - Phi(a) / Phi(b)). Subtracting two
    CDFs near 1 instead loses every digit beyond a few sigma above the mean in float32.
    """
    upper = a + b > 0
    a, b = jnp.where(upper, -b, a), jnp.where(upper, -a, b)
    log_b, log_a = log_ndtr(b), log_ndtr(a)
    return log_b + jnp.log(jnp.maximum(-jnp.expm1(log_a - log_b), 1e-30))


def discretized_gaussian_log_prob(x: jax.Array, mean: jax.Array,
                                  log_sigma: jax.Array) -> jax.Array:
    """Elementwise log-probability of 8-bit data scaled to [-1, 1] under a discretized Gaussian.

    Each of the 256 values owns a bin of width 2/255; the end bins extend to infinity, as in
    the DDPM paper's decoder at t = 0, so the probabilities over the 256 values sum to one.
    Uses the exact normal CDF in log space (DDPM's code used a tanh approximation and a
    difference of CDFs, which underflows in the tails).
    """
    centered = x - mean
    inv_sigma = jnp.exp(-log_sigma)
    plus_in = inv_sigma * (centered + 1.0 / 255.0)
    min_in = inv_sigma * (centered - 1.0 / 255.0)
    log_cdf_plus = log_ndtr(plus_in)
    log_one_minus_cdf_min = log_ndtr(-min_in)
    log_delta = log_normal_interval(min_in, plus_in)
    return jnp.where(x < -0.999, log_cdf_plus,
                     jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def sum_except_batch(x: jax.Array, batch_dims: int = 1) -> jax.Array:
    """Sum over every axis after the first `batch_dims`."""
    return x.reshape(*x.shape[:batch_dims], -1).sum(-1)


def discretized_logistic_mixture_log_prob(x: jax.Array, params: jax.Array, num_bins: int,
                                          min_log_scale: float = -7.0) -> jax.Array:
    """log P(x) of x [...] on the grid of `num_bins` levels in [-1, 1] under a mixture of
    logistics params [..., 3M] = (logit weights, means, log-scales); PixelCNN++ (Salimans
    et al., 2017), eq. 2, with the two edge bins taking the tails."""
    logit_w, mean, log_s = jnp.split(params, 3, axis=-1)
    log_s = jnp.maximum(log_s, min_log_scale)
    half = 1.0 / (num_bins - 1)  # half a bin
    centred = x[..., None] - mean
    inv_s = jnp.exp(-log_s)
    plus_in, min_in = inv_s * (centred + half), inv_s * (centred - half)
    log_cdf_plus = plus_in - jax.nn.softplus(plus_in)  # log sigmoid(plus_in)
    log_one_minus_cdf_min = -jax.nn.softplus(min_in)
    cdf_delta = jax.nn.sigmoid(plus_in) - jax.nn.sigmoid(min_in)
    mid_in = inv_s * centred
    log_pdf_mid = mid_in - log_s - 2.0 * jax.nn.softplus(mid_in)
    # Far in a tail the CDF difference underflows: use the density times the bin width.
    inner = jnp.where(cdf_delta > 1e-5, jnp.log(jnp.maximum(cdf_delta, 1e-12)),
                      log_pdf_mid + jnp.log(2.0 * half))
    xb = x[..., None]
    log_probs = jnp.where(xb < -1.0 + half, log_cdf_plus,
                          jnp.where(xb > 1.0 - half, log_one_minus_cdf_min, inner))
    return jax.nn.logsumexp(log_probs + jax.nn.log_softmax(logit_w, axis=-1), axis=-1)


def sample_discretized_logistic_mixture(rng: jax.Array, params: jax.Array, num_bins: int,
                                        min_log_scale: float = -7.0) -> jax.Array:
    """A draw [...] from the mixture params [..., 3M], snapped to the `num_bins` grid."""
    logit_w, mean, log_s = jnp.split(params, 3, axis=-1)
    k_comp, k_u = jax.random.split(rng)
    comp = jax.random.categorical(k_comp, logit_w, axis=-1)[..., None]
    mean = jnp.take_along_axis(mean, comp, -1)[..., 0]
    log_s = jnp.maximum(jnp.take_along_axis(log_s, comp, -1)[..., 0], min_log_scale)
    u = jax.random.uniform(k_u, mean.shape, minval=1e-5, maxval=1.0 - 1e-5)
    x = jnp.clip(mean + jnp.exp(log_s) * (jnp.log(u) - jnp.log1p(-u)), -1.0, 1.0)
    return jnp.round((x + 1.0) * 0.5 * (num_bins - 1)) / (num_bins - 1) * 2.0 - 1.0
