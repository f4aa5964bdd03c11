"""`sample_quality`: the one call a method's `evaluate` hook makes to score generated images."""

from __future__ import annotations

import time
from collections.abc import Callable

import ml_collections
import numpy as np

from aigc_jax.evaluation import metrics
from aigc_jax.evaluation.extractors import get_extractor
from aigc_jax.evaluation.reference import compute_reference
from aigc_jax.logging import PassProgress

SampleFn = Callable[[int, int], np.ndarray]


def sample_quality(sample_fn: SampleFn, num_samples: int, data_cfg: ml_collections.ConfigDict,
                   extractor: str = "digits", reference_split: str = "train",
                   batch_size: int = 250, cache_dir: str | None = None, *,
                   kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = 3,
                   max_raw: int = 10_000, score_splits: int = 10,
                   inception_weights: str | None = None) -> dict:
    """FD/FID, KID, classifier/Inception score and precision/recall of `num_samples` samples.

    `sample_fn(n, i)` returns batch i as uint8 [n, H, W, C]; features are streamed, so only
    `max_raw` raw feature rows (for KID and precision/recall) are ever held.
    """
    if num_samples < 2:
        raise ValueError(f"sample_quality needs num_samples >= 2, got {num_samples}")
    start = time.time()
    ref = compute_reference(data_cfg, reference_split, extractor, cache_dir,
                            batch_size=batch_size, max_raw=max_raw,
                            inception_weights=inception_weights)
    net = get_extractor(extractor, inception_weights)
    feats = metrics.FeatureStats(net.feature_dim, max_raw)
    splits = min(score_splits, num_samples)
    scores = metrics.ScoreStats(num_samples, splits)
    num_batches = -(-num_samples // batch_size)
    progress = PassProgress(f"sampling + features ({num_samples} samples)", num_batches)
    for i in range(num_batches):
        progress.update(i)
        n = min(batch_size, num_samples - i * batch_size)
        images = np.asarray(sample_fn(n, i))
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) != n:
            raise ValueError(f"sample_fn({n}, {i}) must return uint8 [{n}, H, W, C], "
                             f"got {images.dtype} {images.shape}")
        f, logits = net(images, batch_size)
        feats.update(f)
        scores.update(logits)

    progress.done()
    mu, sigma = feats.mean_cov()
    fake, real = feats.raw, ref.features
    kid, kid_std = metrics.kernel_inception_distance(fake, real, kid_subsets, kid_subset_size)
    m = min(len(fake), len(real))  # P/R depend on the set sizes; compare equal-sized sets
    precision, recall = metrics.precision_recall(real[:m], fake[:m], k=pr_k)
    score, score_std = scores.score()
    return {
        net.fd_name: metrics.frechet_distance(mu, sigma, ref.mu, ref.sigma),
        "kid": kid, "kid_std": kid_std,
        net.score_name: score, f"{net.score_name}_std": score_std,
        "precision": precision, "recall": recall,
        "protocol": {
            "extractor": extractor, "extractor_fingerprint": net.fingerprint,
            "num_samples": num_samples, "reference_data": ref.protocol["data_key"],
            "reference_split": reference_split, "reference_N": ref.n,
            f"reference_{net.score_name}": ref.score,
            "kid_subsets": kid_subsets, "kid_subset_size": min(kid_subset_size, len(fake),
                                                               len(real)),
            "pr_k": pr_k, "pr_num_samples": m, "score_splits": splits,
            "sample_shape": list(images.shape[1:]), "seconds": round(time.time() - start, 2),
        },
    }
