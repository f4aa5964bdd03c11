"""A killed run resumes exactly; SIGTERM checkpoints; an unreadable checkpoint is skipped."""

import os
import shutil
import signal

import pytest
from conftest import tiny_vae_config
from helpers import assert_same_state, popen_cli, tiny_flags, wait_for

from aigc_jax import train
from aigc_jax.errors import UserError

NUM_STEPS = 800


def _config(num_steps=NUM_STEPS, checkpoint_every=100):
    c = tiny_vae_config(num_steps)
    c.train.checkpoint_every = checkpoint_every
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.sample_every = 0
    return c


def _flags(workdir, num_steps=NUM_STEPS, checkpoint_every=100):
    return [*tiny_flags(), f"--workdir={workdir}", f"--config.train.num_steps={num_steps}",
            f"--config.train.checkpoint_every={checkpoint_every}", "--config.train.log_every=50",
            "--config.train.eval_every=0", "--config.train.sample_every=0"]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    reference = train.train_and_evaluate(_config(), str(tmp_path / "reference"))
    killed = tmp_path / "killed"
    proc = popen_cli(*_flags(killed))
    wait_for(killed / "checkpoints" / "300", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(killed / "checkpoints" / str(NUM_STEPS))
    state, found = train.Run(_config(), str(killed)).restore_or_init()
    assert found and 300 <= int(state.step) < NUM_STEPS  # really resumes mid-run
    resumed = train.train_and_evaluate(_config(), str(killed))
    assert int(resumed.step) == NUM_STEPS
    assert_same_state(reference, resumed)


def test_sigterm_saves_a_checkpoint_before_exit(tmp_path):
    workdir = tmp_path / "preempted"
    proc = popen_cli(*_flags(workdir, num_steps=10**6, checkpoint_every=10**5))
    wait_for(workdir / "metrics.jsonl", proc)  # first log line: training is under way
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == train.PREEMPTED_EXIT_CODE  # not 0: not finished
    steps = [int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()]
    assert len(steps) == 1 and 50 <= steps[0] < 10**5


def test_truncated_newest_checkpoint_is_skipped_and_kept(tmp_path):
    reference = train.train_and_evaluate(_config(600, 200), str(tmp_path / "reference"))
    workdir = tmp_path / "damaged"
    shutil.copytree(tmp_path / "reference", workdir)
    newest = workdir / "checkpoints" / "600"
    truncated = 0
    for root, _, files in os.walk(newest / "state"):
        for f in files:
            path = os.path.join(root, f)
            if os.path.getsize(path) > 1000:
                with open(path, "r+b") as fh:
                    fh.truncate(os.path.getsize(path) // 3)
                truncated += 1
    assert truncated
    state, found = train.Run(_config(600, 200), str(workdir)).restore_or_init()
    assert found and int(state.step) == 400
    moved = os.listdir(str(workdir / "checkpoints") + "_unreadable")
    assert len(moved) == 1 and moved[0].startswith("600-")
    resumed = train.train_and_evaluate(_config(600, 200), str(workdir))
    assert_same_state(reference, resumed)


def test_checkpoint_from_another_config_is_an_error_not_skipped(tmp_path):
    train.train_and_evaluate(_config(20, 10), str(tmp_path))
    other = _config(20, 10)
    other.model.hidden = (32,)
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(UserError, match="different model or optimizer config"):
        train.train_and_evaluate(other, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert not os.path.exists(str(tmp_path / "checkpoints") + "_unreadable")
