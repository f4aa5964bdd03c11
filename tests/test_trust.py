"""A run you can trust: one-line errors for the first hour's mistakes, eval that honours its
bounds, and nothing created or overwritten by a command that fails."""

import os
import sys

import pytest
from conftest import load_config, tiny_vae_config
from helpers import cli, tiny_flags

from aigc_jax import train
from aigc_jax.data import base as data_base
from aigc_jax.errors import UserError


def _one_error_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--config=configs/no_such_file.py:digits"], "'configs/no_such_file.py' does not exist"),
    (["--config=configs/diffusion.py:digits", "--config.sampler.eta=-1"],
     "config.sampler.eta=-1.0 must not be negative"),
])
def test_config_mistakes_are_one_line(tmp_path, args, expected):
    line = _one_error_line(cli(*args, f"--workdir={tmp_path / 'w'}"))
    assert expected in line
    assert "num_steps" not in line  # eta alone is to blame
    assert not (tmp_path / "w").exists()


def test_no_config_flag_is_one_line(tmp_path):
    line = _one_error_line(cli(f"--workdir={tmp_path}"))
    assert "--config is required" in line


@pytest.mark.parametrize("make_bad", ["under_a_file", "is_a_file"])
def test_invalid_workdir_is_one_line(tmp_path, make_bad):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    workdir = blocker / "run" if make_bad == "under_a_file" else blocker
    line = _one_error_line(cli(*tiny_flags(), f"--workdir={workdir}",
                               "--config.train.num_steps=2"))
    assert f"--workdir={str(workdir)!r} cannot be created" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_workdir_is_one_line(tmp_path):
    workdir = tmp_path / "ro"
    workdir.mkdir()
    workdir.chmod(0o500)
    line = _one_error_line(cli(*tiny_flags(), f"--workdir={workdir}",
                               "--config.train.num_steps=2"))
    assert "is not writable" in line


@pytest.mark.parametrize("mode", ["eval", "sample"])
def test_eval_and_sample_on_a_missing_workdir_do_not_create_it(tmp_path, mode):
    workdir = tmp_path / "never_trained"
    line = _one_error_line(cli(*tiny_flags(), f"--workdir={workdir}", f"--mode={mode}"))
    assert "does not exist" in line
    assert not workdir.exists()


def test_programmatic_eval_on_a_missing_workdir_does_not_create_it(tmp_path):
    workdir = tmp_path / "never_trained"
    with pytest.raises(UserError, match="does not exist"):
        train.evaluate(tiny_vae_config(10), str(workdir))
    assert not workdir.exists()


def test_tfds_without_its_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(UserError, match=r"\[tfds\]"):
        data_base.tfds_data_source("mnist", "train", None)

    class FakeTfds:
        @staticmethod
        def data_source(*args, **kwargs):
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", FakeTfds)
    with pytest.raises(UserError, match=r"needs tensorflow .*\[tfds\]"):
        data_base.tfds_data_source("mnist", "train", None)


def test_tfds_text_source_goes_through_the_same_check(monkeypatch):
    from aigc_jax.data import text

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    text.read_tfds_text.cache_clear()
    with pytest.raises(UserError, match=r"\[tfds\]"):
        text.read_tfds_text("tiny_shakespeare", "train", "", 0)


@pytest.fixture(scope="module")
def tiny_vae_run(tmp_path_factory):
    config = tiny_vae_config(20)
    config.eval.cache_dir = str(tmp_path_factory.mktemp("ref_cache"))
    config.eval.extractor = "digits"
    workdir = str(tmp_path_factory.mktemp("vae"))
    train.train_and_evaluate(config, workdir)
    return config, workdir


def test_vae_eval_honours_num_samples(tiny_vae_run):
    config, workdir = tiny_vae_run
    plain = train.evaluate(config, workdir)
    assert not any(k.startswith("fd") for k in plain)  # off by default (eval.fid_num_samples=0)
    results = train.evaluate(config, workdir, num_samples=40)
    assert results["protocol"]["num_samples"] == 40
    fd = [k for k in results if k.startswith("fd")]
    assert fd and results[fd[0]] > 0


def test_vae_config_rejects_an_unknown_extractor():
    from aigc_jax.methods.vae import validate

    c = load_config("vae", "digits")
    c.eval.extractor = "clip"
    with pytest.raises(UserError, match="eval.extractor='clip' is unknown"):
        validate(c)


def test_diffusion_vlb_is_bounded_by_vlb_max_timesteps():
    import jax
    import numpy as np
    from test_diffusion import INFO, tiny_config

    from aigc_jax.methods.diffusion import method as diffusion

    config = tiny_config()  # T = 50
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    batch = {"image": images, "label": np.arange(4, dtype=np.int32)}
    exact_method = diffusion.create(config, INFO)
    state = exact_method.init_state(jax.random.PRNGKey(0), batch)
    exact = jax.jit(exact_method.final_eval_step)(state, batch, jax.random.PRNGKey(1))
    assert float(exact["vlb_num_timesteps"]) == 50
    config.eval.vlb_max_timesteps = 10
    bounded = jax.jit(diffusion.create(config, INFO).final_eval_step)
    estimates = [bounded(state, batch, jax.random.PRNGKey(i)) for i in range(16)]
    assert all(float(e["vlb_num_timesteps"]) == 10 for e in estimates)
    # Unbiased (stratified over [0, T)): the mean over keys and images is near the exact VLB.
    mean = np.mean([np.asarray(e["vlb_bpd"]) for e in estimates])
    np.testing.assert_allclose(mean, np.mean(exact["vlb_bpd"]), rtol=0.1)
