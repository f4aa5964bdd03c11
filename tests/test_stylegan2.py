"""StyleGAN2: demodulation, equalised lr, minibatch stddev, truncation and style mixing, R1 and
path length against finite differences, the lazy schedule, exact resume, the CLI figures and
config errors. Everything on `configs/stylegan2.py:tiny` (8x8 digits, 4 style inputs)."""

import os

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config
from helpers import assert_same_state, cli

from aigc_jax import config_validation, train
from aigc_jax.errors import UserError
from aigc_jax.methods.gan.losses import r1_penalty
from aigc_jax.methods.stylegan2 import figures, method, regularizers, styles
from aigc_jax.models import stylegan2 as sg2
from aigc_jax.models.layers.resample import conv_same

INFO = {"image_shape": [8, 8, 1], "num_classes": 10}


def tiny(num_steps: int = 40, quiet: bool = False):
    """`configs/stylegan2.py:tiny` for `num_steps`; `quiet`: no periodic eval or samples."""
    c = load_config("stylegan2", "tiny")
    c.train.num_steps = num_steps
    if quiet:
        c.train.eval_every = c.train.sample_every = 0
    return c


@pytest.fixture(scope="module")
def setup():
    """The tiny method, a batch of digits-shaped images and an initial state."""
    c = tiny()
    ctx = method.make_context(c, INFO)
    m = method.create(c, INFO)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (16, 8, 8, 1)), jnp.uint8),
             "label": jnp.zeros((16,), jnp.int32)}
    state = jax.jit(m.init_state)(jax.random.PRNGKey(0), batch)
    # A w_avg away from zero, so truncation is not trivially the zero vector.
    state = state.replace(model_state={**state.model_state,
                                       "w_avg": jnp.linspace(-1.0, 1.0, ctx.w_dim)})
    return c, ctx, m, batch, state


# ---------------------------------------------------------------------------------------------
# Layers


def test_demodulated_kernels_have_unit_norm_and_match_the_fast_path():
    k = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 5, 7))
    s = jax.random.uniform(jax.random.PRNGKey(1), (2, 5), minval=0.2, maxval=3.0)
    w = sg2.modulated_kernel(k, s)
    chex.assert_shape(w, (2, 3, 3, 5, 7))
    np.testing.assert_allclose(jnp.sqrt(jnp.sum(w**2, axis=(1, 2, 3))), 1.0, rtol=1e-5)
    # The layer's scale-conv-scale path equals a per-sample convolution with those kernels.
    layer = sg2.ModulatedConv(7, 3)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 6, 5))
    wv = jax.random.normal(jax.random.PRNGKey(3), (2, 4))
    variables = layer.init(jax.random.PRNGKey(4), x, wv)
    styles_ = sg2.EqualDense(5, bias_init=1.0).apply(
        {"params": variables["params"]["affine"]}, wv)
    kernels = sg2.modulated_kernel(variables["params"]["kernel"] * sg2.equalized_scale(45),
                                   styles_)
    conv = lambda xi, ki: jax.lax.conv_general_dilated(
        xi[None], ki, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))[0]
    np.testing.assert_allclose(layer.apply(variables, x, wv), jax.vmap(conv)(x, kernels),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_im2col_conv_matches_lax_with_first_and_second_derivatives(k):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, 3, 4))
    np.testing.assert_allclose(conv_same(x, kernel, "matmul"), conv_same(x, kernel, "lax"),
                               rtol=1e-4, atol=1e-5)

    def r1_like(kern, impl):  # ||d/dx sum(tanh(conv))||^2: the double backprop R1 and PL need
        gx = jax.grad(lambda v: jnp.tanh(conv_same(v, kern, impl)).sum())(x)
        return jnp.sum(gx**2)

    np.testing.assert_allclose(jax.grad(r1_like)(kernel, "matmul"),
                               jax.grad(r1_like)(kernel, "lax"), rtol=2e-3, atol=1e-3)


def test_both_conv_impls_give_the_same_networks(setup):
    _, ctx, _, _, state = setup
    z = jax.random.normal(jax.random.PRNGKey(5), (4, ctx.latent_dim))
    gp, dp = state.params["generator"], state.params["discriminator"]
    outs = []
    for impl in ("lax", "matmul"):
        g, d = ctx.generator.clone(conv_impl=impl), ctx.discriminator.clone(conv_impl=impl)
        x = g.apply({"params": gp}, z, jax.random.PRNGKey(6))
        outs.append((x, r1_penalty(lambda v, d=d: d.apply({"params": dp}, v), x)))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-3)


