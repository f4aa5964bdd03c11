"""The Method interface between a family (VAE, diffusion, GAN, LM) and the generic loop."""

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from aigc_jax import plotting
from aigc_jax.methods.common import to_uint8
from aigc_jax.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def write_image_samples(samples: Any, path_stem: str) -> list[str]:
    """Default sample writer: uint8 [N, H, W, C] images to `<stem>.png` (grid) and `<stem>.npz`."""
    images = np.asarray(to_uint8(np.asarray(samples)))
    png = plotting.save_image_grid(images, path_stem + ".png")
    npz = path_stem + ".npz"
    np.savez_compressed(npz, images=images)
    return [png, npz]


@dataclasses.dataclass(frozen=True)
class Method:
    """The functions a family provides; each is a closure over the config and model.

    - `init_state(rng, example_batch) -> TrainState`
    - `train_step(state, batch, frozen=None) -> (state, metrics)`: pure; the loop jits it with
      shardings and donates the state. `metrics` holds scalars and must include "loss".
      `frozen` is {role: weights} of the run's components (see `aigc_jax.components`): an
      argument of the compiled step, never closed over, donated or checkpointed.
    - `eval_step(state, batch, rng, frozen=None) -> metrics`: per-example arrays [B] (or
      scalars); the loop averages them over the test split, ignoring padded rows.
    - `final_eval_step(state, batch, rng, frozen=None) -> metrics`: the same, for costly
      metrics run only by `--mode=eval` (e.g. the VAE's NLL with 5,000 importance samples).
    - `sample(state, rng, num, frozen=None, **kwargs)`: compiled generation; images as uint8
      [N, H, W, C] (or floats in [-1, 1]), or whatever `write_samples` understands.
    - `write_samples(samples, path_stem) -> files written`: images by default.
    - `evaluate(state, dataset, rng, num_samples, frozen=None) -> dict`: extra `--mode=eval`
      metrics (FID, ...), optional.
    - `figures(state, test_dataset_or_None, workdir, frozen=None) -> files`: extra figures
      written by `--mode=sample` under `workdir/figures/` (reconstructions, interpolations,
      latent manifold, training progress), optional.
    - `tokens_per_step`, `flops_per_step`: static per-step numbers for tokens/s and MFU
      (0: not reported).
    """

    init_state: Callable[[jax.Array, Batch], TrainState]
    train_step: Callable[..., tuple[TrainState, Metrics]]
    eval_step: Callable[..., Metrics] | None = None
    final_eval_step: Callable[..., Metrics] | None = None
    sample: Callable[..., Any] | None = None
    write_samples: Callable[[Any, str], list[str]] = write_image_samples
    evaluate: Callable[..., dict[str, Any]] | None = None
    figures: Callable[..., list[str]] | None = None
    tokens_per_step: float = 0.0
    flops_per_step: float = 0.0


Frozen = dict[str, Any] | None  # {role: frozen weights}, the step argument


def sample_path(workdir: str, step: int) -> str:
    """Path stem for the periodic sample grid of `step`."""
    return os.path.join(workdir, "samples", f"step_{step}")
