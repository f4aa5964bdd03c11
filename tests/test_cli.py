"""The CLI contract of DESIGN.md: modes, workdir layout, and one-line errors that lose nothing."""

import json
import os

import numpy as np
import pytest
from helpers import cli, tiny_flags, tree_digest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("vae_cli"))
    r = cli(*tiny_flags(), f"--workdir={workdir}", "--config.train.num_steps=40",
            "--config.train.eval_every=40", "--config.train.checkpoint_every=20",
            "--config.train.sample_every=20")
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


def test_train_writes_the_workdir_layout(trained):
    assert {"config.json", "metrics.jsonl", "checkpoints", "samples"} <= set(os.listdir(trained))
    assert sorted(os.listdir(os.path.join(trained, "checkpoints"))) == ["20", "40"]
    assert {"step_20.png", "step_40.png"} <= set(os.listdir(os.path.join(trained, "samples")))
    rows = [json.loads(line) for line in open(os.path.join(trained, "metrics.jsonl"))]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [10, 20, 30, 40]
    assert all("loss" in r and "steps_per_sec" in r for r in train_rows)
    assert any(r["split"] == "eval" and "neg_elbo" in r for r in rows)
    config = json.load(open(os.path.join(trained, "config.json")))
    assert config["train"]["num_steps"] == 40 and config["method"] == "vae"


def test_eval_mode_writes_eval_json(trained):
    r = cli(*tiny_flags(), f"--workdir={trained}", "--mode=eval")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.load(open(os.path.join(trained, "eval", "40.json")))
    assert result["step"] == 40
    assert np.isfinite(result["nll_iwae_k40"]) and result["nll_iwae_k40"] > 0


def test_sample_mode_writes_png_and_npz(trained):
    r = cli(*tiny_flags(), f"--workdir={trained}", "--mode=sample", "--num_samples=10")
    assert r.returncode == 0, r.stderr[-3000:]
    images = np.load(os.path.join(trained, "samples.npz"))["images"]
    assert images.shape == (10, 8, 8, 1) and images.dtype == np.uint8
    assert os.path.getsize(os.path.join(trained, "samples.png")) > 100


@pytest.mark.parametrize("args, expected", [
    (["--config=configs/vae.py:nope"], "unknown vae variant 'nope'"),
    (["--config.train.no_such_key=3"], "config.train.no_such_key is not a key of the config"),
    (["--config.train.num_steps=abc"], "num_steps"),
    (["--config.train.num_steps=0"], "config.train.num_steps=0 must be positive"),
    (["--config.optimizer.learning_rate=-1.0"], "learning_rate=-1.0"),
    (["--config.vae.objective=bogus"], "config.vae.objective='bogus' is unknown"),
    (["--config.data.name=idx", "--config.data.path=/no/such/folder"], "/no/such/folder"),
    (["--mode=sample", "--num_samples=0"], "--num_samples=0 must be a positive integer"),
])
def test_bad_input_is_one_clear_line_and_loses_nothing(trained, args, expected):
    before = tree_digest(trained)
    r = cli(*tiny_flags(), f"--workdir={trained}", "--config.train.num_steps=80", *args)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    error_lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert tree_digest(trained) == before


def test_eval_on_an_empty_workdir_is_a_clear_error(tmp_path):
    r = cli(*tiny_flags(), f"--workdir={tmp_path}", "--mode=sample")
    assert r.returncode == 2
    assert "holds no trained run" in r.stderr and "Traceback" not in r.stderr