def test_use_noise_false_drops_the_noise_inputs(setup):
    _, ctx, _, _, _ = setup
    g = ctx.generator.clone(use_noise=False)
    z = jax.random.normal(jax.random.PRNGKey(0), (2, ctx.latent_dim))
    params = g.init(jax.random.PRNGKey(1), z, None)["params"]
    names = flax.traverse_util.flatten_dict(params, sep="/")
    assert names and not any(name.endswith("noise_strength") for name in names)
    a = g.apply({"params": params}, z, jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, g.apply({"params": params}, z, jax.random.PRNGKey(3)))


def test_equalized_lr_scales_the_runtime_weight():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 20))
    layer = sg2.EqualDense(6, lr_mul=0.01)
    params = layer.init(jax.random.PRNGKey(1), x)["params"]
    # Stored weights are N(0, 1 / lr_mul^2); the run-time weight is W lr_mul / sqrt(fan_in).
    assert 50 < float(jnp.std(params["kernel"])) < 200
    params = {"kernel": jnp.ones((20, 6)), "bias": jnp.full((6,), 2.0)}
    np.testing.assert_allclose(layer.apply({"params": params}, x),
                               x @ (jnp.ones((20, 6)) * 0.01 / np.sqrt(20)) + 0.02, rtol=1e-5)
    conv = sg2.EqualConv(4, 3, activation=False)
    xi = jax.random.normal(jax.random.PRNGKey(2), (1, 5, 5, 2))
    kernel = jax.random.normal(jax.random.PRNGKey(3), (3, 3, 2, 4))
    out = conv.apply({"params": {"kernel": kernel, "bias": jnp.zeros(4)}}, xi)
    ref = jax.lax.conv_general_dilated(xi, kernel / np.sqrt(3 * 3 * 2), (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_matches_numpy():
    x = np.random.default_rng(0).normal(size=(8, 3, 3, 6)).astype(np.float32)
    out = np.asarray(sg2.minibatch_stddev(jnp.asarray(x), group_size=4, num_features=2))
    g, m = 4, 2
    expected = np.zeros((8, 2))
    for n in range(8):  # sample n is in the group {n % m, n % m + m, ...}
        members = x[[n % m + m * i for i in range(g)]].reshape(g, 3, 3, 2, 3)  # [G, H, W, F, c]
        expected[n] = np.sqrt(members.var(axis=0) + 1e-8).mean(axis=(0, 1, 3))
    np.testing.assert_allclose(out[..., :6], x)
    np.testing.assert_allclose(out[..., 6:], np.broadcast_to(expected[:, None, None], (8, 3, 3, 2)),
                               rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Truncation and style mixing


def test_truncation_zero_gives_the_average_w_image(setup):
    _, ctx, _, _, state = setup
    params, w_avg = state.ema_params["generator"], state.model_state["w_avg"]
    z = jax.random.normal(jax.random.PRNGKey(5), (4, ctx.latent_dim))
    x = styles.generate(ctx, params, z, w_avg, 0.0, None)
    mean_image = styles.synthesize(ctx, params, styles.broadcast(ctx, w_avg[None]), None)
    np.testing.assert_allclose(x, jnp.broadcast_to(mean_image, x.shape), atol=1e-6)
    assert float(jnp.std(styles.generate(ctx, params, z, w_avg, 1.0, None), axis=0).mean()) > 0


def test_crossover_zero_is_the_second_seed_and_full_crossover_the_first(setup):
    _, ctx, _, _, state = setup
    a, b, mixed = figures.mix_pair(ctx, state, 3, 11, 0)
    np.testing.assert_array_equal(mixed, b)
    assert not np.array_equal(a, b)
    a, _, mixed = figures.mix_pair(ctx, state, 3, 11, ctx.num_ws)
    np.testing.assert_array_equal(mixed, a)


def test_layer_groups_follow_the_paper():
    assert styles.layer_groups(1024) == {"coarse": (0, 4), "middle": (4, 8), "fine": (8, 18)}
    assert styles.layer_groups(32) == {"coarse": (0, 4), "middle": (4, 6), "fine": (6, 8)}
    assert sg2.num_ws(32) == 8 and sg2.num_ws(1024) == 18


# ---------------------------------------------------------------------------------------------
# Regularisers


def test_r1_matches_finite_differences_on_the_tiny_discriminator(setup):
    _, ctx, _, batch, state = setup
    d_params = state.params["discriminator"]
    x = (jnp.asarray(batch["image"][:4], jnp.float32) / 127.5 - 1.0)
    d_fn = lambda v: styles.discriminate(ctx, d_params, v)
    r1 = float(r1_penalty(d_fn, x))
    # Central differences of sum_i D(x)_i (the minibatch-stddev layer couples the examples).
    h, flat = 1e-2, x.reshape(-1)
    eye = jnp.eye(flat.size)
    total = lambda v: d_fn(v.reshape(x.shape)).sum()
    fd = jax.jit(jax.vmap(lambda e: (total(flat + h * e) - total(flat - h * e)) / (2 * h)))(eye)
    expected = float(jnp.sum(fd**2)) / 4
    np.testing.assert_allclose(r1, expected, rtol=2e-2)


def test_path_lengths_by_hand_and_by_finite_differences(setup):
    _, ctx, _, _, state = setup
    rng = jax.random.PRNGKey(7)
    # By hand: g(ws) = tanh(ws M) reshaped to an image; J^T y = M (y (1 - g^2)).
    m = jax.random.normal(jax.random.PRNGKey(8), (2 * 3, 4 * 4 * 2)) * 0.3
    ws = jax.random.normal(jax.random.PRNGKey(9), (5, 2, 3))
    g = lambda v: jnp.tanh(v.reshape(5, -1) @ m).reshape(5, 4, 4, 2)
    y = jax.random.normal(rng, (5, 4, 4, 2)) / 4.0
    jt_y = ((y * (1 - g(ws) ** 2)).reshape(5, -1) @ m.T).reshape(5, 2, 3)
    expected = jnp.sqrt(jnp.mean(jnp.sum(jt_y**2, axis=2), axis=1))
    lengths = regularizers.path_lengths(g, ws, rng)
    np.testing.assert_allclose(lengths, expected, rtol=1e-5)
    penalty, new_mean = regularizers.path_length_penalty(lengths, jnp.asarray(0.5), 0.01)
    a = 0.5 + 0.01 * (float(expected.mean()) - 0.5)
    np.testing.assert_allclose(new_mean, a, rtol=1e-6)
    np.testing.assert_allclose(penalty, np.mean((np.asarray(expected) - a) ** 2), rtol=1e-5)
    # The real synthesis network (no noise) against central differences in ws.
    params = state.params["generator"]
    synth = lambda v: styles.synthesize(ctx, params, v, None)
    ws = styles.broadcast(ctx, jax.random.normal(jax.random.PRNGKey(10), (2, ctx.w_dim)))
    lengths = regularizers.path_lengths(synth, ws, rng)
    y = jax.random.normal(rng, (2, 8, 8, 1)) / 8.0
    flat, h = ws.reshape(-1), 1e-2
    obj = lambda v: jnp.sum(synth(v.reshape(ws.shape)) * y)
    fd = jax.jit(jax.vmap(lambda e: (obj(flat + h * e) - obj(flat - h * e)) / (2 * h)))(
        jnp.eye(flat.size)).reshape(ws.shape)
    np.testing.assert_allclose(lengths, jnp.sqrt(jnp.mean(jnp.sum(fd**2, 2), 1)), rtol=2e-2)


def test_lazy_adam_correction_and_ema_half_life():
    c = tiny()
    g = regularizers.lazy_optimizer_config(c.optimizer, 4)
    np.testing.assert_allclose([g.learning_rate, g.b1, g.b2],
                               [0.002 * 0.8, 0.0, 0.99**0.8])
    d = regularizers.lazy_optimizer_config(c.optimizer, 16)
    np.testing.assert_allclose(d.b2, 0.99 ** (16 / 17))
    beta = method.ema_beta(32, 10.0, jnp.asarray(100))
    np.testing.assert_allclose(beta, 0.5 ** (32 / 10_000), rtol=1e-6)
    # Ramp-up: at step 10 of batch 32 the half-life is at most 0.05 x 320 images.
    np.testing.assert_allclose(method.ema_beta(32, 10.0, jnp.asarray(10), 0.05), 0.5 ** 2.0)


def test_lazy_regularisers_run_on_the_right_steps_only(setup):
    _, _, m, batch, state = setup
    step = jax.jit(m.train_step)
    r1_steps, pl_steps = [], []
    for i in range(33):  # steps 0..32, intervals 16 (R1) and 4 (path length)
        state, metrics = step(state, batch)
        if float(metrics["r1_applied"]):
            r1_steps.append(i)
            assert float(metrics["r1"]) > 0
        if float(metrics["pl_applied"]):
            pl_steps.append(i)
        assert np.isfinite(float(metrics["loss"]))
    assert r1_steps == [0, 16, 32]
    assert pl_steps == list(range(0, 33, 4))

    def counts(tree):  # Adam's step counters: one update per main step plus one per reg step
        return {int(x) for x in jax.tree.leaves(tree)
                if np.ndim(x) == 0 and np.issubdtype(np.asarray(x).dtype, np.integer)}

    assert counts(state.opt_state["discriminator"]) == {33 + 3}
    assert counts(state.opt_state["generator"]) == {33 + 9}
    assert float(state.model_state["pl_mean"]) > 0
    assert not np.allclose(state.model_state["w_avg"], jnp.linspace(-1.0, 1.0, 16))


# ---------------------------------------------------------------------------------------------
# Runs


def test_resume_is_exact(tmp_path):
    reference = train.train_and_evaluate(tiny(24, True), str(tmp_path / "reference"))
    c = tiny(24, True)
    c.train.stop_after = 12
    stopped = train.train_and_evaluate(c, str(tmp_path / "resumed"))
    assert int(stopped.step) == 12
    resumed = train.train_and_evaluate(tiny(24, True), str(tmp_path / "resumed"))
    assert int(resumed.step) == 24
    assert_same_state(reference, resumed)


def test_cli_train_then_sample_writes_the_figures(tmp_path):
    workdir = str(tmp_path / "run")
    out = cli("--config=configs/stylegan2.py:tiny", f"--workdir={workdir}",
              "--config.train.num_steps=20", "--config.train.eval_every=0",
              "--config.train.sample_every=0")
    assert out.returncode == 0, out.stderr[-2000:]
    for _ in range(2):  # a second call writes new files next to the first ones
        out = cli("--config=configs/stylegan2.py:tiny", f"--workdir={workdir}", "--mode=sample",
                  "--num_samples=8", "--config.sampler.truncation_psi=0.7")
        assert out.returncode == 0, out.stderr[-2000:]
    names = set(os.listdir(os.path.join(workdir, "figures")))
    assert {"style_mixing.png", "truncation.png", "mix_pair.png", "style_mixing_1.png",
            "truncation_1.png", "mix_pair_1.png"} <= names
    assert {"samples.png", "samples_1.png"} <= set(os.listdir(workdir))


def test_ppl_is_positive_and_reported(setup):
    c, ctx, _, _, state = setup
    out = method.quality.perceptual_path_length(ctx, state, jax.random.PRNGKey(0), c)
    assert out["ppl_w"] > 0 and out["ppl_protocol"]["epsilon"] == 1e-4


@pytest.mark.parametrize("key, value, match", [
    ("stylegan.r1_interval", -16, "r1_interval"),
    ("stylegan.pl_interval", 0, "pl_interval"),
    ("sampler.crossover", 5, "crossover"),  # 8x8 has 4 style inputs
    ("stylegan.style_mixing_prob", 1.5, "style_mixing_prob"),
    ("model.mbstd_group_size", 3, "mbstd_group_size"),
    ("data.image_size", 12, "power-of-two"),
])
def test_bad_values_are_one_line_errors(key, value, match):
    c = tiny()
    section, leaf = key.split(".")
    c[section][leaf] = value
    info = dict(INFO)
    if key == "data.image_size":
        info["image_shape"] = [12, 12, 1]
    with pytest.raises(UserError, match=match) as e:
        config_validation.validate(c)
        method.create(c, info)
    assert "\n" not in str(e.value)


def test_conv_impl_may_change_after_training_but_noise_may_not():
    from aigc_jax import run_config
    assert run_config.is_safe("model.conv_impl")
    assert not run_config.is_safe("model.use_noise")
