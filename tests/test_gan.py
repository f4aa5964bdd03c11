"""GAN: losses and penalties in closed form, spectral norm, BatchNorm state, a short digits run
that moves samples toward the data, the divergence alarm, and sample mode's EMA grid."""

import logging as pylogging
import os

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from aigc_jax import train
from aigc_jax.logging import read_metrics
from aigc_jax.methods.gan import method as gan
from aigc_jax.methods.gan.losses import LOSSES, gradient_penalty, r1_penalty
from aigc_jax.models.dcgan import DCGANDiscriminator, DCGANGenerator, num_upsamplings
from aigc_jax.models.layers.resample import conv_down2, conv_up2
from aigc_jax.state import TrainState

INFO = {"image_shape": [8, 8, 1], "num_classes": 10}


def tiny_gan_config(num_steps: int = 200, num_classes: int = 0):
    """`configs/gan.py:tiny` (small widths, seconds of training) for `num_steps` steps."""
    c = load_config("gan", "tiny")
    c.model.num_classes = num_classes
    c.train.num_steps = num_steps
    c.train.eval_every = num_steps
    c.train.sample_every = num_steps
    return c


# ---------------------------------------------------------------------------------------------
# Losses and penalties


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


REAL = np.array([0.5, 2.0, -1.0], np.float32)
FAKE = np.array([-2.0, 0.0, 1.5], np.float32)


# name -> (d value, dd/dreal, dd/dfake, g value, dg/dfake), written out by hand (B = 3).
CLOSED_FORMS = {
    "non_saturating": (np.log1p(np.exp(-REAL)).mean() + np.log1p(np.exp(FAKE)).mean(),
                       -_sigmoid(-REAL) / 3, _sigmoid(FAKE) / 3,
                       np.log1p(np.exp(-FAKE)).mean(), -_sigmoid(-FAKE) / 3),
    # relu(1 - r) = [0.5, 0, 2], relu(1 + f) = [0, 1, 2.5]
    "hinge": (2.5 / 3 + 3.5 / 3, np.array([-1, 0, -1]) / 3, np.array([0, 1, 1]) / 3,
              -FAKE.mean(), -np.ones(3) / 3),
    "wgan_gp": (FAKE.mean() - REAL.mean(), -np.ones(3) / 3, np.ones(3) / 3,
                -FAKE.mean(), -np.ones(3) / 3),
    "least_squares": (0.5 * ((REAL - 1) ** 2).mean() + 0.5 * (FAKE**2).mean(),
                      (REAL - 1) / 3, FAKE / 3, 0.5 * ((FAKE - 1) ** 2).mean(), (FAKE - 1) / 3),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_values_and_gradients_match_closed_forms(name):
    loss = LOSSES[name]
    d, d_real, d_fake, g, g_fake = CLOSED_FORMS[name]
    r, f = jnp.asarray(REAL), jnp.asarray(FAKE)
    np.testing.assert_allclose(loss.d(r, f), d, rtol=1e-5)
    np.testing.assert_allclose(loss.g(f), g, rtol=1e-5)
    grad_r, grad_f = jax.grad(loss.d, argnums=(0, 1))(r, f)
    np.testing.assert_allclose(grad_r, d_real, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_f, d_fake, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.grad(loss.g)(f), g_fake, rtol=1e-5, atol=1e-7)


def test_unknown_loss_lists_known_ones():
    c = tiny_gan_config()
    c.loss = "minimax_v2"
    with pytest.raises(ValueError, match="hinge"):
        gan.validate(c)


def _critic(w):
    """A small nonlinear critic on [B, 2, 2, 1] inputs: D(x) = sum tanh(x W) per example."""
    def d_fn(x):
        return jnp.tanh(x.reshape(x.shape[0], -1) @ w).sum(-1)
    return d_fn


def test_penalties_on_a_linear_critic_have_closed_forms():
    w = jnp.array([0.3, -1.2, 2.0, 0.5])
    d_fn = lambda x: x.reshape(x.shape[0], -1) @ w  # grad = w everywhere
    x_real = jax.random.normal(jax.random.PRNGKey(0), (5, 2, 2, 1))
    x_fake = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 2, 1))
    norm = float(jnp.linalg.norm(w))
    np.testing.assert_allclose(r1_penalty(d_fn, x_real), norm**2, rtol=1e-5)
    np.testing.assert_allclose(gradient_penalty(d_fn, x_real, x_fake, jax.random.PRNGKey(2)),
                               (norm - 1) ** 2, rtol=1e-5)


