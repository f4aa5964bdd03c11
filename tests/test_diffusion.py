"""Diffusion: schedules, q_sample, conversions, objectives, samplers, guidance, VLB, the loop."""

import math
import os

import chex
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import load_config

from aigc_jax import train
from aigc_jax.errors import UserError
from aigc_jax.logging import read_metrics
from aigc_jax.methods.diffusion import method as diffusion
from aigc_jax.methods.diffusion import objectives as obj
from aigc_jax.methods.diffusion import samplers
from aigc_jax.methods.diffusion import schedules as ds
from aigc_jax.models.layers import count_params
from aigc_jax.models.unet import UNet, create_unet

INFO = {"kind": "image", "image_shape": [8, 8, 1], "num_classes": 10}


def tiny_config(num_steps: int = 200):
    """`configs/diffusion.py:tiny` (8x8 digits, one-level 8-channel UNet, T = 50); the down/up
    paths are covered by the parameter-count and bfloat16 tests."""
    c = load_config("diffusion", "tiny")
    c.train.num_steps = c.train.checkpoint_every = num_steps
    return c


def diffusion_of(schedule: str = "linear", t: int = 100, **kw) -> obj.Diffusion:
    c = tiny_config()
    c.diffusion.schedule, c.diffusion.num_timesteps = schedule, t
    return obj.Diffusion(ds.create_schedule(c.diffusion), **kw)


def toy_model_fn(x, t):
    """A fixed smooth 'network' for sampler tests (no compile of a UNet needed)."""
    return 0.5 * jnp.tanh(x) + 0.01 * t[:, None, None, None].astype(jnp.float32) / 50.0


# Schedules.


