"""Tests for aigc_jax.evaluation: metrics, streaming statistics, extractors, sample_quality."""

import functools
import http.server
import json
import os
import threading

import chex
import jax
import ml_collections
import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util

from aigc_jax.data.images import create_image_dataset
from aigc_jax.errors import UserError
from aigc_jax.evaluation import (
    FeatureStats,
    RefStats,
    ScoreStats,
    classifier,
    compute_reference,
    frechet_distance,
    get_extractor,
    inception,
    inception_score,
    kernel_inception_distance,
    precision_recall,
    sample_quality,
    weights_io,
)
from aigc_jax.evaluation.metrics import frechet_distance_scipy
from aigc_jax.evaluation.reference import CONTENT_KEYS, data_key

DIGITS = ml_collections.ConfigDict({"name": "digits"})
# Counted from the pytorch-fid FID network: torchvision InceptionV3 without AuxLogits has
# 23,834,568 parameters with a 1000-way fc; the TF graph's 1008-way fc adds 8 * 2049.
INCEPTION_PARAMS = 23_850_960
INCEPTION_BN_STATS = 34_432  # running mean + var


def _gaussian(rng, n, d, shift=0.0):
    """n samples of a correlated Gaussian whose covariance depends only on d."""
    a = np.random.default_rng(d).normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ a + shift


# ---------------------------------------------------------------------------- Fréchet distance


def test_frechet_distance_of_a_set_with_itself_is_zero():
    x = _gaussian(np.random.default_rng(0), 500, 32)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_random_data():
    rng = np.random.default_rng(2)
    x, y = _gaussian(rng, 400, 24), _gaussian(rng, 400, 24, shift=0.3)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), direct, rtol=1e-8)
    np.testing.assert_allclose(frechet_distance_scipy(mu1, s1, mu2, s2), direct, rtol=1e-8)


def test_frechet_distance_is_real_and_finite_for_singular_covariances():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(10, 64)), rng.normal(size=(10, 64))  # rank 9 covariances
    d = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert isinstance(d, float) and np.isfinite(d) and d > 0


# ------------------------------------------------------------------------------ KID, IS, P/R


def test_kid_is_unbiased_for_equal_distributions_and_positive_for_shifted():
    rng = np.random.default_rng(4)
    same = [kernel_inception_distance(_gaussian(rng, 100, 16), _gaussian(rng, 100, 16),
                                      num_subsets=1, seed=i)[0] for i in range(40)]
    # Independent pairs: the mean over them is ~0 within its standard error, and some are < 0.
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert min(same) < 0
    kid, kid_std = kernel_inception_distance(_gaussian(rng, 300, 16),
                                             _gaussian(rng, 300, 16, shift=1.0), 20, 100)
    assert kid > 5 * kid_std and kid > 50 * np.std(same)


def test_precision_recall_identical_shifted_and_mode_dropping():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(600, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    p, r = precision_recall(real, rng.normal(size=(600, 8)) + 1.5)
    assert p < 0.5 and r < 0.5
    half = real[real[:, 0] > 0]  # realistic samples from half of the distribution
    p, r = precision_recall(real, half)
    assert p == 1.0 and r < 0.75


def _reference_inception_score(logits, splits):
    p = np.exp(logits - scipy.special.logsumexp(logits, axis=1, keepdims=True))
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp((part * (np.log(part) - np.log(py))).sum(1).mean()))
    return np.mean(scores), np.std(scores)


def test_inception_score_limits_and_reference_formula():
    assert inception_score(np.zeros((50, 10)), splits=5)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(100) % 10] * 50.0  # sure of each class, classes balanced
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)
    logits = np.random.default_rng(6).normal(size=(1000, 20)) * 2
    np.testing.assert_allclose(inception_score(logits, 10),
                               _reference_inception_score(logits, 10), rtol=1e-10)


