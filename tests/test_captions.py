"""Captioned digits, the word tokenizer, caption files and the attribute checker."""

import json

import ml_collections
import numpy as np
import pytest
from conftest import load_config
from PIL import Image

from aigc_jax.data import caption_files, create_dataset
from aigc_jax.data import captions as cap
from aigc_jax.data.words import EOT, PAD, SOT, WordTokenizer
from aigc_jax.errors import UserError
from aigc_jax.evaluation import attributes


def _data(**kw) -> ml_collections.ConfigDict:
    c = load_config("contrastive", "tiny")
    c.data.update(kw)
    return c


def test_examples_are_deterministic_and_differ_by_seed():
    a = create_dataset(_data(), "train").train_batch(3, 16)
    b = create_dataset(_data(), "train").train_batch(3, 16)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = _data()
    c.seed = 1
    other = create_dataset(c, "train").train_batch(3, 16)
    assert not np.array_equal(a["image"], other["image"])
    assert a["image"].shape == (16, 32, 32, 3) and a["image"].dtype == np.uint8
    assert a["tokens"].dtype == np.int32 and a["attributes"].shape == (16, cap.RECORD_LEN)


def test_captions_match_the_record_and_tokens():
    ds = create_dataset(_data(hold_out_templates=False), "train")
    batch = ds.examples(np.arange(200))
    assert set(batch["attributes"][:, 0]) == {1, 2}
    assert set(batch["attributes"][:, 1]) == set(range(len(cap.TEMPLATES)))
    for rec, tokens in zip(batch["attributes"], batch["tokens"], strict=True):
        caption = cap.render_caption(rec)
        assert ds.tokenizer.decode(tokens) == caption
        parsed = cap.parse_caption(caption)
        stated = parsed >= 0
        stated[1] = False  # the template id is not in the caption
        np.testing.assert_array_equal(parsed[stated], rec[stated])
        assert stated[cap.field_index(0, "digit")]  # every template names the digit
        words = caption.replace(",", "").replace(":", "").split()
        assert cap.DIGITS[rec[cap.field_index(0, "digit")]] in words
    assert batch["label"].tolist() == batch["attributes"][:, 3].tolist()


def test_held_out_templates_and_disjoint_glyphs():
    train, test = create_dataset(_data(), "train"), create_dataset(_data(), "test")
    tr = train.examples(np.arange(300))["attributes"][:, 1]
    te = test.examples(np.arange(64))["attributes"][:, 1]
    assert not set(tr) & set(cap.HELDOUT_TEMPLATES) and set(te) <= set(cap.HELDOUT_TEMPLATES)
    assert len(train.glyphs) == 1497 and len(test.glyphs) == 300
    train_bytes = {g.tobytes() for g in train.glyphs}
    shared = sum(g.tobytes() in train_bytes for g in test.glyphs)
    assert shared <= 2, shared  # sklearn's digits repeat at most a couple of 8x8 glyphs
    with pytest.raises(UserError, match="heldout_templates"):
        create_dataset(_data(heldout_templates=(99,)), "train")
    with pytest.raises(UserError, match="image_size"):
        create_dataset(_data(image_size=48), "train")
    big = create_dataset(_data(image_size=64), "test").examples(np.arange(2))
    assert big["image"].shape == (2, 64, 64, 3)


def test_tokenizer_round_trip_empty_prompt_and_unknown_words():
    tok = WordTokenizer(cap.caption_words(), cap.max_caption_tokens())
    text = "two digits: a small red 7 left of a large blue 3"
    ids = tok.encode(text)
    assert ids.shape == (tok.max_length,) and ids[0] == SOT
    assert tok.decode(ids) == text
    empty = tok.encode("")
    assert empty[:3].tolist() == [SOT, EOT, PAD] and tok.decode(empty) == ""
    with pytest.raises(UserError, match=r"outside the text encoder's vocabulary: zebra, purple\.$"):
        tok.encode("a zebra in purple")
    assert WordTokenizer.from_info(tok.to_info()).vocab == tok.vocab


