"""Checkpoints, data info and tokenizers are restored without pickle (which can run code)."""

import pickle

import numpy as np
import pytest
from conftest import load_config, tiny_vae_config

from aigc_jax import train


def _forbid_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while restoring")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", _no_pickle_np_load(np.load))


def _no_pickle_np_load(original):
    def load(*args, **kwargs):
        assert not kwargs.get("allow_pickle", False), "np.load with allow_pickle"
        return original(*args, **kwargs)

    return load


def _gpt_config(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("to be or not to be, that is the question.\n" * 40)
    c = load_config("lm", "tiny")
    c.data.path = str(text)
    c.train.num_steps, c.train.checkpoint_every, c.train.eval_every = 10, 10, 0
    c.train.tensorboard = False
    return c


@pytest.mark.parametrize("family", ["vae", "lm"])
def test_resume_eval_and_sample_never_unpickle(tmp_path, monkeypatch, family):
    config = tiny_vae_config(num_steps=10) if family == "vae" else _gpt_config(tmp_path)
    config.optimizer.schedule = "constant"  # so a longer resumed run keeps the same schedule
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    _forbid_pickle(monkeypatch)
    with pytest.raises(AssertionError):  # the guard itself works
        pickle.loads(b"\x80\x04K\x01.")
    config.train.num_steps = 20  # resumes from the step-10 checkpoint
    state = train.train_and_evaluate(config, workdir)
    assert int(state.step) == 20
    train.sample(config, workdir, 2)
