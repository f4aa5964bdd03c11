"""The one generic loop: restore-or-init, step, log, checkpoint, eval, sample.

`train_and_evaluate`, `evaluate` and `sample` are the three `--mode`s. Everything specific to
a family lives in its `aigc_jax.methods` module; this file only schedules and records.
"""

import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from aigc_jax import components as components_lib
from aigc_jax import data as data_lib
from aigc_jax import methods, parallel, pretrained
from aigc_jax.checkpoint import Checkpointer
from aigc_jax.errors import UserError
from aigc_jax.logging import MetricWriter, Progress
from aigc_jax.methods.base import Method, sample_path
from aigc_jax.state import TrainState

NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteLoss(UserError):
    """Raised when the loss is NaN/inf and `train.nonfinite_policy` is "stop"."""


class Run:
    """What the three modes share: mesh, datasets, components, method, checkpointer.

    Components (`config.components.<role>`) are loaded before the method is built, since the
    method's shapes depend on them (a latent model's input is its autoencoder's latent). A
    resumed run reloads each component at the step its first launch recorded.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, need_data: bool = True):
        parallel.maybe_initialize_distributed()
        config = pretrained.resolve_config(config)  # init_from.hf: the checkpoint's shape
        self.config, self.workdir = config, workdir
        self.mesh = parallel.create_mesh(config)
        parallel.check_batch_size(int(config.train.batch_size), self.mesh)
        self.rep = parallel.replicated(self.mesh)
        self.ckpt = Checkpointer(workdir, int(config.train.get("keep_checkpoints", 3)),
                                 bool(config.train.get("async_checkpoint", True)))
        try:
            saved = self.ckpt.latest_meta().get("provenance", {})
            self.components = components_lib.load_all(
                config, self.mesh, methods.accepted_roles(config.method),
                saved.get("components"))
            self.train_ds = data_lib.create_dataset(config, "train") if need_data else None
            self._test_ds = None
            self.info = self._data_info()
            self.method: Method = methods.create(config, self.info, self.components)
        except BaseException:
            self.ckpt.close()
            raise
        self.frozen = {role: c.weights for role, c in self.components.items()}
        self.provenance: dict[str, Any] = {
            "components": {role: c.provenance for role, c in self.components.items()}}
        if "init_from" in saved:
            self.provenance["init_from"] = saved["init_from"]

    def _data_info(self) -> dict[str, Any]:
        path = os.path.join(self.workdir, "data_info.json")
        if self.train_ds is not None:
            info = self.train_ds.info()
            if parallel.is_main_process():
                os.makedirs(self.workdir, exist_ok=True)
                with open(path, "w") as f:
                    json.dump(info, f)
            return info
        if not os.path.exists(path) and pretrained.hf_dir(self.config):
            return pretrained.data_info(self.config)  # sampling an imported checkpoint
        if not os.path.exists(path):
            raise UserError(f"workdir {self.workdir!r} holds no trained run (no data_info.json); "
                            "train first or check --workdir.")
        with open(path) as f:
            return json.load(f)

    def example_batch(self) -> dict:
        """A global batch with the train batch's shapes (from data, or zeros in sample mode)."""
        if self.train_ds is not None:
            local = self.train_ds.train_batch(0, int(self.config.train.batch_size),
                                              jax.process_index(), jax.process_count())
        else:
            local = {k: np.zeros((int(self.config.train.batch_size) // jax.process_count(),
                                  *shape), dtype)
                     for k, (shape, dtype) in self.method_example_spec().items()}
        return parallel.shard_batch(self.mesh, local)

    def method_example_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-example shapes and dtypes of a batch, from the data info."""
        return {k: (tuple(v[0]), v[1]) for k, v in self.info["example_spec"].items()}

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the state, traced without compute (see
        `state_shardings`): the restore target, so resuming compiles no initializer."""
        rng = jax.random.PRNGKey(int(self.config.seed))
        abstract = jax.eval_shape(self.method.init_state, rng, self.example_batch())
        self.state_sharding = parallel.state_shardings(self.mesh, abstract)
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract, self.state_sharding)

    def jit_train_step(self, policy: str = "stop"):
        """The loop's compiled step `(state, batch, frozen) -> (state, metrics)`: the state is
        sharded and donated; the frozen component weights are an argument (a closure would bake
        them into the program as constants), never donated. Call after `abstract_state`."""
        frozen_sharding = jax.tree.map(lambda x: x.sharding, self.frozen)
        return jax.jit(guard_nonfinite(self.method.train_step, policy),
                       in_shardings=(self.state_sharding, parallel.batch_sharding(self.mesh),
                                     frozen_sharding),
                       out_shardings=(self.state_sharding, self.rep), donate_argnums=(0,))

    def init_state(self, abstract: TrainState | None = None) -> TrainState:
        """Fresh state, created directly in the layout of `abstract` (default: `abstract_state`);
        with `config.init_from`, its trainable parameters (and EMA) come from that run."""
        if abstract is None:
            abstract = self.abstract_state()
        rng = jax.random.PRNGKey(int(self.config.seed))
        state = jax.jit(self.method.init_state, out_shardings=jax.tree.map(
            lambda a: a.sharding, abstract))(rng, self.example_batch())
        if components_lib.is_set(self.config.get("init_from")):
            params, record = components_lib.warm_start(state.params, self.config, self.mesh)
            ema, _ = components_lib.warm_start(state.ema_params, self.config, self.mesh)
            state = state.replace(params=params, ema_params=ema)
            self.provenance["init_from"] = record
        if pretrained.hf_dir(self.config):  # GPT-2 weights from a transformers directory
            params, record = pretrained.init_params(self.config, state.params)
            state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))
            self.provenance["init_from"] = record
        return state

    def restore_or_init(self) -> tuple[TrainState, bool]:
        """The newest readable checkpoint if there is one, else a fresh state."""
        abstract = self.abstract_state()
        restored = self.ckpt.restore_latest(abstract)
        if restored is None:
            return self.init_state(abstract), False
        state, meta = restored
        logging.info("resumed from step %d (data position %d)", int(state.step),
                     meta.get("data_position", -1))
        return state, True

    def restore_for_use(self) -> TrainState:
        """The newest checkpoint, or a clear error when the workdir has none (eval/sample)."""
        state, found = self.restore_or_init()
        if not found and not pretrained.hf_dir(self.config):
            raise UserError(f"no readable checkpoint in {self.ckpt.directory!r}; train first "
                            "or check --workdir.")
        return state

    def run_eval(self, state: TrainState, eval_step: Any, max_batches: int | None = None,
                 batch_size: int | None = None) -> dict[str, float]:
        """Average per-example metrics of `eval_step` over the test split (padding masked out).

        Batch b uses the key fold_in(seed + 2, b), so evaluations are repeatable.
        """
        if eval_step is None:
            return {}
        test_ds = self.test_dataset()
        batch_size = batch_size or int(self.config.eval.batch_size)
        parallel.check_batch_size(batch_size, self.mesh, "eval.batch_size")
        step_fn = jax.jit(eval_step)
        base = jax.random.PRNGKey(int(self.config.seed) + 2)
        sums: dict[str, float] = {}
        count = 0.0
        batches = test_ds.eval_batches(batch_size, jax.process_index(), jax.process_count(),
                                       max_batches)
        for b, local in enumerate(batches):
            batch = parallel.shard_batch(self.mesh, local)
            mask = np.asarray(parallel.to_host(batch.pop("mask")), np.float64)
            out = parallel.to_host(step_fn(state, batch, jax.random.fold_in(base, b),
                                           self.frozen))
            for k, v in out.items():
                v = np.asarray(v, np.float64)
                v = np.broadcast_to(v, mask.shape) if v.ndim == 0 else v
                sums[k] = sums.get(k, 0.0) + float((v * mask).sum())
            count += float(mask.sum())
        return {k: v / max(count, 1.0) for k, v in sums.items()}

    def test_dataset(self):
        """The test split, loaded once."""
        if self._test_ds is None:
            self._test_ds = data_lib.create_dataset(self.config, "test")
        return self._test_ds

    def write_samples(self, state: TrainState, step: int, num: int, stem: str,
                      **kwargs: Any) -> list[str]:
        """Sample `num` outputs with a key fixed by (seed, step) and write them (process 0)."""
        if self.method.sample is None:
            return []
        rng = jax.random.fold_in(jax.random.PRNGKey(int(self.config.seed) + 1), step)
        samples = jax.device_get(self.method.sample(state, rng, num, frozen=self.frozen,
                                                    **kwargs))
        if not parallel.is_main_process():
            return []
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        return self.method.write_samples(samples, stem)


    def checkpoint_meta(self, step: int) -> dict[str, Any]:
        """JSON saved beside each checkpoint: config, data position and component provenance."""
        # The data position is the step: batches are a pure function of (seed, step).
        return {"step": step, "data_position": step, "config": self.config.to_dict(),
                "provenance": self.provenance}


