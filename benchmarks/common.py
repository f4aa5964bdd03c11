"""Shared benchmark helpers: machine description, timing, config overrides, peak memory."""

import ast
import datetime
import os
import platform
import resource
import time
from typing import Any

import jax
import numpy as np


def machine() -> str:
    """Backend and device, e.g. 'cpu x86_64 (2 cores)' or 'gpu NVIDIA H100 80GB HBM3 x1'."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    return f"{dev.platform} {dev.device_kind} x{jax.device_count()}"


def today() -> str:
    """The date in ISO format (UTC)."""
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def timed(fn, *args: Any) -> tuple[Any, float]:
    """(result, seconds) of fn(*args), blocking on the result."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def random_image_batches(shape: tuple[int, ...], batch_size: int, num: int) -> list[dict]:
    """`num` batches of random uint8 images [B, *shape] and labels in [0, 10), seed 0."""
    rng = np.random.default_rng(0)
    return [{"image": rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8),
             "label": rng.integers(0, 10, batch_size).astype(np.int32)} for _ in range(num)]


def token_batches(batch_size: int, block_size: int, vocab_size: int, num: int) -> list[dict]:
    """`num` batches of random token windows int32 [B, block_size + 1] in [0, vocab), seed 0."""
    rng = np.random.default_rng(0)
    return [{"tokens": rng.integers(0, vocab_size, (batch_size, block_size + 1)).astype(np.int32)}
            for _ in range(num)]


def compile_train_step(method: Any, state: Any, batch: dict) -> tuple[Any, float]:
    """(compiled step, seconds) of the loop's `jax.jit(method.train_step, donate_argnums=0)`,
    lowered and compiled ahead of time so the compile is timed apart from running."""
    t0 = time.perf_counter()
    compiled = jax.jit(method.train_step, donate_argnums=0).lower(state, batch).compile()
    return compiled, time.perf_counter() - t0


def train_step_flops(method: Any, state: Any, batch: dict, *extra: Any) -> float:
    """FLOPs of one train step from XLA's cost analysis of the lowered (unoptimised) program:
    every dot and convolution, forward and backward, plus elementwise work. `extra`: further
    step arguments (a latent model's frozen component weights)."""
    cost = jax.jit(method.train_step).lower(state, batch, *extra).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0]
    return float(cost.get("flops", 0.0))


def steady_step_seconds(step, state: Any, batches: list, min_seconds: float = 2.0,
                        min_steps: int = 5, max_steps: int = 2000) -> tuple[Any, float, int]:
    """(state, seconds per step, steps timed) of a compiled train step in steady state: one
    blocked step sizes the run, then enough steps to fill `min_seconds` go back to back,
    dispatched asynchronously as the training loop does, and are timed as a whole."""
    (state, _), first = timed(step, state, batches[0])
    n = int(min(max_steps, max(min_steps, min_seconds / max(first, 1e-6))))
    t0 = time.perf_counter()
    for i in range(n):
        state, metrics = step(state, batches[i % len(batches)])
    jax.block_until_ready((state, metrics))
    return state, (time.perf_counter() - t0) / n, n


def apply_overrides(config, items: list[str]) -> None:
    """Apply `key.sub=value` overrides (Python literals, else strings) to a ConfigDict."""
    for item in items:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value


def peak_memory_mb() -> float:
    """Peak device memory on accelerators (memory_stats), else the process's peak RSS, in MiB."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> str:
    """The 1-minute load average, to show how busy a shared machine was."""
    return f"{os.getloadavg()[0]:.1f}"
