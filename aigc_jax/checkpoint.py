"""Orbax checkpointing: keep-N, async saves, auto-resume, and skipping unreadable checkpoints."""

import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from aigc_jax.state import TrainState


def _abstract(state: TrainState) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)


class Checkpointer:
    """Saves TrainState plus JSON metadata under `workdir/checkpoints/<step>/`."""

    def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save),
            item_names=("state", "meta"),
        )

    def all_steps(self) -> list[int]:
        """Steps of the finished checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, meta: dict[str, Any], force: bool = False) -> bool:
        """Start saving `state` at its step (asynchronously); returns whether a save began."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def restore(self, target: TrainState, step: int) -> tuple[TrainState, dict[str, Any]]:
        """The checkpoint at `step`, laid out like `target` (shapes, dtypes, shardings)."""
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)),
                                    meta=ocp.args.JsonRestore()),
        )
        return out["state"], out["meta"]

    def restore_latest(self, target: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
        """The newest checkpoint that reads back whole, or None when there is none.

        An unreadable checkpoint (missing or truncated files) is reported in one line and moved
        aside to `checkpoints_unreadable/` (never deleted), so the run resumes from the one before.
        """
        for step in reversed(self.all_steps()):
            try:
                return self.restore(target, step)
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                logging.warning("checkpoint at step %d in %s is unreadable (%s); "
                                "trying the previous one", step, self.directory, reason)
                self._move_aside(step)
        return None

    def _move_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            dst_dir = self.directory + "_unreadable"
            os.makedirs(dst_dir, exist_ok=True)
            dst = os.path.join(dst_dir, f"{step}-{int(time.time())}")
            if os.path.exists(src):
                shutil.move(src, dst)
                logging.warning("moved unreadable checkpoint %s to %s", src, dst)
        self.manager.reload()

    def wait(self) -> None:
        """Block until any asynchronous save has finished."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