def _mean_metrics(history: list[dict[str, jax.Array]]) -> dict[str, float]:
    stacked = jax.device_get(history)
    out = {k: float(np.mean([h[k] for h in stacked])) for k in stacked[0]}
    out["nonfinite_steps"] = float(np.sum([h["nonfinite_steps"] for h in stacked]))
    return out


def guard_nonfinite(train_step, policy: str):
    """Wrap a train step to flag non-finite loss/gradients; with policy "skip", undo the update.

    Skipped steps still advance `step`, so the data order and randomness stay those of an
    uninterrupted run; they are counted in the `nonfinite_steps` metric, never silent.
    """
    if policy not in NONFINITE_POLICIES:
        raise UserError(f"train.nonfinite_policy={policy!r} is unknown; "
                        f"expected one of {NONFINITE_POLICIES}.")

    def step_fn(state: TrainState, batch: dict, frozen: dict) -> tuple[TrainState, dict]:
        new_state, metrics = train_step(state, batch, frozen)
        finite = jnp.isfinite(metrics["loss"])
        if "grad_norm" in metrics:
            finite &= jnp.isfinite(metrics["grad_norm"])
        if policy == "skip":
            kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
            new_state = kept.replace(step=new_state.step)
        return new_state, {**metrics, "nonfinite_steps": 1.0 - finite.astype(jnp.float32)}

    return step_fn


