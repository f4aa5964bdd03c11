"""Diffusion objectives (registry chosen by `config.diffusion.objective`), loss weights, the VLB.

An objective is a loss on the network output plus what that output predicts ("eps", "x0" or
"v"; `PREDICTIONS` turns it back into (x0, eps) for sampling and the VLB). "hybrid" is
Nichol & Dhariwal's L_simple + lambda L_vlb with a learned variance (2C output channels).
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from aigc_jax import distributions as dist
from aigc_jax.errors import lookup
from aigc_jax.methods.diffusion import schedules as ds
from aigc_jax.methods.diffusion.schedules import Schedule, extract

VARIANCES = ("fixed_small", "fixed_large", "learned")


@jax.tree_util.register_dataclass  # a pytree, so it can cross jit and scan boundaries
@dataclasses.dataclass(frozen=True)
class Noised:
    """One training example batch on the forward process: x_t = q_sample(x0, t, noise)."""

    x0: jax.Array  # [B, H, W, C] in [-1, 1]
    x_t: jax.Array  # [B, H, W, C]
    t: jax.Array  # [B] int32 in [0, T)
    noise: jax.Array  # [B, H, W, C], the eps of q_sample


@dataclasses.dataclass(frozen=True)
class Diffusion:
    """What objectives, samplers and the VLB share: the schedule and how to read the network."""

    sched: Schedule
    prediction: str = "eps"  # key of PREDICTIONS
    variance: str = "fixed_small"  # how p(x_{t-1} | x_t) gets its variance, one of VARIANCES
    loss_weighting: str = "none"  # key of LOSS_WEIGHTINGS
    min_snr_gamma: float = 5.0
    hybrid_lambda: float = 0.001


def mean_flat(x: jax.Array) -> jax.Array:
    """Mean over every axis but the first: [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).mean(-1)


# Predictions: network output (first C channels) -> (x0, eps), given x_t and t.

PREDICTIONS: dict[str, Callable] = {
    "eps": lambda s, out, x_t, t: (ds.x0_from_eps(s, x_t, t, out), out),
    "x0": lambda s, out, x_t, t: (out, ds.eps_from_x0(s, x_t, t, out)),
    "v": lambda s, out, x_t, t: (ds.x0_from_v(s, x_t, t, out), ds.eps_from_v(s, x_t, t, out)),
}

# Each prediction's plain MSE is the x0-space squared error times this function of SNR(t):
# ||eps_hat - eps||^2 = SNR ||x0_hat - x0||^2 and ||v_hat - v||^2 = (1 + SNR) ||x0_hat - x0||^2.
IMPLICIT_X0_WEIGHT: dict[str, Callable] = {
    "eps": lambda snr: snr,
    "x0": lambda snr: jnp.ones_like(snr),
    "v": lambda snr: 1.0 + snr,
}

# Loss weightings as the weight on the x0-space squared error, w(SNR(t), gamma); the objective's
# MSE is multiplied by w / IMPLICIT_X0_WEIGHT[prediction]. "none" keeps each MSE as it is.
LOSS_WEIGHTINGS: dict[str, Callable | None] = {
    "none": None,
    "snr": lambda snr, gamma: snr,  # = the eps-MSE whatever the network predicts
    "min_snr": lambda snr, gamma: jnp.minimum(snr, gamma),  # Hang et al. (2023), gamma = 5
    "truncated_snr": lambda snr, gamma: jnp.maximum(snr, 1.0),  # Salimans & Ho (2022)
}


def loss_weight(d: Diffusion, t: jax.Array) -> jax.Array:
    """Per-example multiplier [B] of the objective's MSE under `d.loss_weighting`."""
    w = lookup(LOSS_WEIGHTINGS, d.loss_weighting, "loss_weighting")
    if w is None:
        return jnp.ones(t.shape, jnp.float32)
    snr = jnp.maximum(ds.snr(d.sched, t), 1e-20)
    return w(snr, d.min_snr_gamma) / lookup(IMPLICIT_X0_WEIGHT, d.prediction, "prediction")(snr)


# What the network should output for each prediction, from the noised example.
TARGETS: dict[str, Callable] = {
    "eps": lambda s, q: q.noise,
    "x0": lambda s, q: q.x0,
    "v": lambda s, q: ds.v_from_x0_eps(s, q.x0, q.t, q.noise),
}


def target(d: Diffusion, q: Noised) -> jax.Array:
    """What the network should output for `d.prediction` (a UserError if it is unknown)."""
    return lookup(TARGETS, d.prediction, "prediction")(d.sched, q)


# The reverse process p(x_{t-1} | x_t) and the variational bound, in bits per dimension.


