"""VAE: the KL and bounds are right, shapes hold, and a short run learns."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from conftest import tiny_vae_config

from aigc_jax import distributions as dist
from aigc_jax import train
from aigc_jax.logging import read_metrics
from aigc_jax.methods.vae import method as vae_method

INFO = {"image_shape": [8, 8, 1], "num_classes": 10}


def _ctx_and_params(likelihood="bernoulli", arch="mlp", dtype="float32"):
    c = tiny_vae_config()
    c.vae.likelihood = likelihood
    c.model.arch = arch
    c.model.dtype = dtype
    c.model.channels = (8, 16)
    ctx = vae_method._context(c, INFO)
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
    if likelihood != "bernoulli":
        x = jnp.round(x * 255) / 127.5 - 1
    params = ctx.model.init(jax.random.PRNGKey(1), x)
    return ctx, params, x


def test_analytic_kl_matches_monte_carlo():
    mu, log_sigma = jnp.array([0.5, -1.0, 2.0]), jnp.array([-0.3, 0.2, 0.7])
    z = mu + jnp.exp(log_sigma) * jax.random.normal(jax.random.PRNGKey(0), (200_000, 3))
    mc = (dist.normal_log_prob(z, mu, log_sigma) - dist.normal_log_prob(z, 0.0, 0.0)).mean(0)
    np.testing.assert_allclose(dist.standard_normal_kl(mu, log_sigma), mc, atol=0.02)
    np.testing.assert_allclose(dist.normal_kl(mu, log_sigma, 0.0, 0.0),
                               dist.standard_normal_kl(mu, log_sigma), rtol=1e-5)


def test_discretized_gaussian_sums_to_one_over_256_values():
    values = jnp.arange(256) / 127.5 - 1.0
    logp = dist.discretized_gaussian_log_prob(values, jnp.float32(0.1), jnp.log(0.3))
    np.testing.assert_allclose(jnp.exp(logp).sum(), 1.0, atol=1e-4)


def test_iwae_bound_above_elbo_and_grows_with_k():
    ctx, params, x = _ctx_and_params()
    rng = jax.random.PRNGKey(2)
    # Average many draws so the comparison is about the bounds, not Monte-Carlo noise.
    bounds = {}
    for k in (1, 10, 100):
        lw = vae_method.log_weights(ctx, params, jnp.tile(x, (50, 1, 1, 1)), rng, k)
        bounds[k] = float((jax.nn.logsumexp(lw, 0) - math.log(k)).mean())
    _, metrics = vae_method.elbo_objective(ctx, params, jnp.tile(x, (50, 1, 1, 1)), rng)
    elbo = -float(metrics["neg_elbo"].mean())
    assert bounds[1] < bounds[10] < bounds[100]
    assert abs(bounds[1] - elbo) < 0.05 * abs(elbo)  # k=1 IWAE is the ELBO in expectation
    assert bounds[100] > elbo


def test_chunked_nll_equals_one_shot_estimate():
    ctx, params, x = _ctx_and_params()
    rng = jax.random.PRNGKey(3)
    chunked = vae_method.importance_nll(ctx, params, x, rng, k=40, chunk=10)
    lws = jnp.concatenate([vae_method.log_weights(ctx, params, x, jax.random.fold_in(rng, i), 10)
                           for i in range(4)])
    one_shot = -(jax.nn.logsumexp(lws, 0) - math.log(40))
    chex.assert_shape(chunked, (4,))
    np.testing.assert_allclose(chunked, one_shot, rtol=1e-5)


def test_shapes_for_each_architecture_and_likelihood():
    for likelihood, arch in [("bernoulli", "mlp"), ("discretized_gaussian", "conv")]:
        ctx, params, x = _ctx_and_params(likelihood, arch)
        mu, log_sigma, z = vae_method.encode_and_sample(ctx, params, x, jax.random.PRNGKey(0), 3)
        chex.assert_shape([mu, log_sigma], (4, 8))
        chex.assert_shape(z, (3, 4, 8))
        chex.assert_shape(vae_method.log_likelihood(ctx, params, z, x), (3, 4))
        images = vae_method.decode_mean(ctx, params, z[0])
        chex.assert_shape(images, (4, 8, 8, 1))
        assert images.dtype == jnp.uint8


def test_bfloat16_compute_keeps_float32_parameters_heads_and_likelihood():
    for likelihood, arch in [("bernoulli", "mlp"), ("discretized_gaussian", "conv")]:
        ctx, params, x = _ctx_and_params(likelihood, arch, dtype="bfloat16")
        assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        mu, log_sigma, z = vae_method.encode_and_sample(ctx, params, x, jax.random.PRNGKey(0), 2)
        assert mu.dtype == log_sigma.dtype == jnp.float32
        ll = vae_method.log_likelihood(ctx, params, z, x)
        assert ll.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(ll)))
        # Same parameters, float32 compute: bfloat16 only perturbs the result slightly.
        ctx32, _, _ = _ctx_and_params(likelihood, arch)
        ll32 = vae_method.log_likelihood(ctx32, params, z, x)
        np.testing.assert_allclose(ll, ll32, rtol=0.05)


def test_short_digits_run_lowers_test_neg_elbo(tmp_path):
    c = tiny_vae_config(num_steps=300)
    c.train.eval_every = 100
    c.train.log_every = 100
    c.train.checkpoint_every = 300
    train.train_and_evaluate(c, str(tmp_path))
    evals = [r for r in read_metrics(str(tmp_path)) if r["split"] == "eval"]
    assert len(evals) == 3
    first, last = evals[0]["neg_elbo"], evals[-1]["neg_elbo"]
    assert last < first - 3.0, (first, last)
    # The IWAE estimate is a tighter bound: never worse than the ELBO on the same model.
    assert evals[-1]["neg_iwae_k8"] <= evals[-1]["neg_elbo"] + 1e-3
    results = train.evaluate(c, str(tmp_path))
    assert results["nll_iwae_k40"] <= results["neg_elbo"] + 1e-3
    assert (tmp_path / "eval" / "300.json").exists()


def test_objective_registry_lists_known_names():
    c = tiny_vae_config()
    c.vae.objective = "wake_sleep"
    try:
        vae_method._context(c, INFO)
    except ValueError as e:
        assert "wake_sleep" in str(e) and "iwae" in str(e)
    else:
        raise AssertionError("unknown objective accepted")