def test_streaming_statistics_equal_one_shot():
    rng = np.random.default_rng(7)
    x = _gaussian(rng, 1000, 12, shift=3.0).astype(np.float32)
    a, b = FeatureStats(12, max_raw=300), FeatureStats(12, max_raw=300)
    for chunk in np.array_split(x[:700], 7):
        a.update(chunk)
    b.update(x[700:])
    merged = a.merge(b)
    mu, sigma = merged.mean_cov()
    chex.assert_trees_all_close((mu, sigma), (x.astype(np.float64).mean(0),
                                              np.cov(x.astype(np.float64), rowvar=False)),
                                rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(merged.raw, x[:300])
    logits = rng.normal(size=(1000, 7)) * 3
    stream = ScoreStats(1000, splits=10)
    for chunk in np.array_split(logits, 13):  # chunks straddle split boundaries
        stream.update(chunk)
    np.testing.assert_allclose(stream.score(), inception_score(logits, 10), rtol=1e-12)


# ----------------------------------------------------------------------------- Inception port


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    variables = inception.init_variables(seed=0)
    folder = tmp_path_factory.mktemp("inception")
    paths = {s: str(folder / f"fid_inception{s}") for s in (".npz", ".msgpack")}
    for path in paths.values():
        weights_io.save_variables(path, variables)
    return variables, paths


def test_inception_parameter_count(inception_files):
    variables, _ = inception_files
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))
    assert count(variables["params"]) == INCEPTION_PARAMS
    assert count(variables["batch_stats"]) == INCEPTION_BN_STATS
    assert variables["params"]["fc"]["kernel"].shape == (2048, 1008)


def test_inception_shapes_and_file_round_trip(inception_files):
    variables, paths = inception_files
    images = np.random.default_rng(8).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    pool3, logits = inception.apply(variables, images)  # resized to 299 inside
    chex.assert_shape(pool3, (2, 2048))
    chex.assert_shape(logits, (2, 1008))
    assert np.isfinite(pool3).all() and pool3.std() > 0
    for path in paths.values():
        np.testing.assert_array_equal(inception.apply(inception.load_variables(path), images)[0],
                                      pool3)


def test_inception_preprocess_scales_and_resizes():
    x = inception.preprocess(np.array([0, 255], np.uint8).reshape(1, 1, 2, 1))
    chex.assert_shape(x, (1, 299, 299, 3))
    np.testing.assert_allclose([x.min(), x.max()], [-1.0, 1.0], atol=1e-6)


