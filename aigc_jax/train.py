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
from aigc_jax import methods, parallel, plotting, pretrained
from aigc_jax.checkpoint import Checkpointer
from aigc_jax.data import pipeline
from aigc_jax.errors import UserError
from aigc_jax.logging import MetricWriter, PassProgress, Progress
from aigc_jax.methods.base import Method, sample_path
from aigc_jax.state import TrainState

NONFINITE_POLICIES = ("stop", "skip")
# Exit status of a run stopped by SIGTERM (preemption) or SIGINT (Ctrl-C) after it saved a
# checkpoint: EX_TEMPFAIL, "try again later". Rerunning the same command resumes it.
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class NonFiniteLoss(UserError):
    """Raised when the loss is NaN/inf and `train.nonfinite_policy` is "stop"."""


class Preempted(Exception):
    """Training stopped early on a signal, with a checkpoint of the step it reached."""

    def __init__(self, signum: int, step: int, directory: str):
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} with a "
                         f"checkpoint in {directory}; rerun the same command to resume.")


class Run:
    """What the three modes share: mesh, datasets, components, method, checkpointer.

    Components (`config.components.<role>`) are loaded before the method is built, since the
    method's shapes depend on them (a latent model's input is its autoencoder's latent). A
    resumed run reloads each component at the step its first launch recorded.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, need_data: bool = True,
                 training: bool = True):
        parallel.maybe_initialize_distributed()
        config = pretrained.resolve_config(config)  # init_from.hf: the checkpoint's shape
        self.config, self.workdir = config, workdir
        self.mesh = parallel.create_mesh(config)
        self.training = training
        if training:  # eval and sample pad their batches to the devices instead
            parallel.check_batch_size(int(config.train.batch_size), self.mesh)
        self.rep = parallel.replicated(self.mesh)
        self.ckpt = Checkpointer(workdir, int(config.train.get("keep_checkpoints", 3)),
                                 bool(config.train.get("async_checkpoint", True)))
        try:
            self.saved_meta = self.ckpt.latest_meta()
            saved = self.saved_meta.get("provenance", {})
            self.components = components_lib.load_all(
                config, self.mesh, methods.accepted_roles(config.method),
                saved.get("components"))
            pipeline.check_pipeline(config.data)
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
        """A global batch with the train batch's shapes (from data, or zeros in sample mode);
        outside training its size is rounded up to split over this mesh's devices, so a run
        trained on other devices still evaluates and samples."""
        batch_size = int(self.config.train.batch_size)
        if not self.training:
            batch_size = parallel.padded_batch_size(batch_size, self.mesh)
        if self.train_ds is not None:
            local = self.train_ds.train_batch(0, batch_size, jax.process_index(),
                                              jax.process_count())
        else:
            local = {k: np.zeros((batch_size // jax.process_count(),
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
        if pretrained.hf_dir(self.config):  # transformers GPT-2 / diffusers AutoencoderKL
            params, record = pretrained.init_params(self.config, state.params)
            if jax.tree.structure(state.ema_params) == jax.tree.structure(params):
                ema = jax.tree.map(jnp.copy, params)
            else:  # several networks, an EMA for some (ema_keys)
                ema = {k: jax.tree.map(jnp.copy, params[k]) for k in state.ema_params}
            state = state.replace(params=params, ema_params=ema)
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
        batch_size = parallel.padded_batch_size(batch_size or int(self.config.eval.batch_size),
                                                self.mesh)
        step_fn = jax.jit(eval_step)
        base = jax.random.PRNGKey(int(self.config.seed) + 2)
        sums: dict[str, float] = {}
        count = 0.0
        batches = test_ds.eval_batches(batch_size, jax.process_index(), jax.process_count(),
                                       max_batches)
        total = -(-int(test_ds.num_examples) // batch_size)
        progress = PassProgress(f"eval ({getattr(eval_step, '__name__', 'eval_step')})",
                                min(total, max_batches or total))
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
            progress.update(b + 1)
        progress.done()
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


# Schedules whose shape depends on train.num_steps: changing it on resume re-stretches them.
LENGTH_DEPENDENT_SCHEDULES = ("cosine", "linear")


def check_resume(config: ml_collections.ConfigDict, saved: dict[str, Any], step: int) -> bool:
    """Compare a resumed run's config with the one its checkpoint was written with. A changed
    `train.num_steps` under a decaying schedule is a UserError (it would silently re-stretch
    the schedule); a checkpoint already at or past `num_steps` is a warning. Returns whether
    there is anything left to train."""
    num_steps = int(config.train.num_steps)
    before = int(saved.get("train", {}).get("num_steps", num_steps))
    schedule = str(config.optimizer.get("schedule", "constant"))
    if before != num_steps and schedule in LENGTH_DEPENDENT_SCHEDULES:
        raise UserError(
            f"config.train.num_steps={num_steps} differs from the {before} this run was trained "
            f"with (checkpoint at step {step}), which would re-stretch its {schedule} "
            f"learning-rate schedule; keep train.num_steps={before} (train.stop_after stops "
            "early) or use a new --workdir.")
    if step >= num_steps:
        logging.warning("the checkpoint at step %d is already at or past train.num_steps=%d: "
                        "nothing to train (config.json left as it was).", step, num_steps)
        return False
    return True


def learning_rate(config: ml_collections.ConfigDict, step: int) -> float:
    """The base optimizer's learning rate at `step` (the schedule counts optimizer updates)."""
    from aigc_jax.optim import create_schedule

    accum = max(int(config.optimizer.get("grad_accum_steps", 1)), 1)
    return float(create_schedule(config.optimizer, int(config.train.num_steps))(step // accum))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train `config` in `workdir`, resuming from its newest checkpoint; returns the final state.

    SIGTERM (preemption) and SIGINT (Ctrl-C) save a checkpoint at the next step boundary and
    raise `Preempted` (`main` exits with PREEMPTED_EXIT_CODE); a second Ctrl-C stops at once.
    """
    run = Run(config, workdir)
    config = run.config  # with init_from.hf, the imported checkpoint's model shape
    tc = config.train
    num_steps = int(tc.num_steps)
    policy = tc.get("nonfinite_policy", "stop")
    state, resumed = run.restore_or_init()
    start = int(jax.device_get(state.step))
    if resumed and not check_resume(config, run.saved_meta.get("config", {}), start):
        run.ckpt.close()
        return state
    write_config(config, workdir, run.provenance)
    writer = MetricWriter(workdir, bool(tc.get("tensorboard", True)))
    train_step = run.jit_train_step(policy)
    stop_after = int(tc.stop_after) or num_steps
    stop: dict[str, int | None] = {"signal": None}

    def on_signal(signum, frame):  # checkpoint at the next step, then exit
        stop["signal"] = signum
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, previous[signal.SIGINT])
        logging.warning("received %s: saving a checkpoint at the next step, then stopping",
                        signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    progress = Progress(start, num_steps)
    peak = parallel.peak_flops(config)
    history: list[dict[str, jax.Array]] = []
    last_saved = start
    step = start

    def every(n: Any) -> bool:
        return bool(int(n)) and (step % int(n) == 0 or step in (num_steps, stop_after))

    # The input pipeline (data.pipeline) starts at the resumed step: batches depend on the step.
    batches = pipeline.train_batches(run.train_ds, config, run.mesh, start,
                                     min(num_steps, stop_after), jax.process_index(),
                                     jax.process_count())
    waited = []  # seconds each step waited for its batch, since the last log line
    try:
        while step < min(num_steps, stop_after) and stop["signal"] is None:
            t_wait = time.perf_counter()
            batch = next(batches)
            t0 = time.perf_counter()
            if step != start:  # the first wait includes starting the workers
                waited.append(t0 - t_wait)
            state, metrics = train_step(state, batch, run.frozen)
            if step == start:
                jax.block_until_ready(metrics)
                logging.info("first step (compile + run) took %.1fs", time.perf_counter() - t0)
                progress.restart(step + 1)  # the rate and ETA leave the compile out
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
                mean["data_wait_ms"] = 1000.0 * float(np.mean(waited)) if waited else 0.0
                waited = []
                mean["learning_rate"] = learning_rate(config, step - 1)
                if run.method.tokens_per_step:  # methods that count tokens and FLOPs per step
                    mean.update(parallel.throughput(mean["steps_per_sec"],
                                                    run.method.tokens_per_step,
                                                    run.method.flops_per_step, peak))
                progress.line(step, mean)
                writer.write(step, "train", mean)
            t_other = time.perf_counter()
            if every(tc.eval_every):
                eval_metrics = run.run_eval(state, run.method.eval_step,
                                            int(config.eval.num_batches) or None)
                if eval_metrics:
                    writer.write(step, "eval", eval_metrics)
                    logging.info("eval at step %d: %s", step, eval_metrics)
            if every(tc.sample_every):
                logging.info("sampling %d at step %d", int(config.get("num_samples", 64)), step)
                files = run.write_samples(state, step, int(config.get("num_samples", 64)),
                                          sample_path(workdir, step))
                writer.write_files(step, "samples", files)
            if save_now:
                run.ckpt.save(state, run.checkpoint_meta(step))
                last_saved = step
            progress.exclude(time.perf_counter() - t_other)
        if stop["signal"] is not None:
            run.ckpt.save(state, run.checkpoint_meta(step), force=True)
            run.ckpt.wait()
            raise Preempted(stop["signal"], step, run.ckpt.directory)
        logging.info("finished %d steps; waiting for the last checkpoint to be written", step)
    finally:
        batches.close()  # ends grain worker processes
        run.ckpt.close()
        writer.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return state


def import_pretrained(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """`--mode=import`: the weights `config.init_from.hf` names, written as step 0 of a new
    `workdir` (config.json, data_info.json, checkpoint and the method's files, such as an
    autoencoder's latent_stats.json), so the import is an ordinary run: a component for other
    runs, evaluable, exportable, and trained further by `--mode=train` on the same workdir."""
    if not pretrained.hf_dir(config):
        raise UserError("--mode=import needs config.init_from.hf: the directory (or hub name) "
                        "of the weights to import.")
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpt_dir) and any(name.isdigit() for name in os.listdir(ckpt_dir)):
        raise UserError(f"--workdir={workdir!r} already holds checkpoints; import into a new "
                        "workdir (nothing was changed).")
    run = Run(config, workdir, need_data=False)
    try:
        state = run.init_state()
        write_config(run.config, workdir, run.provenance)
        if parallel.is_main_process():
            files = {"data_info.json": run.info, **pretrained.workdir_files(run.config)}
            for name, content in files.items():
                with open(os.path.join(workdir, name), "w") as f:
                    json.dump(content, f, indent=2)
        run.ckpt.save(state, run.checkpoint_meta(0), force=True)
        run.ckpt.wait()
        logging.info("imported %s as step 0 of %s", pretrained.hf_dir(config), workdir)
    finally:
        run.ckpt.close()
    return state


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             num_samples: int | None = None) -> dict[str, Any]:
    """`--mode=eval`: full test-split metrics plus the method's extras, to `eval/<step>.json`."""
    _require_workdir(workdir, "eval", config)
    run = Run(config, workdir, training=False)
    config = run.config
    try:
        state = run.restore_for_use()
        step = int(jax.device_get(state.step))
        # eval.final_max_examples bounds both passes (rounded up to whole batches).
        limit = int(config.eval.get("final_max_examples", 0))

        def max_batches(batch_size: int) -> int | None:
            return -(-limit // parallel.padded_batch_size(batch_size, run.mesh)) if limit else None

        eval_bs = int(config.eval.batch_size)
        results: dict[str, Any] = dict(run.run_eval(state, run.method.eval_step,
                                                    max_batches(eval_bs)))
        if run.method.final_eval_step is not None:
            final_bs = int(config.eval.get("final_batch_size", eval_bs))
            results.update(run.run_eval(state, run.method.final_eval_step, max_batches(final_bs),
                                        batch_size=final_bs))
        if run.method.evaluate is not None:
            rng = jax.random.fold_in(jax.random.PRNGKey(int(config.seed) + 3), step)
            results.update(run.method.evaluate(state, run.test_dataset(), rng, num_samples,
                                               run.frozen))
        # Files a method keeps with the run for later readers (the autoencoder's latent stats).
        workdir_files = results.pop("workdir_files", {})
        if parallel.is_main_process():
            for name, obj in workdir_files.items():
                with open(os.path.join(workdir, name), "w") as f:
                    json.dump(obj, f, indent=2, default=_json_default)
            os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
            with open(os.path.join(workdir, "eval", f"{step}.json"), "w") as f:
                json.dump({"step": step, **results, "provenance": run.provenance}, f, indent=2,
                          default=_json_default)
            writer = MetricWriter(workdir, bool(config.train.get("tensorboard", True)))
            writer.write(step, "eval", {k: v for k, v in results.items() if _is_number(v)})
            writer.close()
        logging.info("eval at step %d: %s", step, results)
        return results
    finally:
        run.ckpt.close()


def load_trained(config: ml_collections.ConfigDict, workdir: str) -> tuple[Run, TrainState]:
    """A data-free Run of a finished `workdir` and its newest state, checkpoints closed: for
    `--mode=sample` and scripts that only read a trained model (figures, tables)."""
    _require_workdir(workdir, "sample", config)
    run = Run(config, workdir, need_data=False, training=False)
    try:
        return run, run.restore_for_use()
    finally:
        run.ckpt.close()


def output_stem(workdir: str, output: str | None, existing_ok: bool = False) -> str:
    """The path stem for `--mode=sample` files: `workdir/NAME` for `--output=NAME` (an error if
    its files exist), else the first free one of samples, samples_1, samples_2, ..."""
    def taken(stem: str) -> bool:
        return any(os.path.exists(stem + ext) for ext in (".png", ".npz", ".txt"))

    if output:
        if os.path.basename(output) != output or output.startswith("."):
            raise UserError(f"--output={output!r} must be a plain file name (no directories).")
        stem = os.path.join(workdir, output)
        if taken(stem) and not existing_ok:
            raise UserError(f"--output={output!r}: {stem}.* already exists; choose another "
                            "name (earlier samples are never overwritten).")
        return stem
    return plotting.free_stem(workdir, "samples")


def sample(config: ml_collections.ConfigDict, workdir: str, num_samples: int,
           output: str | None = None, **kwargs: Any) -> list[str]:
    """`--mode=sample`: write `num_samples` samples from the newest checkpoint's EMA weights to
    `output_stem(workdir, output)` (never over earlier samples), plus the method's figures."""
    if num_samples <= 0:
        raise UserError(f"--num_samples={num_samples} must be a positive integer.")
    stem = output_stem(workdir, output)
    run, state = load_trained(config, workdir)
    step = int(jax.device_get(state.step))
    files = run.write_samples(state, step, num_samples, stem, **kwargs)
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


def _require_workdir(workdir: str, mode: str, config: ml_collections.ConfigDict) -> None:
    # Checked before Run, whose checkpointer would create the directory. A run straight from
    # imported weights (init_from.hf) has no trained workdir yet.
    if not os.path.isdir(workdir) and not str(config.init_from.get("hf", "")):
        raise UserError(f"--workdir={workdir!r} does not exist; --mode={mode} needs the workdir "
                        "of a trained run.")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer))


def _json_default(v: Any) -> Any:
    return np.asarray(v).tolist()