def test_gradient_penalty_matches_finite_differences():
    w = jax.random.normal(jax.random.PRNGKey(3), (4, 3)) * 0.7
    x_real = jax.random.normal(jax.random.PRNGKey(4), (6, 2, 2, 1))
    x_fake = jax.random.normal(jax.random.PRNGKey(5), (6, 2, 2, 1))
    key = jax.random.PRNGKey(6)
    gp = gradient_penalty(_critic(w), x_real, x_fake, key)
    # The same interpolates, with dD/dx from central differences instead of autodiff.
    eps = jax.random.uniform(key, (6, 1, 1, 1))
    x_hat = np.asarray(eps * x_real + (1 - eps) * x_fake, np.float64).reshape(6, 4)
    w64, h = np.asarray(w, np.float64), 1e-5
    d64 = lambda x: np.tanh(x @ w64).sum(-1)
    fd = np.stack([(d64(x_hat + h * e) - d64(x_hat - h * e)) / (2 * h) for e in np.eye(4)], 1)
    expected = np.mean((np.linalg.norm(fd, axis=1) - 1) ** 2)
    np.testing.assert_allclose(gp, expected, rtol=1e-4)
    # Double backprop: d gp / d W against central differences of the penalty in W.
    grad_w = jax.grad(lambda v: gradient_penalty(_critic(v), x_real, x_fake, key))(w)
    hw = 1e-2
    for i, j in [(0, 0), (2, 1), (3, 2)]:
        e = jnp.zeros_like(w).at[i, j].set(hw)
        num = (gradient_penalty(_critic(w + e), x_real, x_fake, key)
               - gradient_penalty(_critic(w - e), x_real, x_fake, key)) / (2 * hw)
        np.testing.assert_allclose(grad_w[i, j], num, rtol=2e-2, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("side,channels,min_side", [(8, 1, 2), (28, 1, 4), (32, 3, 4),
                                                    (64, 3, 4)])
def test_dcgan_shapes_for_each_size(side, channels, min_side):
    n, s0 = num_upsamplings(side, min_side)
    assert s0 * 2**n == side
    g = DCGANGenerator((side, side, channels), 8, num_classes=10, min_side=min_side)
    d = DCGANDiscriminator(8, num_classes=10, min_side=min_side)
    z, y = jnp.ones((2, 16)), jnp.array([1, 7])
    x = jax.eval_shape(lambda: g.init_with_output(jax.random.PRNGKey(0), z, y)[0])
    chex.assert_shape(x, (2, side, side, channels))
    logits = jax.eval_shape(lambda: d.init_with_output(jax.random.PRNGKey(0),
                                                       jnp.zeros(x.shape), y)[0])
    chex.assert_shape(logits, (2,))


def test_matmul_convolutions_equal_xla_convolutions():
    k = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 3, 5))
    for fn, side in [(conv_up2, 7), (conv_down2, 4)]:  # 7 -> 14 as in the 28x28 G
        x = jax.random.normal(jax.random.PRNGKey(0), (2, side, side, 3))

        @jax.jit
        def both(x_, k_, f=fn):  # outputs and gradients of both implementations
            def loss(a, b, impl):
                return jnp.sum(jnp.sin(f(a, b, impl)))
            return {impl: (f(x_, k_, impl), jax.grad(loss, (0, 1))(x_, k_, impl))
                    for impl in ("matmul", "lax")}

        out = both(x, k)
        chex.assert_trees_all_close(out["matmul"], out["lax"], atol=1e-4)
    # Same parameters as flax's layers: the ConvTranspose of the paper, bit for bit in layout.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    layer = nn.ConvTranspose(5, (4, 4), (2, 2), "SAME", use_bias=False)
    chex.assert_trees_all_close(layer.apply({"params": {"kernel": k}}, x),
                                conv_up2(x, k, "matmul"), atol=1e-4)
    layer = nn.Conv(5, (4, 4), (2, 2), "SAME", use_bias=False)
    chex.assert_trees_all_close(layer.apply({"params": {"kernel": k}}, x),
                                conv_down2(x, k, "matmul"), atol=1e-4)