@pytest.mark.parametrize("t", [1000, 37])
def test_linear_schedule_tables_match_closed_forms(t):
    sched = diffusion_of("linear", t).sched
    betas = np.linspace(1e-4, 0.02, t) * 1000 / t
    ac = np.cumprod(1 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    np.testing.assert_allclose(sched.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(sched.alphas_cumprod, ac, rtol=1e-5)
    np.testing.assert_allclose(sched.posterior_variance, betas * (1 - ac_prev) / (1 - ac),
                               rtol=1e-5)
    np.testing.assert_allclose(sched.posterior_log_variance_clipped[0],
                               np.log(betas[1] * (1 - ac[0]) / (1 - ac[1])), rtol=1e-5)
    np.testing.assert_allclose(sched.posterior_mean_coef1, betas * np.sqrt(ac_prev) / (1 - ac),
                               rtol=1e-5)
    np.testing.assert_allclose(sched.posterior_mean_coef2,
                               (1 - ac_prev) * np.sqrt(1 - betas) / (1 - ac), rtol=1e-5)
    chex.assert_shape(sched.sqrt_recipm1_alphas_cumprod, (t,))


def test_cosine_schedule_follows_alpha_bar_and_clips_betas():
    t = 1000
    sched = diffusion_of("cosine", t).sched
    f = np.cos((np.arange(t + 1) / t + 0.008) / 1.008 * np.pi / 2) ** 2
    ac = f[1:] / f[0]
    unclipped = np.asarray(sched.betas) < 0.999
    np.testing.assert_allclose(np.asarray(sched.alphas_cumprod)[: t - 10], ac[: t - 10], rtol=1e-4)
    assert np.isclose(sched.betas.max(), 0.999) and not unclipped[-1] and unclipped[: t - 10].all()


def test_posterior_is_bayes_rule_on_the_tables():
    # q(x_{t-1} | x_t, x0) from the Gaussian product of q(x_{t-1}|x0) and q(x_t|x_{t-1}).
    sched = diffusion_of("cosine", 50).sched
    t = np.array([1, 10, 49])
    a_prev, beta = np.asarray(sched.alphas_cumprod_prev)[t], np.asarray(sched.betas)[t]
    prec = 1 / (1 - a_prev) + (1 - beta) / beta
    x0, x_t = 0.3, -0.7
    mean = (np.sqrt(a_prev) * x0 / (1 - a_prev) + np.sqrt(1 - beta) * x_t / beta) / prec
    got_mean, got_log_var = ds.q_posterior(sched, jnp.full((3, 1, 1, 1), x0),
                                           jnp.full((3, 1, 1, 1), x_t), jnp.asarray(t))
    np.testing.assert_allclose(got_mean.ravel(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.exp(got_log_var.ravel()), 1 / prec, rtol=1e-4)


def test_q_sample_statistics():
    sched = diffusion_of("linear", 1000).sched
    steps = np.array([0, 300, 999])

    @jax.jit
    def moments(key):
        t = jnp.repeat(jnp.asarray(steps), 20000)
        x0 = jnp.full((t.shape[0], 1, 1, 1), 0.8)
        x_t = ds.q_sample(sched, x0, t, jax.random.normal(key, x0.shape)).reshape(3, -1)
        return x_t.mean(1), x_t.var(1)

    mean, var = moments(jax.random.PRNGKey(0))
    ac = np.asarray(sched.alphas_cumprod)[steps]
    np.testing.assert_allclose(mean, np.sqrt(ac) * 0.8, atol=0.02)
    np.testing.assert_allclose(var, 1 - ac, rtol=0.03, atol=1e-5)


def test_conversions_round_trip_for_each_prediction():
    d = diffusion_of("cosine", 100)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x0 = jnp.tanh(jax.random.normal(k1, (6, 4, 4, 2)))
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 5, 30, 60, 90, 99])

    @jax.jit
    def round_trips(x0, eps):
        x_t = ds.q_sample(d.sched, x0, t, eps)
        v = ds.v_from_x0_eps(d.sched, x0, t, eps)
        out = {"v": (ds.x0_from_v(d.sched, x_t, t, v), ds.eps_from_v(d.sched, x_t, t, v)),
               "x0/eps": (ds.x0_from_eps(d.sched, x_t, t, eps),
                          ds.eps_from_x0(d.sched, x_t, t, x0))}
        # Each prediction read back from its own ideal output gives (x0, eps).
        targets = {"eps": eps, "x0": x0, "v": v}
        for name, fn in obj.PREDICTIONS.items():
            out[name] = fn(d.sched, targets[name], x_t, t)
        return out

    close = dict(atol=2e-3, rtol=2e-3)
    for name, (got_x0, got_eps) in round_trips(x0, eps).items():
        # t = T - 1 amplifies float32 error in x0_from_eps, t = 0 in eps_from_x0: skip those.
        chex.assert_trees_all_close(got_x0[:5], x0[:5], **close, custom_message=name)
        chex.assert_trees_all_close(got_eps[1:], eps[1:], **close, custom_message=name)


def test_simple_objectives_are_zero_at_their_targets_and_weighted_by_snr():
    d = diffusion_of("linear", 100)
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    x0 = jnp.tanh(jax.random.normal(k1, (3, 4, 4, 1)))
    noise = jax.random.normal(k2, x0.shape)
    t = jnp.array([2, 40, 90])
    q = obj.Noised(x0, ds.q_sample(d.sched, x0, t, noise), t, noise)

    @jax.jit
    def losses(q):
        out = {}
        for name in ("eps", "x0", "v"):
            dn = obj.Diffusion(d.sched, prediction=name)
            out[name] = obj.OBJECTIVES[name].loss(dn, obj.target(dn, q), q)[0]
        return out

    for loss in losses(q).values():
        chex.assert_trees_all_close(loss, jnp.zeros(3), atol=1e-6)
    # min-SNR-5 on eps: min(SNR, 5) / SNR times the plain MSE.
    dm = obj.Diffusion(d.sched, prediction="eps", loss_weighting="min_snr")
    snr = ds.snr(d.sched, t)
    chex.assert_trees_all_close(obj.loss_weight(dm, t), jnp.minimum(snr, 5.0) / snr, rtol=1e-5)
    dv = obj.Diffusion(d.sched, prediction="v", loss_weighting="snr")
    chex.assert_trees_all_close(obj.loss_weight(dv, t), snr / (snr + 1), rtol=1e-5)


def test_hybrid_vlb_term_matches_closed_form_and_only_trains_variance():
    d = diffusion_of("linear", 100, prediction="eps", variance="learned")
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    x0 = jnp.tanh(jax.random.normal(k1, (2, 4, 4, 1)))
    noise = jax.random.normal(k2, x0.shape)
    t = jnp.array([10, 70])
    q = obj.Noised(x0, ds.q_sample(d.sched, x0, t, noise), t, noise)
    # Perfect mean, variance channel v = 1 -> sigma^2 = beta_t: KL is the variance mismatch only.
    out = jnp.concatenate([noise, jnp.ones_like(noise)], axis=-1)
    delta = 0.1 * jax.random.normal(k1, noise.shape)

    @jax.jit
    def run(out, q):
        loss, aux = obj.hybrid_loss(d, out, q)
        _, aux_small = obj.hybrid_loss(d, out.at[..., 1:].set(-1.0), q)
        grad = jax.grad(lambda o: obj.hybrid_loss(d, o, q)[0].sum())(out.at[..., :1].add(delta))
        return loss, aux["vb_bpd"], aux_small["vb_bpd"], grad

    loss, vb, vb_small, grad = run(out, q)
    beta, beta_tilde = d.sched.betas[t], d.sched.posterior_variance[t]
    kl = 0.5 * (jnp.log(beta / beta_tilde) + beta_tilde / beta - 1) / math.log(2)
    chex.assert_trees_all_close(vb, kl, rtol=1e-4)
    chex.assert_trees_all_close(loss, 0.001 * 100 * kl, rtol=1e-4)
    chex.assert_trees_all_close(vb_small, jnp.zeros(2), atol=1e-5)  # v = -1: beta~, no KL
    # The mean's gradient is the MSE's alone (stop-gradient in the VLB term).
    chex.assert_trees_all_close(grad[..., :1], 2 * delta / 16, rtol=1e-4, atol=1e-7)
    assert float(jnp.abs(grad[..., 1:]).sum()) > 0


# Samplers.


def test_ddim_eta1_on_full_schedule_is_ddpm_ancestral():
    d = diffusion_of("linear", 50)
    t = samplers.sampler_timesteps(50, 0)
    a, b = samplers.ddpm_steps(d, t), samplers.ddim_steps(d, t, eta=1.0)
    for name in ("c_x0", "c_xt"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a.log_variance[1:], b.log_variance[1:], rtol=1e-6)
    x_T = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
    key = jax.random.PRNGKey(1)
    run = jax.jit(lambda steps: samplers.sample_loop(d, toy_model_fn, steps, x_T, key))
    chex.assert_trees_all_close(run(a), run(b), atol=1e-4)


def test_ddim_eta0_is_deterministic_and_eta_positive_injects_noise():
    d = diffusion_of("linear", 50)
    x_T = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))

    loop = jax.jit(lambda steps, key: samplers.sample_loop(d, toy_model_fn, steps, x_T, key))

    def run(eta, key):
        return loop(samplers.make_steps(d, "ddim", 10, eta), jax.random.PRNGKey(key))

    np.testing.assert_array_equal(run(0.0, 1), run(0.0, 2))
    assert float(jnp.abs(run(0.5, 1) - run(0.5, 2)).mean()) > 1e-2
    assert samplers.sampler_timesteps(50, 10).tolist() == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]


