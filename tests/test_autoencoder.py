"""The autoencoder family: shapes, KL, quantisers, SSIM, and a trained run used as a component."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aigc_jax import components, parallel, train
from aigc_jax.errors import UserError
from aigc_jax.methods.autoencoder import losses
from aigc_jax.models import quantizers as q
from aigc_jax.models.autoencoder import Autoencoder, downsampling_factor
from configs.autoencoder import get_config


@pytest.mark.parametrize("ch_mult", [(1,), (1, 2), (1, 2, 4), (1, 2, 2, 4)])
def test_downsampling_factor_and_latent_shapes(ch_mult):
    model = Autoencoder(image_channels=3, ch=8, ch_mult=ch_mult, num_res_blocks=1,
                        z_channels=4, embed_dim=3, moments=True, num_groups=4)
    x = jnp.zeros((2, 32, 32, 3))
    f = downsampling_factor(ch_mult)
    assert f == 2 ** (len(ch_mult) - 1)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    h = jax.eval_shape(lambda v: model.apply(v, x, method=Autoencoder.encode), variables)
    chex.assert_shape(h, (2, 32 // f, 32 // f, 6))  # mean and log-variance of 3 channels
    z = jnp.zeros((2, 32 // f, 32 // f, 3))
    out, _ = jax.eval_shape(lambda v: model.apply(v, z, method=Autoencoder.decode), variables)
    chex.assert_shape(out, (2, 32, 32, 3))


def test_kl_matches_closed_form_and_monte_carlo():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 2, 2, 2)).astype(np.float32)
    logvar = rng.normal(scale=0.5, size=(3, 2, 2, 2)).astype(np.float32)
    kl = np.asarray(losses.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    s = np.exp(0.5 * logvar.astype(np.float64))
    closed = (-np.log(s) + (s**2 + mean**2) / 2 - 0.5).reshape(3, -1).sum(-1)
    np.testing.assert_allclose(kl, closed, rtol=1e-5)
    # E_q[log q(z) - log p(z)] by sampling, for the first example.
    z = mean[0] + s[0] * rng.normal(size=(200_000, *mean.shape[1:]))
    log_q = -0.5 * ((z - mean[0]) / s[0]) ** 2 - np.log(s[0])
    log_p = -0.5 * z**2
    mc = (log_q - log_p).reshape(len(z), -1).sum(-1).mean()
    assert abs(mc - kl[0]) < 0.05


def test_straight_through_gradient_is_identity():
    z = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 4))
    codebook = jax.random.normal(jax.random.PRNGKey(1), (8, 4))
    w = jax.random.normal(jax.random.PRNGKey(2), z.shape)

    def f(z):
        z_q, _, _ = q.vector_quantize(z, codebook)
        return jnp.sum(w * z_q)

    z_q, idx, _ = q.vector_quantize(z, codebook)
    np.testing.assert_allclose(z_q, codebook[idx], atol=1e-6)  # forward: the nearest codes
    np.testing.assert_allclose(jax.grad(f)(z), w, atol=1e-6)  # backward: identity
    brute = jnp.argmin(((z[..., None, :] - codebook) ** 2).sum(-1), -1)
    np.testing.assert_array_equal(idx, brute)
    # The commitment loss moves only the encoder output; the codebook loss only the codebook.
    g_cb = jax.grad(lambda c: q.vector_quantize(z, c)[2]["commitment"])(codebook)
    np.testing.assert_allclose(g_cb, 0.0)
    g_z = jax.grad(lambda v: q.vector_quantize(v, codebook)[2]["codebook"])(z)
    np.testing.assert_allclose(g_z, 0.0)


def test_ema_codebook_update_matches_hand_computation():
    codebook = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], np.float32)
    stats = q.init_vq_stats(jnp.asarray(codebook))
    z = np.array([[0.2, 0.0], [-0.2, 0.4], [1.2, 0.8], [0.1, 0.1]], np.float32)
    idx = np.array([0, 0, 1, 0])
    decay, eps = 0.9, 1e-5
    new_cb, new_stats = q.ema_codebook_update(stats, jnp.asarray(z), jnp.asarray(idx), decay, eps)
    counts = np.array([3.0, 1.0, 0.0])
    sums = np.stack([z[idx == k].sum(0) if (idx == k).any() else np.zeros(2) for k in range(3)])
    ema_n = 0.9 * 1.0 + 0.1 * counts
    ema_m = 0.9 * codebook + 0.1 * sums
    n = ema_n.sum()
    smoothed = (ema_n + eps) / (n + 3 * eps) * n
    np.testing.assert_allclose(new_stats["ema_count"], ema_n, rtol=1e-6)
    np.testing.assert_allclose(new_stats["ema_sum"], ema_m, rtol=1e-6)
    np.testing.assert_allclose(new_cb, ema_m / smoothed[:, None], rtol=1e-5)


def test_dead_code_is_restarted_from_batch_outputs():
    codebook = jnp.array([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0]])
    stats = q.init_vq_stats(codebook)
    z = jnp.array([[0.1, 0.0], [0.9, 1.1], [1.0, 0.9]])
    rng = jax.random.PRNGKey(0)
    for step in range(3):
        idx = q.nearest_code(z, codebook)
        counts = q.code_counts(idx, 3)
        assert float(counts[2]) == 0.0  # the far code is never chosen
        codebook, stats, restarted = q.restart_dead_codes(codebook, stats, counts, z,
                                                          jax.random.fold_in(rng, step), 3)
        assert int(restarted) == (1 if step == 2 else 0)
    assert any(np.allclose(codebook[2], row) for row in np.asarray(z))  # re-drawn from z
    np.testing.assert_allclose(codebook[:2], [[0.0, 0.0], [1.0, 1.0]])  # live codes kept
    assert int(stats["unused_steps"][2]) == 0 and float(stats["ema_count"][2]) == 1.0


def test_fsq_round_trips_its_grid():
    levels = (8, 5, 5, 3)
    k = int(np.prod(levels))
    idx = jnp.arange(k)
    codes = q.fsq_indices_to_codes(idx, levels)
    assert codes.shape == (k, 4) and len(np.unique(np.asarray(codes), axis=0)) == k
    np.testing.assert_array_equal(q.fsq_codes_to_indices(codes, levels), idx)
    assert float(jnp.abs(codes).max()) <= 1.0
    z = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (500, 4))
    quantized, qidx = q.fsq_quantize(z, levels)
    np.testing.assert_allclose(q.fsq_indices_to_codes(qidx, levels), quantized, atol=1e-6)
    for c, lv in enumerate(levels):  # each channel takes exactly L values
        assert len(np.unique(np.round(np.asarray(quantized[:, c]), 5))) == lv


@pytest.mark.parametrize("shape", [(4, 32, 32, 1), (3, 16, 16, 3)])
def test_ssim_matches_skimage(shape):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    smooth = np.clip(x.astype(np.float64) * 0.7 + 40 + rng.normal(0, 20, shape), 0, 255)
    y = smooth.astype(np.uint8)
    ours = np.asarray(losses.ssim(jnp.asarray(x), jnp.asarray(y)))
    kw = dict(data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
              use_sample_covariance=False)
    ref = [structural_similarity(a, b, **kw) for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    np.testing.assert_allclose(losses.ssim(jnp.asarray(x), jnp.asarray(x)), 1.0, atol=1e-6)
    mse = ((x.astype(np.float64) - y) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(losses.psnr(jnp.asarray(x), jnp.asarray(y)),
                               10 * np.log10(255.0**2 / mse), rtol=1e-5)


def test_adaptive_weight_uses_exact_last_layer_gradient():
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 2))
    target = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 5, 2))

    def conv(k):
        return jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def loss(x):
        return jnp.sum(jnp.abs(x - target))

    direct = jax.grad(lambda k: loss(conv(k)))(kernel)
    np.testing.assert_allclose(losses.last_layer_grad(h, kernel, jax.grad(loss)(conv(kernel))),
                               direct, rtol=1e-5, atol=1e-5)


def test_validation_errors():
    from aigc_jax.methods.autoencoder import validate

    c = get_config("tiny")
    c.autoencoder.perceptual = "lpips"
    with pytest.raises(UserError, match="no pretrained perceptual"):
        validate(c)
    c = get_config("tiny")
    c.autoencoder.regularizer = "vqq"
    with pytest.raises(UserError, match="regularizer='vqq' is unknown"):
        validate(c)
    from aigc_jax.methods.autoencoder.method import make_context

    c = get_config("tiny")
    c.model.ch_mult = (1, 2, 2, 2, 2)  # f = 16 does not divide 8x8
    with pytest.raises(UserError, match="f=16"):
        make_context(c, {"image_shape": [8, 8, 1]})


def _round_trip_psnr(bundle, weights, images):
    encode = jax.jit(bundle.encode)
    decode = jax.jit(bundle.decode)
    x = decode(weights, encode(weights, jnp.asarray(images)))
    recon = np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return float(np.mean(np.asarray(losses.psnr(jnp.asarray(images), jnp.asarray(recon)))))


@pytest.mark.parametrize("regularizer", ["kl", "vq"])
def test_trained_run_loads_as_component_with_eval_psnr(tmp_path, regularizer):
    config = get_config("tiny")
    config.autoencoder.regularizer = regularizer
    if regularizer == "kl":
        config.autoencoder.disc_weight = 0.5  # the PatchGAN path, adaptive weight from step 0
    workdir = str(tmp_path / regularizer)
    train.train_and_evaluate(config, workdir)
    results = train.evaluate(config, workdir)
    with open(os.path.join(workdir, "latent_stats.json")) as f:
        stats = json.load(f)
    assert stats["scale_factor"] == pytest.approx(1.0 / stats["latent_std"])
    assert results["scale_factor"] == pytest.approx(stats["scale_factor"])
    comp = components.load("autoencoder", ml_collections.ConfigDict({"workdir": workdir}),
                           parallel.create_mesh())
    bundle = comp.bundle
    assert bundle.scale_factor == pytest.approx(stats["scale_factor"])
    test_ds = train.Run(config, workdir).test_dataset()
    images = np.asarray(test_ds.images)
    assert _round_trip_psnr(bundle, comp.weights, images) == pytest.approx(results["psnr"],
                                                                           abs=1e-3)
    z = jax.jit(bundle.encode)(comp.weights, jnp.asarray(images[:4]))
    chex.assert_shape(z, (4, *bundle.latent_shape))
    if regularizer == "vq":
        assert bundle.codebook_size == config.autoencoder.codebook_size
        assert 0.0 < results["codebook_usage"] <= 1.0
        idx = jax.jit(bundle.encode_indices)(comp.weights, jnp.asarray(images[:4]))
        chex.assert_shape(idx, (4, *bundle.latent_shape[:2]))
        np.testing.assert_allclose(jax.jit(bundle.decode_indices)(comp.weights, idx),
                                   jax.jit(bundle.decode)(comp.weights, z), atol=1e-5)
    else:
        assert "kl" in results and results["ssim"] <= 1.0
