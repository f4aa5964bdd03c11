"""Image-caption pairs from users' files and from tfds, for the contrastive (and later
text-to-image) families:

- `caption_folder`: every image below `data.path` with a same-name `.txt` caption beside it
  (`cat.png` + `cat.txt`), the layout of most fine-tuning sets;
- `caption_jsonl`: a JSONL file at `data.path`, one `{"image": path, "caption": text}` per
  line, paths relative to the file's folder (the layout LAION/CC3M-style shards unpack to);
- `coco_captions`: tfds's COCO captions by name (the first of each image's captions), read
  through `tfds.data_source` (downloaded by tfds on your machine).

Images are centre-cropped and resized to `data.image_size` (uint8 [H, W, 3]); the caption
vocabulary is the words of the *training* captions (`data.min_word_count`, `data.max_vocab`),
so both splits and every later prompt share it; test words outside it become <unk>. The folder
and JSONL sources carve a test split with `data.holdout_fraction` (default 0.1).
"""

import functools
import json
import os

import ml_collections
import numpy as np
from PIL import Image

from aigc_jax.data import images as image_lib
from aigc_jax.data.base import Batch, IndexedExamples, rng_for
from aigc_jax.data.words import WordTokenizer, build_vocab
from aigc_jax.errors import UserError


class CaptionDataset(IndexedExamples):
    """Images and tokenized captions in host memory with deterministic per-step batches."""

    def __init__(self, images: np.ndarray, captions: list[str], tokenizer: WordTokenizer,
                 seed: int, source: str):
        self.images, self.captions, self.tokenizer = images, captions, tokenizer
        self.tokens = tokenizer.encode_batch(captions, strict=False)
        self.num_examples, self.seed, self.source = len(images), seed, source

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """[H, W, C] of one image."""
        return tuple(self.images.shape[1:])

    def info(self) -> dict:
        """Shapes and the tokenizer (saved as data_info.json)."""
        t = self.tokenizer.max_length
        return {"kind": "image_text", "source": self.source, "image_shape": list(self.image_shape),
                "num_classes": 0, "tokenizer": self.tokenizer.to_info(),
                "example_spec": {"image": [list(self.image_shape), "uint8"],
                                 "tokens": [[t], "int32"], "label": [[], "int32"]}}

    def examples(self, idx: np.ndarray) -> Batch:
        """Rows `idx`: image, tokens and a zero label."""
        return {"image": self.images[idx], "tokens": self.tokens[idx],
                "label": np.zeros(len(idx), np.int32)}


def _load_image(path: str, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            return np.asarray(image_lib._center_crop_resize(im, size) if size else im)
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def _stack(images: list[np.ndarray], where: str) -> np.ndarray:
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise UserError(f"images of {where} differ in size {sorted(shapes)[:3]}; set "
                        "data.image_size to resize them.")
    return np.stack(images)


@functools.lru_cache(maxsize=4)
def load_caption_folder(folder: str, size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """(images, captions) of every image below `folder` with a same-name .txt beside it."""
    if not os.path.isdir(folder):
        raise UserError(f"data.path={folder!r} is not a folder of images with .txt captions.")
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                   if f.lower().endswith(image_lib.IMAGE_SUFFIXES))
    if not paths:
        raise UserError(f"no images ({', '.join(image_lib.IMAGE_SUFFIXES)}) found under "
                        f"{folder!r}.")
    captions = []
    for p in paths:
        txt = os.path.splitext(p)[0] + ".txt"
        if not os.path.isfile(txt):
            raise UserError(f"image {p} has no caption file {txt}.")
        with open(txt, encoding="utf-8") as f:
            captions.append(f.read().strip())
    return _stack([_load_image(p, size) for p in paths], folder), tuple(captions)


@functools.lru_cache(maxsize=4)
def load_caption_jsonl(path: str, size: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """(images, captions) of a JSONL file of {"image": path, "caption": text} lines."""
    if not os.path.isfile(path):
        raise UserError(f"data.path={path!r} is not a JSONL file of image-caption pairs.")
    root = os.path.dirname(os.path.abspath(path))
    images, captions = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                image, caption = row["image"], row["caption"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path} line {n} is not a JSON object with 'image' and "
                                "'caption'.") from None
            images.append(_load_image(os.path.join(root, image), size))
            captions.append(str(caption))
    if not images:
        raise UserError(f"{path} holds no image-caption pairs.")
    return _stack(images, path), tuple(captions)


@functools.lru_cache(maxsize=4)
def load_coco_captions(split: str, size: int, data_dir: str | None,
                       max_examples: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """(images, first captions) of tfds coco_captions `split`, resized to `size`."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source("coco_captions", split=split, data_dir=data_dir)
    except Exception as e:  # tfds raises many types; the user needs the one line.
        raise UserError(f"tfds dataset 'coco_captions' split {split!r} is not available: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    n = len(source) if not max_examples else min(len(source), max_examples)
    images, captions = [], []
    for i in range(n):
        ex = source[i]
        im = Image.fromarray(np.asarray(ex["image"])).convert("RGB")
        images.append(np.asarray(image_lib._center_crop_resize(im, size) if size else im))
        text = np.asarray(ex["captions"]["text"]).reshape(-1)[0]
        captions.append(text.decode("utf-8") if isinstance(text, bytes) else str(text))
    return _stack(images, "coco_captions"), tuple(captions)


def _load(cfg: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, list[str]]:
    name, size = cfg.name, int(cfg.get("image_size", 0))
    if name == "coco_captions":
        tfds_split = {"train": "train", "test": "val"}[split]
        tfds_split = cfg.get(f"tfds_{split}_split", tfds_split) or tfds_split
        images, captions = load_coco_captions(tfds_split, size, cfg.get("tfds_data_dir") or None,
                                              int(cfg.get("max_examples", 0)))
        return images, list(captions)
    if name == "caption_folder":
        images, captions = load_caption_folder(str(cfg.path), size)
    elif name == "caption_jsonl":
        images, captions = load_caption_jsonl(str(cfg.path), size)
    else:
        raise UserError(f"data.name={name!r} is not a caption source.")
    fraction = float(cfg.get("holdout_fraction", 0.0)) or 0.1
    perm = rng_for(image_lib.SPLIT_SEED, 3).permutation(len(images))
    n_test = max(int(round(len(images) * fraction)), 1)
    if n_test >= len(images):
        raise UserError(f"data.path={cfg.path!r} has {len(images)} pairs: too few to hold out "
                        f"{fraction:.0%} for testing.")
    idx = np.sort(perm[-n_test:] if split == "test" else perm[:-n_test])
    return images[idx], [captions[i] for i in idx]


def create_caption_dataset(cfg: ml_collections.ConfigDict, split: str,
                           seed: int) -> CaptionDataset:
    """The `split` of the caption source named by `config.data`."""
    images, captions = _load(cfg, split)
    train_captions = captions if split == "train" else _load(cfg, "train")[1]
    words = build_vocab(train_captions, int(cfg.get("min_word_count", 1)),
                        int(cfg.get("max_vocab", 0)))
    tokenizer = WordTokenizer(words, int(cfg.get("max_caption_tokens", 32)))
    return CaptionDataset(images, captions, tokenizer, seed, str(cfg.name))
