"""What several families share: image pre/post-processing, choice checks, sample quality.

One spelling each, so a change (a value range, a metric protocol) lands in every family.
"""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np

from aigc_jax.errors import UserError
from aigc_jax.pixels import to_float, to_uint8  # noqa: F401  (re-exported: one spelling)

EXTRACTORS = ("digits", "mnist", "inception")


def check_choice(key: str, value: Any, known: Iterable) -> None:
    """A UserError naming `config.<key>` unless `value` is one of `known` (listed)."""
    known = list(known)
    if value not in known:
        raise UserError(f"config.{key}={value!r} is unknown; known: {sorted(known)}.")


def sample_quality(config: ml_collections.ConfigDict, sample_fn: Callable[[int, int], Any],
                   num_samples: int | None, protocol: dict[str, Any]) -> dict[str, Any]:
    """`--mode=eval` sample quality (Fréchet distance, KID, IS, precision/recall) of
    `num_samples` (or `eval.fid_num_samples`; 0 there turns it off) images from
    `sample_fn(n, i)` (the i-th batch, uint8 [n, H, W, C]) against the train split, in
    `eval.extractor`'s features; `protocol` says how the samples were drawn."""
    n = int(num_samples or config.eval.fid_num_samples)
    if n == 0:
        return {}
    from aigc_jax import evaluation  # lazy: heavy, and only --mode=eval needs it

    results = evaluation.sample_quality(
        lambda num, i: np.asarray(jax.device_get(sample_fn(num, i))), n, config.data,
        extractor=str(config.eval.extractor), reference_split="train",
        batch_size=int(config.eval.fid_batch_size),
        cache_dir=str(config.eval.get("cache_dir", "")) or None)
    results["protocol"].update(protocol)
    return results


def padded_chunks(array: np.ndarray, batch: int) -> Iterable[tuple[int, np.ndarray, int]]:
    """(start, chunk, n) for consecutive `batch`-row slices of `array`, the last one padded by
    repeating its final row so every chunk has one compiled shape; keep `out[:n]` of each."""
    for start in range(0, len(array), batch):
        chunk = array[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, 0)])
        yield start, chunk, n