def test_sngan_matches_the_paper_sizes():
    c = load_config("gan", "cifar10_sngan")
    ctx = gan.make_context(c, {"image_shape": [32, 32, 3], "num_classes": 10})
    z, x = jnp.ones((2, 128)), jnp.ones((2, 32, 32, 3))
    g_vars = jax.eval_shape(ctx.generator.init, jax.random.PRNGKey(0), z)
    d_vars = jax.eval_shape(ctx.discriminator.init, jax.random.PRNGKey(0), x)
    count = lambda t: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(t["params"]))
    # Miyato et al.'s CIFAR ResNet: about 4.3M parameters in G and 1.0M in D.
    assert 4.0e6 < count(g_vars) < 4.5e6, count(g_vars)
    assert 0.9e6 < count(d_vars) < 1.1e6, count(d_vars)
    x_out = jax.eval_shape(lambda: ctx.generator.init_with_output(jax.random.PRNGKey(0), z)[0])
    chex.assert_shape(x_out, (2, 32, 32, 3))
    # Conditional: per-class BatchNorm gains/biases in G (2 x 6 layers x 10 x 256), projection
    # embedding in D (10 x 128).
    c.model.num_classes = 10
    ctx = gan.make_context(c, {"image_shape": [32, 32, 3], "num_classes": 10})
    y = jnp.array([3, 7])
    g_cond = jax.eval_shape(ctx.generator.init, jax.random.PRNGKey(0), z, y)
    d_cond = jax.eval_shape(ctx.discriminator.init, jax.random.PRNGKey(0), x, y)
    assert count(d_cond) - count(d_vars) == 10 * 128
    assert count(g_cond) - count(g_vars) == 6 * 2 * (10 - 1) * 256, count(g_cond) - count(g_vars)


def test_spectral_norm_bounds_the_largest_singular_value():
    d = DCGANDiscriminator(16, spectral_norm=True, batch_norm=False, min_side=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
    v = jax.jit(lambda k: d.init(k, x, train=False, update_stats=False))(jax.random.PRNGKey(1))
    # Scale the kernels up so that un-normalised they are far from norm 1.
    params = jax.tree.map(lambda p: 5.0 * p, v["params"])

    def power_step(_, stats):
        _, new = d.apply({"params": params, "batch_stats": stats}, x, update_stats=True,
                         mutable=["batch_stats"])
        return new["batch_stats"]

    stats = jax.jit(lambda s0: jax.lax.fori_loop(0, 50, power_step, s0))(v["batch_stats"])
    checked = 0
    for sn_stats in stats.values():
        for key, sigma in sn_stats.items():
            if not key.endswith("/sigma"):
                continue
            layer, name, _ = key.split("/")
            w = np.asarray(params[layer][name]).reshape(-1, params[layer][name].shape[-1])
            top = np.linalg.svd(w, compute_uv=False)[0]
            assert top > 1.5  # the raw weight is far from norm 1...
            np.testing.assert_allclose(top / float(sigma), 1.0, rtol=1e-2)  # ...W / sigma is not
            checked += 1
    assert checked == 3  # two convolutions and the dense head


# ---------------------------------------------------------------------------------------------
# Train step, BatchNorm, sampling


def stepped_config():
    c = tiny_gan_config(num_classes=10)
    c.loss, c.gp_weight, c.r1_gamma, c.n_critic = "wgan_gp", 10.0, 1.0, 2
    c.model.d_norm = "spectral"
    c.optimizer.g_learning_rate, c.optimizer.d_learning_rate = 1e-4, 4e-4  # TTUR
    return c


@pytest.fixture(scope="module")
def stepped():
    """One compiled step covering the options at once: class-conditional, spectral-norm D,
    WGAN-GP + R1, n_critic=2, TTUR. Returns the method, the initial state, the state after
    one step and its metrics."""
    method = gan.create(stepped_config(), INFO)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (64, 8, 8, 1)), jnp.uint8),
             "label": jnp.asarray(rng.integers(0, 10, (64,)), jnp.int32)}
    state0 = jax.jit(method.init_state)(jax.random.PRNGKey(0), batch)
    state1, metrics = jax.jit(method.train_step)(state0, batch)
    return method, state0, state1, metrics


