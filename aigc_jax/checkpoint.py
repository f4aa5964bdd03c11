"""Orbax checkpointing: keep-N, async saves, auto-resume, and skipping unreadable checkpoints."""

import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from aigc_jax.errors import UserError
from aigc_jax.state import TrainState


def _abstract(state: TrainState) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _layout(tree: Any) -> dict[str, tuple[int, ...]]:
    """{path: shape} of a pytree's arrays; paths are comparable across dataclasses and dicts."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): tuple(getattr(leaf, "shape", ()))
            for path, leaf in flat}


def _check_layout(saved: dict, expected: dict, step: int, directory: str) -> None:
    """A checkpoint from another model or optimizer config is the user's mistake, not damage:
    say so and stop, rather than skipping (and so hiding) the run's checkpoints."""
    if saved == expected:
        return
    diff = sorted(set(saved.items()) ^ set(expected.items()))[0][0]
    raise UserError(
        f"checkpoint at step {step} in {directory} was written by a different model or optimizer "
        f"config (first difference at {diff!r}); pass the config it was trained with "
        "(see config.json in the workdir) or use a new --workdir.")


class Checkpointer:
    """Saves TrainState plus JSON metadata under `workdir/checkpoints/<step>/`."""

    def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()},
        )

    def all_steps(self) -> list[int]:
        """Steps of the finished checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, state: TrainState, meta: dict[str, Any], force: bool = False) -> bool:
        """Start saving `state` at its step (asynchronously); returns whether a save began.

        Waits for every array of `state` first. Orbax copies the shards to the host from its
        own threads; on a multi-device CPU mesh, copies that wait on a step still in flight
        can starve that step's all-reduce rendezvous (an XLA abort, or a hang with longer
        collective timeouts). With nothing in flight the copy cannot race a collective.
        """
        jax.block_until_ready(state)
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=force,
        )

    def latest_meta(self) -> dict[str, Any]:
        """The JSON metadata of the newest checkpoint that has readable metadata ({} if none)."""
        for step in reversed(self.all_steps()):
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))
                return dict(out["meta"])
            except Exception:  # damaged: restore_latest reports and moves it aside
                continue
        return {}

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
                saved = _layout(self.manager.item_metadata(step)["state"])
            except Exception:  # unreadable metadata: treated like any damaged checkpoint below
                saved = None
            if saved is not None:
                _check_layout(saved, _layout(target), step, self.directory)
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