def test_learned_variance_ddpm_and_trajectory_shapes():
    d = diffusion_of("cosine", 20, variance="learned")
    x_T = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 1))

    def model_fn(x, t):  # eps and the variance channel v in [-1, 1]
        return jnp.concatenate([toy_model_fn(x, t), jnp.tanh(x)], axis=-1)

    steps = samplers.make_steps(d, "ddpm", 7, 0.0)
    x0, traj = jax.jit(lambda key: samplers.sample_loop(
        d, model_fn, steps, x_T, key, learned_variance=True, return_trajectory=True))(
            jax.random.PRNGKey(1))
    chex.assert_shape(x0, (3, 8, 8, 1))
    chex.assert_tree_all_finite(x0)
    chex.assert_shape([traj["x_t"], traj["x0"]], (7, 3, 8, 8, 1))
    assert traj["x_t"].dtype == jnp.uint8


# Model.


def test_cifar10_unet_has_35_7m_parameters():
    c = load_config("diffusion", "cifar10")
    model = create_unet(c.model, 3)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                            jnp.zeros((1,), jnp.int32))
    assert abs(count_params(shapes) - 35.7e6) < 0.1e6, count_params(shapes)


def test_guidance_scale_zero_is_the_plain_model_and_minus_one_the_unconditional():
    def apply(x, t, labels):  # a toy network whose output depends on the label
        return jnp.concatenate([x * (labels[:, None, None, None] + 1.0), -x], axis=-1)

    x = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 4, 1))
    t, labels = jnp.array([1, 20, 40]), jnp.array([0, 1, 2])

    @jax.jit
    def run(x):
        guided = {str(w): samplers.guided_model_fn(apply, labels, w, 3, 1)(x, t)
                  for w in (0.0, -1.0, 2.0)}
        return apply(x, t, labels), apply(x, t, jnp.full_like(labels, 3)), guided

    cond, uncond, guided = run(x)
    chex.assert_trees_all_close(guided["0.0"], cond)
    chex.assert_trees_all_close(guided["-1.0"][..., :1], uncond[..., :1], atol=1e-6)
    chex.assert_trees_all_close(guided["2.0"][..., :1], 3 * cond[..., :1] - 2 * uncond[..., :1],
                                atol=1e-5)
    chex.assert_trees_all_close(guided["2.0"][..., 1:], cond[..., 1:])  # variance not guided