def test_inception_loads_pytorch_fid_layout_and_rejects_wrong_files(inception_files, tmp_path):
    variables, _ = inception_files
    torch_names = {"scale": "weight", "mean": "running_mean", "var": "running_var"}
    torch_sd = {}  # what pytorch-fid's state dict looks like after `.numpy()`
    for (_, *mod, leaf), v in traverse_util.flatten_dict(variables).items():
        name = ".".join(mod)
        if leaf == "kernel":
            torch_sd[f"{name}.weight"] = v.T if mod == ["fc"] else v.transpose(3, 2, 0, 1)
        else:
            torch_sd[f"{name}.{torch_names.get(leaf, leaf)}"] = v
    torch_sd["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.array(0)  # a buffer to skip
    np.savez(tmp_path / "pt_inception.npz", **torch_sd)
    loaded = inception.load_variables(str(tmp_path / "pt_inception.npz"))
    chex.assert_trees_all_equal(loaded, variables)
    del torch_sd["Mixed_7c.branch_pool.conv.weight"]
    np.savez(tmp_path / "broken.npz", **torch_sd)
    with pytest.raises(UserError, match="Mixed_7c"):
        inception.load_variables(str(tmp_path / "broken.npz"))


def test_weights_from_url_are_downloaded_once_into_the_cache(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    weights_io.save_variables(str(served / "w.msgpack"), tree)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/w.msgpack"
        cache = str(tmp_path / "cache")
        chex.assert_trees_all_equal(weights_io.load_variables(url, cache), tree)
        os.remove(served / "w.msgpack")  # a second load must come from the cache
        chex.assert_trees_all_equal(weights_io.load_variables(url, cache), tree)
        with pytest.raises(UserError, match="cannot download"):
            weights_io.load_variables(url.replace("w.msgpack", "missing.npz"), cache)
    finally:
        server.shutdown()


def test_extractor_errors_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match="unknown"):
        get_extractor("vgg")
    monkeypatch.delenv("AIGC_JAX_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(UserError, match="Inception weights"):
        get_extractor("inception")


# ------------------------------------------------------------------- digits classifier and FD


def test_shipped_digits_classifier_accuracy():
    net = classifier.load_classifier("digits")
    test = create_image_dataset(DIGITS, "test", seed=0)
    features, logits = net.apply(test.images)
    chex.assert_shape(features, (len(test.images), 128))
    accuracy = (logits.argmax(-1) == test.labels).mean()
    assert accuracy >= 0.97
    assert net.info["test_accuracy"] == pytest.approx(accuracy)  # the JSON reports a measurement


def test_digits_fd_separates_real_from_noise(tmp_path):
    ref = compute_reference(DIGITS, "train", "digits", str(tmp_path))
    assert ref.n == 1497 and ref.features.shape == (1497, 128)
    test = compute_reference(DIGITS, "test", "digits", str(tmp_path))
    noise = np.random.default_rng(9).integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
    stats = FeatureStats(128)
    stats.update(get_extractor("digits")(noise, 250)[0])
    fd_test = frechet_distance(test.mu, test.sigma, ref.mu, ref.sigma)
    fd_noise = frechet_distance(*stats.mean_cov(), ref.mu, ref.sigma)
    assert fd_noise > 50 * fd_test
    reloaded = RefStats.load(ref.path)  # a second call reads the cache
    chex.assert_trees_all_equal((reloaded.mu, reloaded.sigma), (ref.mu, ref.sigma))


def test_sample_quality_on_real_and_noise_samples(tmp_path):
    test = create_image_dataset(DIGITS, "test", seed=0).images
    real_fn = lambda n, i: test[i * 100:i * 100 + n]
    result = sample_quality(real_fn, 300, DIGITS, "digits", batch_size=100,
                            cache_dir=str(tmp_path), kid_subset_size=200, kid_subsets=10)
    assert "fid" not in result and set(result) >= {"fd_digits", "kid", "kid_std",
                                                   "classifier_score", "precision", "recall"}
    assert result["protocol"]["reference_N"] == 1497 and result["protocol"]["num_samples"] == 300
    rng = np.random.default_rng(10)
    noise_fn = lambda n, i: rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    noise = sample_quality(noise_fn, 300, DIGITS, "digits", batch_size=100,
                           cache_dir=str(tmp_path), kid_subset_size=200, kid_subsets=10)
    assert noise["fd_digits"] > 50 * result["fd_digits"]
    assert noise["kid"] > 50 * max(result["kid"], result["kid_std"])
    assert result["precision"] > 0.8 and noise["precision"] < 0.2
    assert result["classifier_score"] > 2 * noise["classifier_score"]
    json.dumps(result)  # loggable as it is


def test_reference_cache_key_ignores_unset_keys():
    cli_defaults = ml_collections.ConfigDict({"name": "digits", **CONTENT_KEYS})
    assert data_key(cli_defaults) == data_key(DIGITS) == "digits"
    idx = ml_collections.ConfigDict({"name": "idx", "path": "/data/mnist"})
    assert data_key(idx) != data_key(ml_collections.ConfigDict({"name": "idx", "path": "/x"}))


@pytest.mark.skipif(not os.path.exists(classifier.weights_path("mnist")),
                    reason="MNIST classifier weights are not shipped")
def test_shipped_mnist_classifier_loads():
    net = classifier.load_classifier("mnist")
    assert net.input_size == 28 and net.info["test_accuracy"] >= 0.97
    images = np.random.default_rng(11).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    features, logits = net.apply(images)
    chex.assert_shape((features, logits), ((3, 128), (3, 10)))
