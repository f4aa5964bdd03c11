"""Metric writer (metrics.jsonl + TensorBoard) and the progress line. Process 0 writes."""

import json
import logging as pylogging
import math
import os
import time
from typing import Any

import numpy as np
from absl import logging

from aigc_jax.parallel import is_main_process


class _QuietLibraries(pylogging.Filter):
    """Drop INFO lines from orbax and XLA start-up chatter so the progress line stays visible,
    and orbax's warnings that a component's checkpoints are opened read-only (as intended)."""

    NOISY = ("orbax", "xla_bridge")

    def filter(self, record: pylogging.LogRecord) -> bool:
        noisy = any(n in record.pathname for n in self.NOISY)
        if noisy and record.levelno == pylogging.WARNING:
            return "read only" not in (msg := record.getMessage()) and "read_only" not in msg
        return record.levelno > pylogging.INFO or not noisy


def quiet_libraries() -> None:
    """Install the filter on absl's handler (idempotent)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
        handler.addFilter(_QuietLibraries())


def _to_py(value: Any) -> Any:
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()


class MetricWriter:
    """Appends one JSON object per line to `workdir/metrics.jsonl` and mirrors to TensorBoard."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        self.enabled = is_main_process()
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write one row {step, split, **metrics}; returns the row as plain Python values."""
        row = {"step": int(step), "split": split, **{k: _to_py(v) for k, v in metrics.items()}}
        if not self.enabled:
            return row
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{split}/{k}", v, step)
            self._tb.flush()
        return row

    def close(self) -> None:
        """Flush and close TensorBoard files."""
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """All rows of `workdir/metrics.jsonl` (for tests, plots and experiments)."""
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    """Logs `step N/T loss=... steps/s ETA` lines, timing only the steps since the last line."""

    def __init__(self, start_step: int, num_steps: int):
        self.num_steps = num_steps
        self._last_step, self._last_time = start_step, time.perf_counter()

    def rate(self, step: int) -> float:
        """Steps per second since the previous call; resets the timer."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        return rate

    def line(self, step: int, metrics: dict[str, float]) -> str:
        """Format and log the progress line for `step` (metrics include `steps_per_sec`)."""
        rate = metrics.get("steps_per_sec", 0.0)
        eta = (self.num_steps - step) / rate if rate > 0 else float("inf")
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                         if isinstance(v, (int, float)) and k != "steps_per_sec")
        text = f"step {step}/{self.num_steps} {shown} {rate:.2f} steps/s ETA {_fmt_time(eta)}"
        if is_main_process():
            logging.info(text)
        return text