def test_class_conditional_unet_has_a_null_class_and_bfloat16_compute():
    model = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
                 out_ch=1, num_classes=10, num_groups=4, dtype=jnp.bfloat16)
    x, t, labels = jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,), jnp.int32), jnp.zeros((2,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t, labels)
    chex.assert_shape(params["params"]["class_emb"]["embedding"], (11, 32))  # + null class
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert jax.eval_shape(model.apply, params, x, t, labels).dtype == jnp.float32
    conv_dtypes = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                conv_dtypes.add(eqn.outvars[0].aval.dtype)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(model.apply)(params, x, t, labels).jaxpr)
    assert conv_dtypes == {jnp.dtype(jnp.bfloat16)}


# Config validation.


def test_unknown_names_and_impossible_guidance_are_user_errors():
    c = tiny_config()
    c.diffusion.objective = "score_matching"
    with pytest.raises(UserError, match="score_matching.*eps.*hybrid"):
        diffusion.validate(c)
    c = tiny_config()
    c.diffusion.loss_weighting = "p2"
    with pytest.raises(UserError, match="min_snr"):
        diffusion.validate(c)
    c = tiny_config()
    c.sampler.guidance_scale = 2.0
    with pytest.raises(UserError, match="class-conditional"):
        diffusion.validate(c)
    c.model.num_classes = 10
    diffusion.validate(c)
    with pytest.raises(UserError, match="num_timesteps"):
        c.diffusion.num_timesteps = 10  # linear betas scaled by 100 reach 2.0
        diffusion.create(c, INFO)


# The loop: one short digits run shared by the end-to-end tests.


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ddpm_digits"))
    c = tiny_config()
    state = train.train_and_evaluate(c, workdir)
    return c, workdir, state


def test_short_digits_run_lowers_the_loss(trained):
    _, workdir, _ = trained
    rows = [r for r in read_metrics(workdir) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [50, 100, 150, 200]
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"], (rows[0]["loss"], rows[-1]["loss"])


def test_sample_mode_writes_grid_and_npz(trained):
    c, workdir, _ = trained
    files = train.sample(c, workdir, 8)
    assert sorted(os.path.basename(f) for f in files) == ["samples.npz", "samples.png"]
    images = np.load(os.path.join(workdir, "samples.npz"))["images"]
    assert images.shape == (8, 8, 8, 1) and images.dtype == np.uint8
    assert images.std() > 0


def test_eval_mode_full_vlb_is_finite_and_positive(trained):
    c, workdir, _ = trained
    results = train.evaluate(c, workdir)
    for key in ("vlb_bpd", "vlb_bpd_est", "prior_bpd", "decoder_bpd"):
        assert np.isfinite(results[key]) and results[key] > 0, (key, results[key])
    assert results["vlb_bpd"] < 8.0  # better than uniform over 256 values
    # The stratified estimate targets the same sum (different noise; loose agreement).
    assert abs(results["vlb_bpd_est"] - results["vlb_bpd"]) < 0.5 * results["vlb_bpd"]


def test_eval_sample_quality_records_the_sampler(trained):
    c, workdir, _ = trained
    c = ml_collections.ConfigDict(c.to_dict())
    c.eval.fid_num_samples, c.eval.fid_batch_size, c.eval.vlb_timesteps = 40, 20, 0
    c.eval.num_batches = 1
    c.sampler.name, c.sampler.num_steps, c.sampler.eta = "ddim", 5, 0.5
    results = train.evaluate(c, workdir)
    assert np.isfinite(results["fd_digits"]) and results["fd_digits"] >= 0
    p = results["protocol"]
    assert (p["weights"], p["sampler"], p["sampler_steps"], p["sampler_eta"]) == (
        "ema", "ddim", 5, 0.5)
    assert p["num_samples"] == 40 and p["num_timesteps"] == 50