def write_config(config: ml_collections.ConfigDict, workdir: str,
                 provenance: dict[str, Any] | None = None) -> None:
    """Save the resolved config as `workdir/config.json` (process 0), with the provenance of
    its components and warm start (workdir, step, config hash) under "provenance"."""
    if parallel.is_main_process():
        os.makedirs(workdir, exist_ok=True)
        out = json.loads(config.to_json_best_effort())
        if provenance:
            out["provenance"] = provenance
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train `config` in `workdir`, resuming from its newest checkpoint; returns the final state."""
    run = Run(config, workdir)
    config = run.config  # with init_from.hf, the imported checkpoint's model shape
    tc = config.train
    num_steps, batch_size = int(tc.num_steps), int(tc.batch_size)
    policy = tc.get("nonfinite_policy", "stop")
    state, _ = run.restore_or_init()
    write_config(config, workdir, run.provenance)
    start = int(jax.device_get(state.step))
    writer = MetricWriter(workdir, bool(tc.get("tensorboard", True)))
    train_step = run.jit_train_step(policy)
    stop_after = int(tc.stop_after) or num_steps
    stop: dict[str, int | None] = {"signal": None}

    def on_sigterm(signum, frame):  # preemption notice: checkpoint at the next step, then exit
        stop["signal"] = signum

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    progress = Progress(start, num_steps)
    peak = parallel.peak_flops(config)
    history: list[dict[str, jax.Array]] = []
    last_saved = start
    step = start

    def every(n: Any) -> bool:
        return bool(int(n)) and (step % int(n) == 0 or step in (num_steps, stop_after))

    try:
        while step < min(num_steps, stop_after) and stop["signal"] is None:
            local = run.train_ds.train_batch(step, batch_size, jax.process_index(),
                                             jax.process_count())
            t0 = time.perf_counter()
            state, metrics = train_step(state, parallel.shard_batch(run.mesh, local), run.frozen)
            if step == start:
                jax.block_until_ready(metrics)
                logging.info("first step (compile + run) took %.1fs", time.perf_counter() - t0)
            step += 1
            history.append(metrics)
            log_now, save_now = every(tc.log_every), every(tc.checkpoint_every)
            if log_now or save_now:
                mean = _mean_metrics(history)
                if policy == "stop" and mean["nonfinite_steps"] > 0:
                    raise NonFiniteLoss(
                        f"non-finite loss or gradients before step {step}; stopped with the last "
                        f"good checkpoint (step {last_saved}) kept in {run.ckpt.directory}.")
            if log_now:
                history = []
                mean["steps_per_sec"] = progress.rate(step)
                if run.method.tokens_per_step:  # methods that count tokens and FLOPs per step
                    mean.update(parallel.throughput(mean["steps_per_sec"],
                                                    run.method.tokens_per_step,
                                                    run.method.flops_per_step, peak))
                progress.line(step, mean)
                writer.write(step, "train", mean)
            if every(tc.eval_every):
                eval_metrics = run.run_eval(state, run.method.eval_step,
                                            int(config.eval.num_batches) or None)
                if eval_metrics:
                    writer.write(step, "eval", eval_metrics)
                    logging.info("eval at step %d: %s", step, eval_metrics)
            if every(tc.sample_every):
                run.write_samples(state, step, int(config.get("num_samples", 64)),
                                  sample_path(workdir, step))
            if save_now:
                run.ckpt.save(state, run.checkpoint_meta(step))
                last_saved = step
        if stop["signal"] is not None:
            logging.warning("received signal %s at step %d: saving a checkpoint and exiting",
                            stop["signal"], step)
            run.ckpt.save(state, run.checkpoint_meta(step), force=True)
    finally:
        run.ckpt.close()
        writer.close()
        signal.signal(signal.SIGTERM, previous)
    return state


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             num_samples: int | None = None) -> dict[str, Any]:
    """`--mode=eval`: full test-split metrics plus the method's extras, to `eval/<step>.json`."""
    run = Run(config, workdir)
    config = run.config
    try:
        state = run.restore_for_use()
        step = int(jax.device_get(state.step))
        results: dict[str, Any] = dict(run.run_eval(state, run.method.eval_step))
        if run.method.final_eval_step is not None:
            results.update(run.run_eval(state, run.method.final_eval_step, batch_size=int(
                config.eval.get("final_batch_size", config.eval.batch_size))))
        if run.method.evaluate is not None:
            rng = jax.random.fold_in(jax.random.PRNGKey(int(config.seed) + 3), step)
            results.update(run.method.evaluate(state, run.test_dataset(), rng, num_samples,
                                               run.frozen))
        if parallel.is_main_process():
            os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
            with open(os.path.join(workdir, "eval", f"{step}.json"), "w") as f:
                json.dump({"step": step, **results, "provenance": run.provenance}, f, indent=2,
                          default=_json_default)
            MetricWriter(workdir, tensorboard=False).write(
                step, "eval", {k: v for k, v in results.items() if _is_number(v)})
        logging.info("eval at step %d: %s", step, results)
        return results
    finally:
        run.ckpt.close()


