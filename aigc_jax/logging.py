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
                try:
                    from tensorboardX import SummaryWriter
                except ImportError:  # e.g. an accelerator image with no network: JSONL still
                    logging.warning("tensorboardX is not installed: metrics go to %s only "
                                    "(pip install tensorboardX, or train.tensorboard=False)",
                                    self.path)
                else:
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

    def write_files(self, step: int, tag: str, files: list[str]) -> None:
        """Mirror written sample files to TensorBoard: PNG grids as images, text as text."""
        if self._tb is None:
            return
        for path in files:
            name = f"{tag}/{os.path.splitext(os.path.basename(path))[0]}"
            if path.endswith(".png"):
                from PIL import Image

                image = np.asarray(Image.open(path).convert("RGB"))
                self._tb.add_image(name, image, step, dataformats="HWC")
            elif path.endswith(".txt"):
                with open(path) as f:
                    self._tb.add_text(name, "    " + f.read().replace("\n", "\n    "), step)
        self._tb.flush()

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
    """Logs `step N/T loss=... steps/s ETA` lines. The rate counts training time only: the
    first step's compile (see `restart`) and eval, sampling and saving (`exclude`) are left
    out, so the ETA is the steady state's and does not jump after each eval."""

    def __init__(self, start_step: int, num_steps: int):
        self.num_steps = num_steps
        self._last_step, self._last_time = start_step, time.perf_counter()
        self._excluded = 0.0

    def restart(self, step: int) -> None:
        """Start timing from `step` now (call after the first, compiling, step)."""
        self._last_step, self._last_time, self._excluded = step, time.perf_counter(), 0.0

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` of non-training work (eval, samples, checkpoints) out of the rate."""
        self._excluded += seconds

    def rate(self, step: int) -> float:
        """Training steps per second since the previous call; resets the timer."""
        now = time.perf_counter()
        busy = max(now - self._last_time - self._excluded, 1e-9)
        rate = (step - self._last_step) / busy
        self._last_step, self._last_time, self._excluded = step, now, 0.0
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


class PassProgress:
    """`NAME 3/40 batches, 12.0s, ETA 2m28s` lines for a pass over batches (eval, sampling),
    at most one per `every` seconds and only once the pass has taken `after` seconds, so
    short passes stay quiet and long ones are never silent."""

    def __init__(self, name: str, total: int, every: float = 10.0, after: float = 5.0):
        self.name, self.total, self.every, self.after = name, total, every, after
        self.start = self._last = time.perf_counter()
        self.lines: list[str] = []

    def update(self, done: int) -> str | None:
        """Record that `done` of `total` batches are finished; log a line when one is due."""
        now = time.perf_counter()
        elapsed = now - self.start
        if elapsed < self.after or now - self._last < self.every or done >= self.total:
            return None
        self._last = now
        eta = elapsed / max(done, 1) * (self.total - done)
        return self._log(f"{self.name} {done}/{self.total} batches, {_fmt_time(elapsed)}, "
                         f"ETA {_fmt_time(eta)}")

    def done(self) -> str | None:
        """Log the pass's total time when it was long enough to have shown progress."""
        elapsed = time.perf_counter() - self.start
        if elapsed < self.after:
            return None
        return self._log(f"{self.name} {self.total}/{self.total} batches in {_fmt_time(elapsed)}")

    def _log(self, text: str) -> str:
        self.lines.append(text)
        if is_main_process():
            logging.info(text)
        return text