def test_train_step_updates_batchnorm_and_reports_metrics(stepped):
    _, state0, state1, metrics = stepped
    for key in ("loss", "d_loss", "g_loss", "d_real", "d_fake", "grad_norm", "d_grad_norm",
                "g_grad_norm", "d_loss_pinned", "divergence_alarm", "gp", "r1"):
        assert np.isfinite(float(metrics[key])), key
    np.testing.assert_allclose(metrics["grad_norm"], np.hypot(metrics["d_grad_norm"],
                                                              metrics["g_grad_norm"]), rtol=1e-5)
    for which in ("generator", "discriminator", "ema_generator"):
        before = jax.tree.leaves(state0.model_state[which])
        after = jax.tree.leaves(state1.model_state[which])
        changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
        assert before and any(changed), which
    assert int(state1.step) == 1


def test_sampling_uses_running_averages_and_fixed_noise(stepped):
    method, _, state1, _ = stepped
    small = np.asarray(method.sample(state1, jax.random.PRNGKey(0), 4))
    large = np.asarray(method.sample(state1, jax.random.PRNGKey(1), 16))
    chex.assert_shape(large, (16, 8, 8, 1))
    assert large.dtype == np.uint8
    # Batch-independent (BN in inference mode) and the same fixed latents whatever the key.
    np.testing.assert_array_equal(small, large[:4])
    assert large.std() > 0


def test_n_critic_discriminator_steps_per_generator_step(stepped):
    _, _, state1, metrics = stepped
    assert float(metrics["gp"]) >= 0 and float(metrics["r1"]) >= 0

    def counts(tree):  # Adam's step counters
        return {int(x) for x in jax.tree.leaves(tree)
                if np.ndim(x) == 0 and np.issubdtype(np.asarray(x).dtype, np.integer)}

    assert counts(state1.opt_state["discriminator"]) == {2}  # n_critic D updates...
    assert counts(state1.opt_state["generator"]) == {1}  # ...per G update


def test_label_embedding_generator_and_projection_discriminator_use_the_labels():
    g = DCGANGenerator((8, 8, 1), 8, num_classes=10)
    d = DCGANDiscriminator(8, num_classes=10, spectral_norm=True, batch_norm=False)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 16))
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 8, 8, 1), minval=-1, maxval=1)

    @jax.jit
    def run(y):  # G in inference mode (examples independent); D on the same images x
        g_vars = g.init(jax.random.PRNGKey(1), z, y, train=False)
        d_vars = d.init(jax.random.PRNGKey(2), x, y, update_stats=False)
        return g.apply(g_vars, z, y, train=False), d.apply(d_vars, x, y, update_stats=False)

    x0, logits0 = run(jnp.array([0, 1]))
    x1, logits1 = run(jnp.array([5, 1]))
    # Changing example 0's label changes its image and its projection logit, not example 1's.
    assert not np.allclose(x0[0], x1[0]) and np.allclose(x0[1], x1[1], atol=1e-6)
    assert not np.isclose(logits0[0], logits1[0]) and np.isclose(logits0[1], logits1[1])


def test_batch_size_must_split_into_critic_chunks():
    c = tiny_gan_config()
    c.n_critic = 5
    with pytest.raises(ValueError, match="n_critic"):
        gan.validate(c)


