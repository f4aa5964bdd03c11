"""Random-access datasets: the batch for a step is a pure function of (seed, step).

Every source loads into host memory as numpy arrays, and `train_batch(step)` picks rows with a
per-epoch permutation seeded by (seed, epoch). A resumed run therefore sees exactly the batches
an uninterrupted run would have seen, with no iterator state to save beyond the step.
"""

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from aigc_jax.errors import UserError

Batch = dict[str, np.ndarray]


class Dataset(Protocol):
    """What the training loop needs from a data source."""

    num_examples: int

    def train_batch(self, step: int, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """This process's rows of the global batch for `step`."""
        ...

    def eval_batches(self, batch_size: int, process_index: int = 0, process_count: int = 1,
                     max_batches: int | None = None) -> Iterator[Batch]:
        """Fixed, ordered batches over the split; rows past the end are padded, `mask` says so."""
        ...


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A numpy generator that depends only on (seed, *keys)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, *keys])


def epoch_indices(num_examples: int, seed: int, step: int, batch_size: int) -> np.ndarray:
    """Row indices of the global batch at `step`: consecutive slices of per-epoch permutations."""
    positions = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        perm = rng_for(seed, 0, int(epoch)).permutation(num_examples)
        sel = epochs == epoch
        out[sel] = perm[offsets[sel]]
    return out


def process_slice(batch_size: int, process_index: int, process_count: int) -> slice:
    """The rows of a global batch that belong to one process."""
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
    per = batch_size // process_count
    return slice(process_index * per, (process_index + 1) * per)


def padded_eval_indices(num_examples: int, batch_size: int, max_batches: int | None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices, mask) for each eval batch in order; the last batch is padded with row 0."""
    num_batches = -(-num_examples // batch_size)
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    for b in range(num_batches):
        idx = np.arange(b * batch_size, (b + 1) * batch_size)
        mask = idx < num_examples
        yield np.where(mask, idx, 0), mask


TFDS_EXTRA = "pip install -e '.[tfds]'"


def tfds_data_source(name: str, split: str, data_dir: str | None) -> Any:
    """`tfds.data_source(name, split)`, with one-line errors; a missing module (tfds itself, or
    the TensorFlow it needs to download and prepare a dataset) names the `[tfds]` extra."""
    try:
        import tensorflow_datasets as tfds

        return tfds.data_source(name, split=split, data_dir=data_dir)
    except ImportError as e:
        raise UserError(f"tfds dataset {name!r} needs {e.name or 'a module'} to be prepared, "
                        f"which is not installed; install the tfds extra ({TFDS_EXTRA}) or "
                        "use an offline data.name (digits, idx, folder, text).") from None
    except Exception as e:  # tfds raises many types; the user needs the one line.
        raise UserError(f"tfds dataset {name!r} split {split!r} is not available: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


class IndexedExamples:
    """Batches for a source that builds any rows on demand: `examples(indices) -> Batch`,
    `num_examples` and `seed` come from the subclass. Train batches are a pure function of
    (seed, step); eval batches are ordered and padded at the end (see `mask`)."""

    num_examples: int
    seed: int

    def examples(self, idx: np.ndarray) -> dict:
        raise NotImplementedError

    def train_batch(self, step: int, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> dict:
        """This process's rows of the global batch for `step`."""
        idx = epoch_indices(self.num_examples, self.seed, step, batch_size)
        return self.examples(idx[process_slice(batch_size, process_index, process_count)])

    def eval_batches(self, batch_size: int, process_index: int = 0, process_count: int = 1,
                     max_batches: int | None = None) -> Iterator[dict]:
        """Ordered batches over the split, padded at the end (see `mask`)."""
        rows = process_slice(batch_size, process_index, process_count)
        for idx, mask in padded_eval_indices(self.num_examples, batch_size, max_batches):
            batch = self.examples(idx[rows])
            batch["mask"] = mask[rows]
            yield batch
