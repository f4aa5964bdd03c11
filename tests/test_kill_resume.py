"""Kill training with SIGKILL at random moments (also mid-save) many times; the run that finally
completes must equal an uninterrupted one, bit for bit, on CPU."""

import json
import os
import random
import signal
import time

import jax
import numpy as np
import pytest
from conftest import load_config, tiny_vae_config
from helpers import popen_cli, tiny_flags

from aigc_jax import train

STEPS = 600
KILLS = 4


def _vae_case(tmp_path):
    c = tiny_vae_config(STEPS)
    c.train.checkpoint_every = 25  # frequent saves make kills during a save likely
    c.train.log_every = 25
    c.train.eval_every = 0
    c.train.sample_every = 0
    flags = [*tiny_flags(), f"--config.train.num_steps={STEPS}",
             "--config.train.checkpoint_every=25", "--config.train.log_every=25",
             "--config.train.eval_every=0", "--config.train.sample_every=0"]
    return c, flags


def _gpt_case(tmp_path):
    """The tiny GPT on a small local text file (AdamW, cosine schedule, windows from the step)."""
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"line {i}: the quick brown fox jumps over {i % 7} lazy dogs.\n"
                            for i in range(300)))
    c = load_config("lm", "tiny")
    c.data.path = str(text)
    overrides = {"train.num_steps": STEPS, "train.checkpoint_every": 25, "train.log_every": 25,
                 "train.eval_every": 0, "train.sample_every": 0, "train.tensorboard": False}
    for key, value in overrides.items():
        section, leaf = key.split(".")
        c[section][leaf] = value
    flags = ["--config=configs/lm.py:tiny", f"--config.data.path={text}",
             *(f"--config.{k}={v}" for k, v in overrides.items())]
    return c, flags


CASES = {"vae": _vae_case, "lm": _gpt_case}


def _logged_step(workdir) -> int:
    """The newest step in `workdir/metrics.jsonl` (0 before the first row)."""
    try:
        with open(workdir / "metrics.jsonl") as f:
            rows = [json.loads(line) for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return 0
    return max((int(r.get("step", 0)) for r in rows), default=0)


@pytest.mark.parametrize("method", sorted(CASES))
def test_random_sigkills_then_resume_equal_uninterrupted(tmp_path, method):
    config, flags = CASES[method](tmp_path)
    reference = train.train_and_evaluate(config, str(tmp_path / "reference"))
    workdir = tmp_path / "killed"
    rng = random.Random(1234)
    # Kill once training has logged a random target step (plus a random few ms, so some kills
    # land mid-save): tied to progress rather than wall time, so a fast machine cannot finish
    # the run before the last kill.
    targets = sorted(rng.sample(range(50, int(0.7 * STEPS), 25), KILLS))
    steps_seen = []
    for target in targets:
        proc = popen_cli(*flags, f"--workdir={workdir}")
        deadline = time.time() + 300
        while _logged_step(workdir) < target and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpts = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
        steps_seen.append(max(ckpts, default=0))
        (workdir / "metrics.jsonl").unlink(missing_ok=True)  # rows of this try only
    assert steps_seen[-1] < STEPS, "the run finished before the last kill; lengthen it"
    final = train.train_and_evaluate(config, str(workdir))
    assert int(final.step) == STEPS
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.params),
                 jax.device_get(final.params))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.opt_state),
                 jax.device_get(final.opt_state))


def test_sigkills_on_the_streaming_path_resume_to_the_in_memory_run(tmp_path):
    """Token files (memmap) through grain with 2 worker processes, SIGKILLed twice: the run that
    completes equals the uninterrupted in-memory run on the same text, and no worker outlives
    its killed training process."""
    import psutil

    from aigc_jax.data import prepare

    steps = 300
    config, flags = _gpt_case(tmp_path)
    config.train.num_steps = steps
    reference = train.train_and_evaluate(config, str(tmp_path / "reference"))
    tokens = tmp_path / "tokens"
    prepare.prepare_token_files(config, str(tokens), progress=False)
    stream = {"data.name": "tokens", "data.path": str(tokens), "data.pipeline": "grain",
              "data.num_workers": 2, "train.num_steps": steps}
    flags = [*flags, *(f"--config.{k}={v}" for k, v in stream.items())]
    workdir = tmp_path / "killed"
    rng = random.Random(99)
    for target in sorted(rng.sample(range(50, 200, 25), 2)):
        proc = popen_cli(*flags, f"--workdir={workdir}")
        deadline = time.time() + 300
        while _logged_step(workdir) < target and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.005)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len([w for w in workers if "spawn_main" in " ".join(w.cmdline())]) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, f"workers outlived the killed run: {alive}"
        (workdir / "metrics.jsonl").unlink(missing_ok=True)
    for key, value in stream.items():
        section, leaf = key.split(".")
        config[section][leaf] = value
    final = train.train_and_evaluate(config, str(workdir))
    assert int(final.step) == steps
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(reference.params),
                 jax.device_get(final.params))
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert all("data_wait_ms" in r for r in rows if "loss" in r)
