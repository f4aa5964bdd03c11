"""Training input as an iterator of device batches: in memory (the default) or through grain.

Both pipelines yield the same batches: element k is `dataset.train_batch(start + k, ...)`, a
pure function of (seed, step), so the step is the whole iterator state and a resumed run
rebuilds the pipeline at its checkpoint's step (no grain iterator state to save).

- "memory": the loop gathers each batch itself, as before (the fast path for small data).
- "grain": a grain `MapDataset` over step numbers, mapped to this process's rows of each global
  batch (per-host sharding) by `data.num_workers` worker processes (spawned; 0 = threads in the
  training process), with the next `data.prefetch` batches already transferred to the device.
"""

import collections
import os
import sys
import threading
import time
from collections.abc import Iterator

import ml_collections
from absl import flags
from jax.sharding import Mesh

from aigc_jax import parallel
from aigc_jax.data.base import Batch, Dataset
from aigc_jax.errors import UserError

PIPELINES = ("memory", "grain")


class StepBatch:
    """A picklable grain map from a step number to this process's rows of its global batch."""

    def __init__(self, dataset: Dataset, batch_size: int, process_index: int,
                 process_count: int):
        self.dataset, self.batch_size = dataset, batch_size
        self.process_index, self.process_count = process_index, process_count

    def __call__(self, step: int) -> Batch:
        return self.dataset.train_batch(int(step), self.batch_size, self.process_index,
                                        self.process_count)


class ExitWithParent:
    """A grain worker_init_fn: a worker whose training process died (SIGKILL, OOM) exits too,
    instead of living on as an orphan holding its buffers."""

    def __init__(self):
        self.parent = os.getpid()

    def __call__(self, worker_index: int, worker_count: int) -> None:
        def watch():
            while os.getppid() == self.parent:
                time.sleep(0.2)
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()


def check_pipeline(cfg: ml_collections.ConfigDict) -> str:
    """`data.pipeline`, or a one-line error naming the known ones (and bad worker counts)."""
    name = str(cfg.get("pipeline", "memory"))
    if name not in PIPELINES:
        raise UserError(f"data.pipeline={name!r} is unknown; expected one of {PIPELINES}.")
    if int(cfg.get("num_workers", 0)) < 0 or int(cfg.get("prefetch", 2)) < 0:
        raise UserError(f"data.num_workers={cfg.get('num_workers')} and data.prefetch="
                        f"{cfg.get('prefetch')} must be >= 0.")
    return name


def grain_batches(dataset: Dataset, start: int, stop: int, batch_size: int,
                  process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                  buffer: int = 2) -> Iterator[Batch]:
    """Host batches for steps start..stop-1 from a grain pipeline (close() ends its workers)."""
    import grain

    if not flags.FLAGS.is_parsed():  # grain reads absl flags; outside an absl app: defaults
        flags.FLAGS([sys.argv[0]], known_only=True)
    ds = grain.MapDataset.range(start, stop).map(
        StepBatch(dataset, batch_size, process_index, process_count))
    # Few reader threads and a short buffer: the default (16 threads, 500 elements) would hold
    # 500 batches in host memory.
    read = grain.ReadOptions(num_threads=max(1, min(buffer, 4)), prefetch_buffer_size=buffer)
    it = ds.to_iter_dataset(read)
    if num_workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                         per_worker_buffer_size=buffer),
                         worker_init_fn=ExitWithParent())
    return iter(it)


def memory_batches(dataset: Dataset, start: int, stop: int, batch_size: int,
                   process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
    """Host batches for steps start..stop-1 gathered on demand in this thread."""
    for step in range(start, stop):
        yield dataset.train_batch(step, batch_size, process_index, process_count)


def to_device(batches: Iterator[Batch], mesh: Mesh, size: int) -> Iterator[dict]:
    """Global device batches, `size` of them transferred ahead of the one being used."""
    queue: collections.deque = collections.deque()
    try:
        for local in batches:
            queue.append(parallel.shard_batch(mesh, local))  # asynchronous transfer
            if len(queue) > size:
                yield queue.popleft()
        while queue:
            yield queue.popleft()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def train_batches(dataset: Dataset, config: ml_collections.ConfigDict, mesh: Mesh, start: int,
                  stop: int, process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Device batches for steps start..stop-1 through `config.data.pipeline`."""
    cfg, batch_size = config.data, int(config.train.batch_size)
    if check_pipeline(cfg) == "memory":
        return to_device(memory_batches(dataset, start, stop, batch_size, process_index,
                                        process_count), mesh, 0)
    prefetch = int(cfg.get("prefetch", 2))
    host = grain_batches(dataset, start, stop, batch_size, process_index, process_count,
                         int(cfg.get("num_workers", 0)), max(prefetch, 1))
    return to_device(host, mesh, prefetch)
