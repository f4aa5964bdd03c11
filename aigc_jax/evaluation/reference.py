"""Reference statistics of a dataset split in an extractor's feature space, cached as .npz.

    python -m aigc_jax.evaluation.reference --data.name=digits --split=train \
        --extractor=digits --out=DIR

The .npz holds mu [D] and sigma [D, D] (float64), n, a capped uniform subset of the raw features
(float32, for KID and precision/recall), the reference's own classifier/Inception score, and the
protocol as a JSON string. No pickle: it loads with `np.load(..., allow_pickle=False)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from aigc_jax.data.images import create_image_dataset
from aigc_jax.errors import UserError
from aigc_jax.evaluation.extractors import get_extractor
from aigc_jax.evaluation.metrics import FeatureStats, ScoreStats

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "aigc_jax", "reference")
# Keys of `config.data` that change the images, with the values that mean "unset".
CONTENT_KEYS = {"path": "", "holdout_fraction": 0.0, "source_split": "train", "image_size": 0,
                "crop": 0, "pad": 0, "binarize": "none", "tfds_train_split": "",
                "tfds_test_split": ""}
SUBSET_SEED = 0  # the raw-feature subset must not change between runs


@dataclasses.dataclass
class RefStats:
    """Feature statistics of a reference split: mu [D], sigma [D, D], n, raw features [M, D]."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray
    score: float
    score_std: float
    protocol: dict
    path: str = ""  # where it is cached; not stored in the file

    def save(self, path: str) -> None:
        """Writes the statistics to `path` (.npz), atomically."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, mu=self.mu, sigma=self.sigma, n=self.n, features=self.features,
                     score=self.score, score_std=self.score_std,
                     protocol=json.dumps(self.protocol, sort_keys=True))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> RefStats:
        """Reads statistics written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["mu"], z["sigma"], int(z["n"]), z["features"], float(z["score"]),
                           float(z["score_std"]), json.loads(str(z["protocol"])), path)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot read reference statistics {path!r}: {e}") from None


def data_key(data_cfg: ml_collections.ConfigDict) -> str:
    """A file-name-safe id of the images `data_cfg` selects, e.g. "digits" or "idx-3fa2b1c0"."""
    items = {}
    for k, unset in CONTENT_KEYS.items():
        v = data_cfg.get(k, unset)
        if v not in (unset, None):
            items[k] = os.path.abspath(v) if k == "path" else v
    if not items:
        return str(data_cfg.name)
    digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:8]
    return f"{data_cfg.name}-{digest}"


def compute_reference(data_cfg: ml_collections.ConfigDict, split: str = "train",
                      extractor_name: str = "digits", cache_dir: str | None = None, *,
                      batch_size: int = 250, max_raw: int = 10_000,
                      inception_weights: str | None = None) -> RefStats:
    """Statistics of `split` of `data_cfg` in the extractor's features, cached in `cache_dir`."""
    extractor = get_extractor(extractor_name, inception_weights)
    name = f"{data_key(data_cfg)}_{split}_{extractor_name}-{extractor.fingerprint[:8]}"
    path = os.path.join(cache_dir or DEFAULT_CACHE_DIR, f"{name}_raw{max_raw}.npz")
    if os.path.isfile(path):
        return RefStats.load(path)
    ds = create_image_dataset(data_cfg, split, seed=0)
    # Visit the images in a fixed random order so the first `max_raw` are a uniform subset.
    order = np.random.default_rng(SUBSET_SEED).permutation(ds.num_examples)
    stats = FeatureStats(extractor.feature_dim, max_raw)
    scores = ScoreStats(ds.num_examples, splits=1)
    for s in range(0, ds.num_examples, batch_size):
        feats, logits = extractor(ds.images[order[s:s + batch_size]], batch_size)
        stats.update(feats)
        scores.update(logits)
    mu, sigma = stats.mean_cov()
    score, score_std = scores.score()
    protocol = {"data": data_cfg.to_dict(), "data_key": data_key(data_cfg), "split": split,
                "extractor": extractor_name, "extractor_fingerprint": extractor.fingerprint,
                "n": stats.n, "num_raw": len(stats.raw), "image_shape": list(ds.image_shape)}
    ref = RefStats(mu, sigma, stats.n, stats.raw, score, score_std, protocol, path)
    ref.save(path)
    return ref


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags; defined only when run as a script so importers get no flags."""
    # tfds split names stay out of the defaults: an empty one would override the loader's.
    defaults = {k: v for k, v in CONTENT_KEYS.items() if not k.startswith("tfds")}
    config_flags.DEFINE_config_dict("data", ml_collections.ConfigDict(
        {"name": "digits", **defaults}), "Dataset config, as `config.data` (--data.name=...).")
    flags.DEFINE_string("split", "train", "Dataset split: train or test.")
    flags.DEFINE_enum("extractor", "digits", ["digits", "mnist", "inception"], "Feature network.")
    flags.DEFINE_string("out", None, "Cache folder (default ~/.cache/aigc_jax/reference).")
    flags.DEFINE_integer("batch_size", 250, "Extractor batch size.")
    flags.DEFINE_integer("max_raw", 10_000, "Raw features kept for KID and precision/recall.")
    flags.DEFINE_string("inception_weights", None, "FID Inception weights path or URL.")


def main(argv: list[str]) -> None:
    del argv
    try:
        ref = compute_reference(FLAGS.data, FLAGS.split, FLAGS.extractor, FLAGS.out,
                                batch_size=FLAGS.batch_size, max_raw=FLAGS.max_raw,
                                inception_weights=FLAGS.inception_weights)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"path": ref.path, "feature_dim": len(ref.mu), "score": ref.score,
                      **ref.protocol}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
