"""Sample-quality evaluation: feature extractors, reference statistics and FID/KID/IS/P-R.

Methods call `sample_quality(sample_fn, num_samples, config.data, extractor=...)`; see
docs/EVALUATION.md for the protocol.
"""

from aigc_jax.evaluation.extractors import EXTRACTORS, Extractor, get_extractor
from aigc_jax.evaluation.metrics import (
    FeatureStats,
    ScoreStats,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from aigc_jax.evaluation.quality import sample_quality
from aigc_jax.evaluation.reference import RefStats, compute_reference

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "FeatureStats",
    "RefStats",
    "ScoreStats",
    "compute_reference",
    "frechet_distance",
    "get_extractor",
    "inception_score",
    "kernel_inception_distance",
    "precision_recall",
    "sample_quality",
]
