"""Streaming input (data.pipeline=grain, token files, lazy image folders and tfds sources): the
same batches as the in-memory path, bounded host memory, per-process rows, clear errors."""

import json
import multiprocessing
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from conftest import load_config
from PIL import Image

from aigc_jax.data import images as image_data
from aigc_jax.data import pipeline, prepare, token_files
from aigc_jax.data import text as text_data
from aigc_jax.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _corpus(tmp_path, lines=400):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over {i % 7} lazy dogs.\n"
                            for i in range(lines)))
    return path


def _lm_configs(tmp_path, chunk_chars=4096):
    """The tiny GPT on a text file (in memory) and on its prepared token files (memmap)."""
    text = load_config("lm", "tiny")
    text.data.path = str(_corpus(tmp_path))
    prepare.prepare_token_files(text, str(tmp_path / "tokens"), chunk_chars, progress=False)
    tokens = load_config("lm", "tiny")
    tokens.data.name, tokens.data.path = "tokens", str(tmp_path / "tokens")
    return text, tokens


def test_token_files_and_grain_give_the_in_memory_batches(tmp_path):
    text_cfg, tok_cfg = _lm_configs(tmp_path)
    memory = text_data.create_text_dataset(text_cfg, "train")
    streamed = text_data.create_text_dataset(tok_cfg, "train")
    assert isinstance(streamed.tokens, np.memmap)
    assert streamed.info()["tokenizer"] == memory.info()["tokenizer"]
    np.testing.assert_array_equal(np.asarray(streamed.tokens), memory.tokens)
    it = pipeline.grain_batches(streamed, 5, 12, 8)  # reader threads, from a resumed step
    for step, batch in enumerate(it, start=5):
        np.testing.assert_array_equal(batch["tokens"], memory.train_batch(step, 8)["tokens"])
    assert step == 11
    val = text_data.create_text_dataset(tok_cfg, "test")
    first = next(val.eval_batches(4))["tokens"]
    assert first.shape == (4, tok_cfg.model.block_size + 1)
    assert len({int(w) for w in val.eval_order(np.arange(val.num_examples))}) == val.num_examples