def test_checker_scores_real_test_images_at_least_097():
    ds = create_dataset(_data(hold_out_templates=False, num_test_examples=1000), "test")
    batch = ds.examples(np.arange(1000))
    checker = attributes.Checker("digits")
    acc = attributes.accuracy(checker.check(batch["image"], batch["attributes"]))
    for a in attributes.ATTRIBUTES:
        assert acc[a] >= 0.97, acc
    # It can fail: shifted colours and swapped relations are caught.
    wrong = batch["attributes"].copy()
    col = cap.field_index(0, "colour")
    wrong[:, col] = (wrong[:, col] + 1) % len(cap.COLOURS)
    two = wrong[:, 0] == 2
    wrong[two, 2] = 1 - wrong[two, 2]
    bad = attributes.accuracy(checker.check(batch["image"], wrong))
    assert bad["colour"] < 0.05 and bad["all"] < 0.05
    # Captions parsed back give the same verdicts on what they state.
    caps = ds.captions(np.arange(200))
    parsed = attributes.check_captions(batch["image"][:200], caps, checker)
    assert parsed["colour"] == 1.0 and parsed["digit"] >= 0.95


def _write_pairs(tmp_path, n=10):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(
            tmp_path / f"im{i}.png")
        caption = f"a photo of thing {i % 3}"
        (tmp_path / f"im{i}.txt").write_text(caption)
        rows.append({"image": f"im{i}.png", "caption": caption})
    with open(tmp_path / "pairs.jsonl", "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.mark.parametrize("name", ["caption_folder", "caption_jsonl"])
def test_caption_files(tmp_path, name):
    _write_pairs(tmp_path)
    path = str(tmp_path if name == "caption_folder" else tmp_path / "pairs.jsonl")
    c = _data(name=name, path=path, image_size=8, max_caption_tokens=8)
    train, test = create_dataset(c, "train"), create_dataset(c, "test")
    assert train.num_examples == 9 and test.num_examples == 1
    batch = train.train_batch(0, 4)
    assert batch["image"].shape == (4, 8, 8, 3) and batch["tokens"].shape == (4, 8)
    assert train.tokenizer.decode(batch["tokens"][0]).startswith("a photo of thing")
    assert train.info()["tokenizer"] == test.info()["tokenizer"]


def test_caption_file_errors(tmp_path):
    _write_pairs(tmp_path, 3)
    (tmp_path / "im1.txt").unlink()
    caption_files.load_caption_folder.cache_clear()
    with pytest.raises(UserError, match="has no caption file"):
        create_dataset(_data(name="caption_folder", path=str(tmp_path)), "train")
    (tmp_path / "bad.jsonl").write_text('{"image": "im0.png"}\n')
    with pytest.raises(UserError, match="line 1"):
        create_dataset(_data(name="caption_jsonl", path=str(tmp_path / "bad.jsonl")), "train")


def _coco_examples(n):
    rng = np.random.default_rng(1)
    return [{"image": rng.integers(0, 255, (20, 24, 3), dtype=np.uint8),
             "captions": {"text": np.array([f"a cat number {i}".encode(), b"other"]),
                          "id": np.array([i, i + 100])}} for i in range(n)]


def test_coco_captions_through_a_stubbed_data_source(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    calls = []

    def data_source(name, split, data_dir=None):
        calls.append((name, split))
        return _coco_examples(6 if split == "train" else 2)

    monkeypatch.setattr(tfds, "data_source", data_source)
    caption_files.load_coco_captions.cache_clear()
    c = _data(name="coco_captions", image_size=16)
    test = create_dataset(c, "test")
    assert ("coco_captions", "val") in calls and test.num_examples == 2
    assert test.tokenizer.decode(test.tokens[1]) == "a cat number 1"
    caption_files.load_coco_captions.cache_clear()


def test_coco_captions_with_tfds_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")  # tfds's coco_captions builder imports TensorFlow
    caption_files.load_coco_captions.cache_clear()
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = create_dataset(_data(name="coco_captions", image_size=16), "train")
    assert ds.num_examples == 6 and ds.image_shape == (16, 16, 3)
    caption_files.load_coco_captions.cache_clear()