def model_log_variance(d: Diffusion, t: jax.Array, var_out: jax.Array | None) -> jax.Array:
    """log sigma_t^2 of p(x_{t-1} | x_t): fixed small/large, or learned in [log beta~, log beta]."""
    lookup(dict.fromkeys(VARIANCES), d.variance, "variance")
    if d.variance == "fixed_small":
        return extract(d.sched.posterior_log_variance_clipped, t)
    log_beta = jnp.log(jnp.append(d.sched.posterior_variance[1:2], d.sched.betas[1:]))
    if d.variance == "fixed_large":  # beta_t, with beta~_1 at t = 0 as in DDPM
        return extract(log_beta, t)
    frac = (var_out + 1.0) / 2.0  # Nichol & Dhariwal: v in [-1, 1] interpolates in log space
    return (frac * extract(jnp.log(d.sched.betas), t)
            + (1.0 - frac) * extract(d.sched.posterior_log_variance_clipped, t))


def p_mean_variance(d: Diffusion, out: jax.Array, x_t: jax.Array, t: jax.Array,
                    clip_x0: bool = False) -> dict[str, jax.Array]:
    """Mean, log-variance, x0 and eps of p(x_{t-1} | x_t) from the network output."""
    c = x_t.shape[-1]
    mean_out, var_out = out[..., :c], (out[..., c:] if out.shape[-1] > c else None)
    x0, eps = lookup(PREDICTIONS, d.prediction, "prediction")(d.sched, mean_out, x_t, t)
    if clip_x0:
        x0 = jnp.clip(x0, -1.0, 1.0)
        eps = ds.eps_from_x0(d.sched, x_t, t, x0)
    mean, _ = ds.q_posterior(d.sched, x0, x_t, t)
    log_var = model_log_variance(d, t, var_out) * jnp.ones_like(x_t)
    return {"mean": mean, "log_variance": log_var, "x0": x0, "eps": eps}


def vb_terms_bpd(d: Diffusion, out: jax.Array, q: Noised, clip_x0: bool = False) -> jax.Array:
    """L_t in bits/dim [B]: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)), or -log p(x0|x1) at t = 0."""
    p = p_mean_variance(d, out, q.x_t, q.t, clip_x0)
    true_mean, true_log_var = ds.q_posterior(d.sched, q.x0, q.x_t, q.t)
    kl = dist.normal_kl(true_mean, 0.5 * true_log_var, p["mean"], 0.5 * p["log_variance"])
    nll = -dist.discretized_gaussian_log_prob(q.x0, p["mean"], 0.5 * p["log_variance"])
    return jnp.where(q.t == 0, mean_flat(nll), mean_flat(kl)) / math.log(2.0)


def prior_bpd(sched: Schedule, x0: jax.Array) -> jax.Array:
    """L_T = KL(q(x_T | x0) || N(0, I)) in bits/dim [B]."""
    t = jnp.full(x0.shape[:1], sched.num_timesteps - 1, jnp.int32)
    mean, log_var = ds.q_mean_variance(sched, x0, t)
    return mean_flat(dist.normal_kl(mean, 0.5 * log_var, 0.0, 0.0)) / math.log(2.0)


# Objectives: (d, out [B, H, W, C or 2C], q) -> (per-example loss [B], per-example metrics).


def simple_loss(d: Diffusion, out: jax.Array, q: Noised):
    """Weighted MSE between the output and its target (Ho et al.'s L_simple for eps)."""
    mse = mean_flat((out - target(d, q)) ** 2)
    return loss_weight(d, q.t) * mse, {"mse": mse}


def hybrid_loss(d: Diffusion, out: jax.Array, q: Noised):
    """L_simple + lambda L_vlb (Nichol & Dhariwal, 2021); the VLB trains only the variance.

    L_vlb = T * E_t[L_t] is estimated by T * L_t at the sampled t; the mean gets a stop-gradient
    in the VLB term so it is trained by L_simple alone.
    """
    c = q.x0.shape[-1]
    mean_out, var_out = out[..., :c], out[..., c:]
    simple, aux = simple_loss(d, mean_out, q)
    frozen = jnp.concatenate([jax.lax.stop_gradient(mean_out), var_out], axis=-1)
    vb = vb_terms_bpd(d, frozen, q)
    return simple + d.hybrid_lambda * d.sched.num_timesteps * vb, {**aux, "vb_bpd": vb}


@dataclasses.dataclass(frozen=True)
class Objective:
    """A registry entry: the loss, what the network predicts, and whether it learns variances."""

    loss: Callable
    prediction: str = "eps"
    learned_variance: bool = False


OBJECTIVES: dict[str, Objective] = {
    "eps": Objective(simple_loss, "eps"),
    "x0": Objective(simple_loss, "x0"),
    "v": Objective(simple_loss, "v"),
    "hybrid": Objective(hybrid_loss, "eps", learned_variance=True),
}