def test_prepare_resumes_an_interrupted_write(tmp_path):
    text_cfg, tok_cfg = _lm_configs(tmp_path, chunk_chars=2048)
    folder = tmp_path / "tokens"
    whole = (folder / "train.bin").read_bytes()
    meta = json.loads((folder / "meta.json").read_text())
    # As if killed after the first chunk was recorded, in the middle of writing the next one.
    train = open(text_cfg.data.path).read()[:meta["splits"]["train.bin"]["chars"]]
    first = prepare._chunk_end(train, 0, 2048)
    meta["complete"] = False
    meta["splits"]["train.bin"].update(chars_done=first, tokens=first)  # char tokens = chars
    del meta["splits"]["val.bin"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with open(folder / "train.bin", "r+b") as f:
        f.truncate(2 * first + 1001)  # a torn write past the recorded chunk
    os.remove(folder / "val.bin")
    with pytest.raises(UserError, match="not completely prepared"):
        text_data.create_text_dataset(tok_cfg, "train")
    prepare.prepare_token_files(text_cfg, str(folder), 2048, progress=False)
    assert (folder / "train.bin").read_bytes() == whole
    assert token_files.read_meta(str(folder))["complete"]


def test_truncated_token_file_is_one_line(tmp_path):
    _, tok_cfg = _lm_configs(tmp_path)
    path = tmp_path / "tokens" / "val.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(UserError, match="not a whole number of uint16 tokens: it is truncated"):
        text_data.create_text_dataset(tok_cfg, "test")
    path.write_bytes(data[:-2])
    with pytest.raises(UserError, match="records .* truncated"):
        text_data.create_text_dataset(tok_cfg, "test")


MEMORY_CHILD = r"""
import json, os, resource, sys
import numpy as np
from aigc_jax.data import pipeline, token_files
folder = sys.argv[1]
ds = token_files.TokenFileDataset(os.path.join(folder, "train.bin"), np.uint16, None, 256, 0,
                                  {"kind": "byte", "vocab_size": 256}, "big")
it = pipeline.grain_batches(ds, 0, 400, 64, buffer=4)
next(it)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in it:
    pass
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "tokens": ds.num_tokens}))
"""


def test_iterating_a_1gb_token_file_keeps_host_memory_small(tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "train.bin", "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of token 0 that takes no disk
    env = {**os.environ, "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(folder)], capture_output=True,
                         text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    assert rss["tokens"] == 1 << 29
    # 400 batches of 64 x 257 tokens from a 1 GiB file: peak RSS grows by well under 64 MiB.
    assert rss["after_kb"] - rss["before_kb"] < 64 * 1024, rss


def _folder(tmp_path, n=40, corrupt=None):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = tmp_path / "imgs" / ("cat" if i % 2 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{i:03d}.jpg"
        if i == corrupt:
            path.write_bytes(b"not a jpeg")
        else:
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), np.uint8)).save(path)
    return str(tmp_path / "imgs")


def _img_cfg(path, **kw):
    base = {"name": "folder", "path": path, "image_size": 12, "crop": 0, "pad": 2,
            "random_flip": True, "binarize": "none", "holdout_fraction": 0.0,
            "source_split": "train", "tfds_data_dir": "", "pipeline": "memory",
            "num_workers": 0, "prefetch": 2, "bad_images": "stop"}
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_lazy_folder_in_worker_processes_gives_the_in_memory_batches(tmp_path):
    path = _folder(tmp_path)
    memory = image_data.create_image_dataset(_img_cfg(path), "train", seed=3)
    lazy = image_data.create_image_dataset(_img_cfg(path, pipeline="grain"), "train", seed=3)
    assert not isinstance(lazy.images, np.ndarray) and lazy.image_shape == memory.image_shape
    it = pipeline.grain_batches(lazy, 2, 8, 8, num_workers=2)  # decode + flip in 2 workers
    for step, batch in enumerate(it, start=2):
        want = memory.train_batch(step, 8)
        for k in ("image", "label"):
            np.testing.assert_array_equal(batch[k], want[k])
    it.close()
    want = next(image_data.create_image_dataset(_img_cfg(path), "test", 3).eval_batches(4))
    got = next(image_data.create_image_dataset(_img_cfg(path, pipeline="grain"), "test",
                                               3).eval_batches(4))
    np.testing.assert_array_equal(got["image"], want["image"])


def _rows(args):
    path, process_index = args
    ds = image_data.create_image_dataset(_img_cfg(path, pipeline="grain"), "train", seed=1)
    it = pipeline.grain_batches(ds, 0, 4, 8, process_index, 2)
    return [b["image"] for b in it]


def test_two_processes_read_disjoint_rows_whose_union_is_the_global_batch(tmp_path):
    path = _folder(tmp_path)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        p0, p1 = pool.map(_rows, [(path, 0), (path, 1)])
    whole = image_data.create_image_dataset(_img_cfg(path, pipeline="grain"), "train", seed=1)
    for step in range(4):
        assert p0[step].shape[0] == p1[step].shape[0] == 4
        rows0 = {r.tobytes() for r in p0[step]}
        assert not rows0 & {r.tobytes() for r in p1[step]}
        np.testing.assert_array_equal(np.concatenate([p0[step], p1[step]]),
                                      whole.train_batch(step, 8)["image"])


def test_unreadable_image_mid_folder_stops_or_is_skipped_and_counted(tmp_path):
    path = _folder(tmp_path, corrupt=17)
    ds = image_data.create_image_dataset(_img_cfg(path, pipeline="grain"), "train", seed=0)
    bad = sorted(os.listdir(os.path.join(path, "cat")))
    assert "017.jpg" in bad
    with pytest.raises(UserError, match=r"cannot read image .*017\.jpg.*bad_images=skip"):
        for _ in pipeline.grain_batches(ds, 0, 10, 8):  # raised through grain's threads
            pass
    ds = image_data.create_image_dataset(_img_cfg(path, pipeline="grain", bad_images="skip"),
                                         "train", seed=0)
    for step in range(10):
        assert ds.train_batch(step, 8)["image"].shape == (8, 16, 16, 3)
    assert ds.images.skipped > 0
    with pytest.raises(UserError, match="bad_images='maybe' is unknown"):
        image_data.create_image_dataset(_img_cfg(path, pipeline="grain", bad_images="maybe"),
                                        "train", 0)


def test_lazy_tfds_source_matches_in_memory_and_unprepared_name_is_one_line(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    kw = {"name": "mnist", "image_size": 0, "pad": 0, "random_flip": False}
    image_data.load_tfds.cache_clear()
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        memory = image_data.create_image_dataset(_img_cfg("", **kw), "train", 0)
        lazy = image_data.create_image_dataset(_img_cfg("", pipeline="grain", **kw), "train", 0)
        for step in range(3):
            want, got = memory.train_batch(step, 4), lazy.train_batch(step, 4)
            np.testing.assert_array_equal(got["image"], want["image"])
            np.testing.assert_array_equal(got["label"], want["label"])
    image_data.load_tfds.cache_clear()
    empty = _img_cfg("", name="mnist", pipeline="grain", tfds_data_dir=str(tmp_path / "none"))
    with pytest.raises(UserError, match="tfds dataset 'mnist'") as e:
        image_data.create_image_dataset(empty, "train", 0)
    assert "\n" not in str(e.value)


def test_unknown_pipeline_is_one_line():
    with pytest.raises(UserError, match="data.pipeline='stream' is unknown"):
        pipeline.check_pipeline(ml_collections.ConfigDict({"pipeline": "stream"}))
