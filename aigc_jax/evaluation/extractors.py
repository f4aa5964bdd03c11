"""Feature extractors by name: "digits", "mnist" (shipped classifiers) and "inception" (FID).

Each maps uint8 images [N, H, W, C] to (features [N, D], logits [N, K]) in fixed-size batches,
so one compiled program serves every call.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import jax
import numpy as np

from aigc_jax.errors import UserError
from aigc_jax.evaluation import classifier, inception, weights_io

EXTRACTORS = ("digits", "mnist", "inception")
INCEPTION_WEIGHTS_ENV = "AIGC_JAX_INCEPTION_WEIGHTS"


@dataclasses.dataclass(frozen=True)
class Extractor:
    """A named feature network; `fingerprint` identifies its weights in cached statistics."""

    name: str
    feature_dim: int
    fd_name: str  # "fid" only for the Inception network; "fd_<name>" otherwise
    score_name: str  # "inception_score" or "classifier_score"
    fingerprint: str
    apply_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

    def __call__(self, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(features, logits) of uint8 images, run in batches padded to `batch_size`."""
        feats, logits = [], []
        for s in range(0, len(images), batch_size):
            chunk = images[s:s + batch_size]
            n = len(chunk)
            if n < batch_size:  # pad so the compiled shape never changes
                chunk = np.concatenate([chunk, np.zeros((batch_size - n, *chunk.shape[1:]),
                                                        chunk.dtype)])
            f, z = self.apply_fn(chunk)
            feats.append(f[:n])
            logits.append(z[:n])
        return np.concatenate(feats), np.concatenate(logits)


@functools.lru_cache(maxsize=4)
def get_extractor(name: str, inception_weights: str | None = None) -> Extractor:
    """The extractor `name`; Inception weights from the argument or $AIGC_JAX_INCEPTION_WEIGHTS."""
    if name in ("digits", "mnist"):
        c = classifier.load_classifier(name)
        return Extractor(name, c.model.feature_dim, f"fd_{name}", "classifier_score",
                         c.info["weights_sha256"], c.apply)
    if name == "inception":
        source = inception_weights or os.environ.get(INCEPTION_WEIGHTS_ENV)
        if not source:
            raise UserError(
                "the inception extractor needs FID Inception weights: pass inception_weights="
                f"PATH_OR_URL (--inception_weights) or set ${INCEPTION_WEIGHTS_ENV}; "
                "see docs/EVALUATION.md.")
        path = weights_io.fetch(source) if weights_io.is_url(source) else source
        # Copied to the device once, not with every batch (the network is 95 MB).
        variables = jax.device_put(inception.load_variables(path))
        return Extractor(name, inception.NUM_FEATURES, "fid", "inception_score",
                         weights_io.file_digest(path),
                         functools.partial(inception.apply, variables))
    raise UserError(f"extractor={name!r} is unknown; expected one of {EXTRACTORS}.")
