"""Numerics checked against exact values: the discretized Gaussian in its tails, the respaced
DDPM/DDIM coefficients at small t, and registry lookups that must not fall through."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import distributions as dist
from aigc_jax.errors import UserError
from aigc_jax.methods.diffusion import objectives as obj
from aigc_jax.methods.diffusion import samplers
from aigc_jax.methods.diffusion import schedules as ds

HALF_BIN = 1.0 / 255.0


def _exact_bin_log_prob(x: float, mean: float, sigma: float) -> float:
    """log of the integral of N(mean, sigma^2) over [x - 1/255, x + 1/255], by Simpson's rule
    on the density in float64 (no CDF, so no cancellation)."""
    z = np.linspace((x - HALF_BIN - mean) / sigma, (x + HALF_BIN - mean) / sigma, 2001)
    log_pdf = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    peak = log_pdf.max()
    w = np.ones_like(z)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    h = z[1] - z[0]
    return peak + math.log(h / 3.0 * float((w * np.exp(log_pdf - peak)).sum()))


@pytest.mark.parametrize("k", [-8.0, -6.0, -3.0, -0.5, 0.0, 0.5, 3.0, 6.0, 8.0])
def test_discretized_gaussian_matches_the_exact_integral_in_both_tails(k):
    # x sits k sigma above the mean; the old difference of CDFs gave -27.6 (the 1e-12 floor)
    # instead of -20.7 at +6 sigma, with a zero gradient.
    sigma, x = 0.05, 0.0
    mean = x - k * sigma

    def f(m):
        return dist.discretized_gaussian_log_prob(jnp.float32(x), m, jnp.log(jnp.float32(sigma)))

    value = float(f(jnp.float32(mean)))
    np.testing.assert_allclose(value, _exact_bin_log_prob(x, mean, sigma), rtol=2e-6)
    h = 1e-6
    exact_grad = (_exact_bin_log_prob(x, mean + h, sigma)
                  - _exact_bin_log_prob(x, mean - h, sigma)) / (2 * h)
    np.testing.assert_allclose(float(jax.grad(f)(jnp.float32(mean))), exact_grad, rtol=1e-3,
                               atol=1e-3)


def test_discretized_gaussian_still_sums_to_one_and_edges_are_finite():
    values = jnp.linspace(-1.0, 1.0, 256)
    for mean, sigma in [(0.1, 0.3), (0.9, 0.01), (-0.95, 0.002)]:
        logp = dist.discretized_gaussian_log_prob(values, jnp.float32(mean), jnp.log(sigma))
        assert bool(jnp.all(jnp.isfinite(logp)))
        np.testing.assert_allclose(float(jnp.exp(logp).sum()), 1.0, atol=1e-5)
    grad = jax.grad(lambda m: dist.discretized_gaussian_log_prob(
        jnp.array([-1.0, 0.0, 1.0]), m, jnp.log(0.01)).sum())(jnp.float32(0.3))
    assert bool(jnp.isfinite(grad))


def _exact_respaced(betas: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The respaced chain's DDPM coefficients in float64 straight from the betas."""
    ac = np.cumprod(1.0 - betas.astype(np.float64))[t]
    ac_prev = np.concatenate([[1.0], ac[:-1]])
    beta = 1.0 - ac / ac_prev
    return {"c_x0": beta * np.sqrt(ac_prev) / (1.0 - ac),
            "c_xt": (1.0 - ac_prev) * np.sqrt(1.0 - beta) / (1.0 - ac),
            "max_log_variance": np.log(beta)}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("num_steps", [0, 50, 250])
def test_respaced_ddpm_coefficients_are_exact_at_small_t(schedule, num_steps):
    # Rebuilt from float32 alphas_cumprod, these were off by ~5e-4 relative at small t.
    betas = ds.linear_betas(1000) if schedule == "linear" else ds.cosine_betas(1000)
    d = obj.Diffusion(ds.schedule_from_betas(betas))
    t = samplers.sampler_timesteps(1000, num_steps)
    steps = samplers.ddpm_steps(d, t)
    exact = _exact_respaced(betas, t)
    for name, want in exact.items():
        np.testing.assert_allclose(getattr(steps, name)[:10], want[:10], rtol=1e-7, err_msg=name)
        np.testing.assert_allclose(getattr(steps, name), want, rtol=1e-7, err_msg=name)


def test_ddim_with_eta_one_keeps_ddpm_coefficients_exactly():
    d = obj.Diffusion(ds.schedule_from_betas(ds.linear_betas(1000)))
    t = samplers.sampler_timesteps(1000, 20)
    a, b = samplers.ddpm_steps(d, t), samplers.ddim_steps(d, t, eta=1.0)
    np.testing.assert_allclose(a.c_x0, b.c_x0, rtol=1e-9)
    np.testing.assert_allclose(a.c_xt, b.c_xt, rtol=1e-9)


def test_float64_tables_survive_jit_as_static_data():
    sched = ds.schedule_from_betas(ds.linear_betas(100))

    @jax.jit
    def f(s: ds.Schedule) -> jax.Array:
        return jnp.asarray(ds.float64_tables(s)["alphas_cumprod"][0], jnp.float32) + s.betas[0]

    np.testing.assert_allclose(float(f(sched)), (1 - 1e-3) + 1e-3, rtol=1e-6)


def _noised(d: obj.Diffusion) -> obj.Noised:
    x0 = jnp.full((2, 4, 4, 1), 0.5)
    noise = jnp.ones_like(x0)
    t = jnp.array([3, 7])
    return obj.Noised(x0, ds.q_sample(d.sched, x0, t, noise), t, noise)


def test_target_raises_on_a_prediction_it_does_not_know():
    d = obj.Diffusion(ds.schedule_from_betas(ds.linear_betas(100)), prediction="score")
    with pytest.raises(UserError, match="prediction='score' is unknown.*'eps'"):
        obj.target(d, _noised(d))


def test_every_objective_has_a_target_a_prediction_and_an_implicit_weight():
    sched = ds.schedule_from_betas(ds.linear_betas(100))
    for name, objective in obj.OBJECTIVES.items():
        d = obj.Diffusion(sched, prediction=objective.prediction)
        q = _noised(d)
        tgt = obj.target(d, q)
        x0, eps = obj.PREDICTIONS[objective.prediction](sched, tgt, q.x_t, q.t)
        np.testing.assert_allclose(x0, q.x0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(eps, q.noise, atol=1e-4, err_msg=name)
        assert objective.prediction in obj.IMPLICIT_X0_WEIGHT


@pytest.mark.parametrize("field, value", [("prediction", "score"), ("loss_weighting", "p2"),
                                          ("variance", "fixed_medium")])
def test_registry_lookups_raise_one_line_errors(field, value):
    d = obj.Diffusion(ds.schedule_from_betas(ds.linear_betas(100)), **{field: value})
    q = _noised(d)
    with pytest.raises(UserError, match=f"{field}={value!r} is unknown"):
        obj.simple_loss(d, q.noise, q)
        obj.vb_terms_bpd(d, jnp.concatenate([q.noise, q.noise], -1), q)