def test_interpolation_endpoints_and_shape(stepped, tmp_path):
    _, _, state1, _ = stepped
    ctx = gan.make_context(stepped_config(), INFO)
    images = np.asarray(gan.interpolate(ctx, state1, jax.random.PRNGKey(0), 3, 5))
    chex.assert_shape(images, (3, 5, 8, 8, 1))
    path = gan.write_interpolation(ctx, state1, jax.random.PRNGKey(0), str(tmp_path / "i.png"),
                                   3, 5)
    assert os.path.exists(path)
    z0, z1 = jnp.ones((2, 4)), -jnp.arange(8.0).reshape(2, 4)
    path_z = gan.slerp(z0, z1, jnp.linspace(0, 1, 4))
    np.testing.assert_allclose(path_z[:, 0], z0, atol=1e-5)
    np.testing.assert_allclose(path_z[:, -1], z1, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("gan_digits"))
    c = tiny_gan_config(num_steps=400)
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.eval.cache_dir = str(tmp_path_factory.mktemp("reference"))
    run = train.Run(c, workdir)
    initial = run.init_state()
    state = train.train_and_evaluate(c, workdir)
    return c, workdir, run, initial, state


def test_short_digits_run_moves_samples_toward_the_data(digits_run):
    c, workdir, run, initial, state = digits_run
    # Fréchet distance in the shipped digits classifier's features (the --mode=eval metric),
    # 500 EMA samples against the train split, before and after 400 iterations.
    key = jax.random.PRNGKey(0)
    before = run.method.evaluate(initial, None, key, 500)
    after = run.method.evaluate(state, None, key, 500)
    assert after["protocol"]["extractor"] == "digits"
    assert after["protocol"]["weights"] == "ema generator"
    assert after["fd_digits"] < 0.5 * before["fd_digits"], (before["fd_digits"],
                                                            after["fd_digits"])
    rows = read_metrics(workdir)
    evals = [r for r in rows if r["split"] == "eval"]
    assert len(evals) == 2 and {"d_real", "d_fake"} <= set(evals[0])
    assert all(np.isfinite(r["loss"]) and r["divergence_alarm"] == 0
               for r in rows if r["split"] == "train")


def test_sample_mode_writes_a_grid_from_the_ema_generator(digits_run):
    c, workdir, run, _, state = digits_run
    files = train.sample(c, workdir, 12)
    assert any(f.endswith(".png") for f in files)
    for name in ("interpolation.png", "progress.png"):  # figures written by sample mode
        assert os.path.join(workdir, "figures", name) in files
    images = np.load(os.path.join(workdir, "samples.npz"))["images"]
    chex.assert_shape(images, (12, 8, 8, 1))
    ctx = gan.make_context(c, run.info)
    z, y = gan.fixed_latents(ctx, 12)
    ema, _ = gan.generate(ctx, state.ema_params["generator"],
                          state.model_state["ema_generator"], z, y)
    raw, _ = gan.generate(ctx, state.params["generator"], state.model_state["generator"], z, y)
    np.testing.assert_array_equal(images, np.asarray(gan.to_uint8(ema)))
    assert not np.array_equal(images, np.asarray(gan.to_uint8(raw)))


def test_divergence_alarm_stops_with_last_good_checkpoint(tmp_path, caplog):
    c = tiny_gan_config(num_steps=400)
    c.optimizer.d_learning_rate = 10.0  # a discriminator that saturates within a few steps
    c.divergence_patience = 20
    c.train.checkpoint_every = 10
    c.train.log_every = 10
    c.train.sample_every = 0
    caplog.set_level(pylogging.ERROR)
    with pytest.raises(train.NonFiniteLoss, match="last good checkpoint"):
        train.train_and_evaluate(c, str(tmp_path))
    assert "GAN divergence alarm" in caplog.text and "pinned" in caplog.text
    saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    rows = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
    assert saved and saved[-1] == rows[-1]["step"] and np.isfinite(rows[-1]["loss"])
    assert rows[-1]["d_loss_pinned"] > 0  # the streak was building up before the alarm
    assert isinstance(train.Run(c, str(tmp_path)).restore_for_use(), TrainState)
