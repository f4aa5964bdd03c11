"""A small CNN digit classifier whose penultimate features define offline Fréchet distances.

The shipped weights live in `weights/<name>_classifier.msgpack` (flax msgpack, {"params": ...})
next to `<name>_classifier.json`, which holds the architecture, the measured test accuracy and
the command that trained them (`python -m aigc_jax.evaluation.train_classifier`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.errors import UserError
from aigc_jax.evaluation import weights_io

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


class Classifier(nn.Module):
    """conv-pool-conv-pool-conv-mean -> Dense(feature_dim) + ReLU (features) -> Dense (logits)."""

    widths: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.3

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """x [N, S, S, 1] in [0, 1] -> (features [N, feature_dim], logits [N, num_classes])."""
        for i, width in enumerate(self.widths):
            x = nn.relu(nn.Conv(width, (3, 3), name=f"conv{i}")(x))
            if i < len(self.widths) - 1:
                x = nn.avg_pool(x, (2, 2), (2, 2))
        x = x.mean(axis=(1, 2))
        features = nn.relu(nn.Dense(self.feature_dim, name="hidden")(x))
        h = nn.Dropout(self.dropout, deterministic=not train)(features)
        return features, nn.Dense(self.num_classes, name="logits")(h)


def preprocess(images: jax.Array, input_size: int) -> jax.Array:
    """uint8 [N, H, W, C] -> float32 [N, S, S, 1] in [0, 1]: gray, bilinear (antialiased) resize."""
    x = images.astype(jnp.float32) / 255.0
    if x.shape[-1] != 1:
        x = x.mean(axis=-1, keepdims=True)
    if x.shape[1:3] != (input_size, input_size):
        x = jax.image.resize(x, (x.shape[0], input_size, input_size, 1), "bilinear")
    return x


@dataclasses.dataclass(frozen=True)
class LoadedClassifier:
    """A classifier with its variables and metadata; `apply` maps uint8 images to numpy."""

    model: Classifier
    variables: dict
    input_size: int
    info: dict

    def apply(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images [N, H, W, C] -> (features [N, D], logits [N, 10]) as float32 numpy."""
        features, logits = _jitted_apply(self.model, self.input_size)(self.variables,
                                                                      jnp.asarray(images))
        return np.asarray(features), np.asarray(logits)


@functools.lru_cache(maxsize=8)
def _jitted_apply(model: Classifier, input_size: int):
    return jax.jit(lambda variables, images: model.apply(variables,
                                                         preprocess(images, input_size)))


def model_from_info(info: dict) -> Classifier:
    """The `Classifier` described by the "model" entry of a weights JSON."""
    m = info["model"]
    return Classifier(tuple(m["widths"]), m["feature_dim"], m["num_classes"])


def weights_path(name: str) -> str:
    """Path of the shipped msgpack for classifier `name` ("digits" or "mnist")."""
    return os.path.join(WEIGHTS_DIR, f"{name}_classifier.msgpack")


def load_classifier(name_or_path: str) -> LoadedClassifier:
    """A shipped classifier by name ("digits", "mnist") or a .msgpack path with its .json."""
    path = name_or_path if name_or_path.endswith(".msgpack") else weights_path(name_or_path)
    meta_path = path[:-len(".msgpack")] + ".json"
    if not (os.path.isfile(path) and os.path.isfile(meta_path)):
        raise UserError(f"classifier weights {path!r} (with its .json) are missing; train them "
                        "with `python -m aigc_jax.evaluation.train_classifier`.")
    with open(meta_path) as f:
        info = json.load(f)
    info["weights_sha256"] = weights_io.file_digest(path)
    variables = jax.device_put(weights_io.load_variables(path))
    return LoadedClassifier(model_from_info(info), variables, int(info["model"]["input_size"]),
                            info)
