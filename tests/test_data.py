"""Data sources: deterministic per-step batches, process shards, IDX/folder/tfds/digits."""

import gzip
import struct

import ml_collections
import numpy as np
import pytest
from PIL import Image

from aigc_jax.data import images as image_data
from aigc_jax.errors import UserError


def _cfg(**kw):
    base = {"name": "digits", "path": "", "image_size": 0, "crop": 0, "pad": 0,
            "random_flip": False, "binarize": "none", "holdout_fraction": 0.0,
            "source_split": "train", "tfds_data_dir": ""}
    base.update(kw)
    return ml_collections.ConfigDict(base)


def _write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I",
                                                                      *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_digits_split_is_fixed_and_disjoint():
    train = image_data.create_image_dataset(_cfg(), "train", seed=0)
    test = image_data.create_image_dataset(_cfg(), "test", seed=123)
    assert (train.num_examples, test.num_examples) == (1497, 300)
    assert train.image_shape == (8, 8, 1) and train.images.dtype == np.uint8
    assert train.images.max() == 255
    rows = {a.tobytes() for a in train.images}
    assert sum(a.tobytes() in rows for a in test.images) < 10  # sklearn has a few duplicates


def test_batches_are_a_pure_function_of_seed_and_step():
    ds = image_data.create_image_dataset(_cfg(binarize="dynamic", random_flip=True), "train", 0)
    a, b = ds.train_batch(7, 64), ds.train_batch(7, 64)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(ds.train_batch(8, 64)["image"], a["image"])
    assert set(np.unique(a["image"])) <= {0, 255}
    other_seed = image_data.create_image_dataset(_cfg(), "train", 1)
    assert not np.array_equal(other_seed.train_batch(7, 64)["label"], a["label"])


def test_epoch_covers_every_example_once():
    ds = image_data.create_image_dataset(_cfg(), "train", 0)
    n = ds.num_examples
    idx = np.concatenate([image_data.epoch_indices(n, 0, s, 499) for s in range(3)])
    assert sorted(idx) == list(range(n))


def test_process_shards_tile_the_global_batch():
    ds = image_data.create_image_dataset(_cfg(), "train", 0)
    whole = ds.train_batch(3, 8)
    parts = [ds.train_batch(3, 8, p, 4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate([p["image"] for p in parts]), whole["image"])


def test_eval_batches_cover_the_split_with_a_mask():
    ds = image_data.create_image_dataset(_cfg(), "test", 0)
    batches = list(ds.eval_batches(128))
    assert len(batches) == 3 and all(len(b["image"]) == 128 for b in batches)
    assert sum(b["mask"].sum() for b in batches) == 300
    assert batches[-1]["mask"][:300 - 256].all() and not batches[-1]["mask"][300 - 256:].any()


def test_static_binarization_is_fixed():
    a = image_data.create_image_dataset(_cfg(binarize="static"), "train", 0)
    b = image_data.create_image_dataset(_cfg(binarize="static"), "train", 5)
    np.testing.assert_array_equal(a.images, b.images)
    assert set(np.unique(a.images)) == {0, 255}


def test_resize_and_pad():
    ds = image_data.create_image_dataset(_cfg(image_size=16, pad=2), "train", 0)
    assert ds.image_shape == (20, 20, 1)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}",
                   rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n), gz)
    image_data.load_idx.cache_clear()
    ds = image_data.create_image_dataset(_cfg(name="idx", path=str(tmp_path)), "test", 0)
    assert ds.num_examples == 10 and ds.image_shape == (28, 28, 1)
    carved = image_data.create_image_dataset(
        _cfg(name="idx", path=str(tmp_path), holdout_fraction=0.2, source_split="test"),
        "train", 0)
    assert carved.num_examples == 8


def test_corrupt_or_missing_idx_is_a_clear_error(tmp_path):
    image_data.load_idx.cache_clear()
    with pytest.raises(UserError, match="not found"):
        image_data.create_image_dataset(_cfg(name="idx", path=str(tmp_path)), "train", 0)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3))
    image_data.load_idx.cache_clear()
    with pytest.raises(UserError, match="cannot read IDX file"):
        image_data.create_image_dataset(_cfg(name="idx", path=str(tmp_path)), "train", 0)


def test_image_folder_with_class_subfolders(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(np.full((20, 30, 3), i * 20, np.uint8)).save(
                tmp_path / cls / f"{i}.png")
    ds = image_data.create_image_dataset(_cfg(name="folder", path=str(tmp_path), image_size=16),
                                         "train", 0)
    assert ds.image_shape == (16, 16, 3) and ds.num_examples == 18
    assert ds.num_classes == 2 and set(ds.labels) == {0, 1}
    with pytest.raises(UserError, match="is not a folder of images"):
        image_data.create_image_dataset(_cfg(name="folder", path=str(tmp_path / "missing")),
                                        "train", 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        image_data.create_image_dataset(_cfg(name="folder", path=str(tmp_path / "empty")),
                                        "train", 0)


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    image_data.load_tfds.cache_clear()
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = image_data.create_image_dataset(_cfg(name="mnist"), "train", 0)
    assert ds.num_examples == 12 and ds.image_shape == (28, 28, 1)
    batch = ds.train_batch(0, 4)
    assert batch["image"].shape == (4, 28, 28, 1) and batch["label"].dtype == np.int32
    image_data.load_tfds.cache_clear()