def load_trained(config: ml_collections.ConfigDict, workdir: str) -> tuple[Run, TrainState]:
    """A data-free Run of a finished `workdir` and its newest state, checkpoints closed: for
    `--mode=sample` and scripts that only read a trained model (figures, tables)."""
    run = Run(config, workdir, need_data=False)
    try:
        return run, run.restore_for_use()
    finally:
        run.ckpt.close()


def sample(config: ml_collections.ConfigDict, workdir: str, num_samples: int,
           **kwargs: Any) -> list[str]:
    """`--mode=sample`: write `num_samples` samples from the newest checkpoint's EMA weights."""
    if num_samples <= 0:
        raise UserError(f"--num_samples={num_samples} must be a positive integer.")
    run, state = load_trained(config, workdir)
    step = int(jax.device_get(state.step))
    files = run.write_samples(state, step, num_samples, os.path.join(workdir, "samples"), **kwargs)
    if run.method.figures is not None and parallel.is_main_process():
        try:
            test_ds = run.test_dataset()
        except UserError as e:  # figures that need data are skipped, not fatal
            logging.warning("no test data for figures: %s", e)
            test_ds = None
        files += run.method.figures(state, test_ds, workdir, run.frozen)
    for f in files:
        logging.info("wrote %s", f)
    return files


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer))


def _json_default(v: Any) -> Any:
    return np.asarray(v).tolist()
