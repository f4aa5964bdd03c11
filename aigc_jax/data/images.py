"""Image sources (digits, IDX files, image folders, tfds) as in-memory random-access datasets.

Images are kept as uint8 [N, H, W, C]; methods scale them to the range they model. Binarized
images stay uint8 with values {0, 255}.
"""

import functools
import gzip
import os
import struct
from collections.abc import Iterator

import ml_collections
import numpy as np
from PIL import Image

from aigc_jax.data import lazy_images
from aigc_jax.data.base import (
    Batch,
    epoch_indices,
    padded_eval_indices,
    process_slice,
    rng_for,
    tfds_data_source,
)
from aigc_jax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
BINARIZE = ("none", "static", "dynamic")
# Fixed seed for static binarization and for carving a held-out split: the split and the
# binarized test set must not change with the run's seed, or test numbers would not compare.
SPLIT_SEED = 20261123


class ImageDataset:
    """An image split in host memory with deterministic per-step batches and augmentation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, seed: int, num_classes: int,
                 random_flip: bool = False, binarize: str = "none", train: bool = True):
        if binarize not in BINARIZE:
            raise UserError(f"data.binarize={binarize!r} is unknown; expected one of {BINARIZE}.")
        lazy = isinstance(images, lazy_images.LazyImages)
        if lazy and binarize == "static" or (binarize == "dynamic" and not train and lazy):
            raise UserError(f"data.binarize={binarize!r} binarizes the whole split once, which "
                            "a streaming source cannot; use data.pipeline=memory.")
        self.images = images
        self.labels = labels if lazy else labels.astype(np.int32)
        self.num_examples = len(images)
        self.num_classes = num_classes
        self.seed, self.random_flip, self.train = seed, random_flip, train
        self.binarize = binarize
        if binarize == "static" or (binarize == "dynamic" and not train):
            # Evaluation on a dynamically binarized dataset uses one fixed binarization.
            self.images = _sample_binary(self.images, rng_for(SPLIT_SEED, 1))
            self.binarize = "none"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """[H, W, C] of one image."""
        return tuple(self.images.shape[1:])

    def info(self) -> dict:
        """What a method needs to build its model without the data (saved in the workdir)."""
        return {"kind": "image", "image_shape": list(self.image_shape),
                "num_classes": self.num_classes,
                "example_spec": {"image": [list(self.image_shape), "uint8"],
                                 "label": [[], "int32"]}}

    def _rows(self, idx: np.ndarray, step: int, augment: bool) -> Batch:
        images = self.images[idx]
        if augment:
            rng = rng_for(self.seed, 1, step)
            if self.random_flip:
                flip = rng.random(len(idx)) < 0.5
                images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
            if self.binarize == "dynamic":
                images = _sample_binary(images, rng)
        return {"image": images, "label": self.labels[idx]}

    def train_batch(self, step: int, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """This process's rows of the global batch for `step` (shuffled, augmented)."""
        idx = epoch_indices(self.num_examples, self.seed, step, batch_size)
        batch = self._rows(idx, step, augment=True)
        rows = process_slice(batch_size, process_index, process_count)
        return {k: v[rows] for k, v in batch.items()}

    def eval_batches(self, batch_size: int, process_index: int = 0, process_count: int = 1,
                     max_batches: int | None = None) -> Iterator[Batch]:
        """Ordered, unaugmented batches over the split, padded at the end (see `mask`)."""
        rows = process_slice(batch_size, process_index, process_count)
        for idx, mask in padded_eval_indices(self.num_examples, batch_size, max_batches):
            batch = self._rows(idx, 0, augment=False)
            batch["mask"] = mask
            yield {k: v[rows] for k, v in batch.items()}


def _sample_binary(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bernoulli samples with p = intensity / 255, as uint8 {0, 255}."""
    return ((rng.random(images.shape) < images / 255.0) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Loaders: each returns (images uint8 [N, H, W, C], labels int32 [N], num_classes).


@functools.lru_cache(maxsize=4)
def load_digits() -> tuple[np.ndarray, np.ndarray, int]:
    """scikit-learn's 1,797 8x8 digits, scaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return images, d.target.astype(np.int32), 10


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
        return array.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None


def _find_file(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    raise UserError(f"IDX file {stem}[.gz] not found in data.path={folder!r}.")


@functools.lru_cache(maxsize=4)
def load_idx(folder: str, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """MNIST-format IDX files (MNIST, Fashion-MNIST, EMNIST): `train-*` or `t10k-*` in `folder`."""
    if not os.path.isdir(folder):
        raise UserError(f"data.path={folder!r} is not a folder of IDX files.")
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(_find_file(folder, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find_file(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or len(images) != len(labels):
        raise UserError(f"IDX files in {folder!r} have images {images.shape} and labels "
                        f"{labels.shape}; expected [N, H, W] and [N].")
    return images[..., None], labels.astype(np.int32), int(labels.max()) + 1


@functools.lru_cache(maxsize=4)
def load_folder(folder: str, image_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Every image below `folder`, resized to `image_size`; sub-folder names become labels."""
    if not os.path.isdir(folder):
        raise UserError(f"data.path={folder!r} is not a folder of images.")
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder) for f in files
                   if f.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder!r}.")
    classes = sorted({os.path.relpath(os.path.dirname(p), folder) for p in paths})
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if image_size:
                    im = _center_crop_resize(im, image_size)
                images.append(np.asarray(im))
        except OSError as e:
            raise UserError(f"cannot read image {p}: {e}") from None
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise UserError(f"images under {folder!r} differ in size {sorted(shapes)[:3]}; "
                        "set data.image_size to resize them.")
    labels = np.array([classes.index(os.path.relpath(os.path.dirname(p), folder))
                       for p in paths], np.int32)
    return np.stack(images), labels, len(classes)


def _center_crop_resize(im: Image.Image, size: int, crop: int = 0) -> Image.Image:
    w, h = im.size
    side = crop or min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    im = im.crop((left, top, left + side, top + side))
    return im.resize((size, size), Image.BICUBIC) if im.size != (size, size) else im


@functools.lru_cache(maxsize=4)
def load_tfds(name: str, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """A tfds image dataset by name, read whole through `tfds.data_source` (no TensorFlow)."""
    source = tfds_data_source(name, split, data_dir)
    n = len(source)
    first = source[0]
    images = np.empty((n, *np.asarray(first["image"]).shape), np.uint8)
    labels = np.zeros(n, np.int32)
    label_key = next((k for k in ("label", "labels") if k in first), None)
    for i in range(n):
        ex = source[i]
        images[i] = ex["image"]
        if label_key is not None:
            labels[i] = np.asarray(ex[label_key]).reshape(-1)[0]
    num_classes = int(labels.max()) + 1
    return images, labels, num_classes


TFDS_SPLITS = {"train": "train", "test": "test"}


def _resize_all(images: np.ndarray, size: int, crop: int) -> np.ndarray:
    if not size or (images.shape[1] == size and images.shape[2] == size and not crop):
        return images
    mode = "L" if images.shape[-1] == 1 else "RGB"
    out = [np.asarray(_center_crop_resize(Image.fromarray(a.squeeze(-1) if mode == "L" else a,
                                                          mode), size, crop)) for a in images]
    out = np.stack(out)
    return out[..., None] if mode == "L" else out


def _holdout(images, labels, split: str, fraction: float):
    perm = rng_for(SPLIT_SEED, 2).permutation(len(images))
    n_test = int(round(len(images) * fraction))
    idx = perm[-n_test:] if split == "test" else perm[:-n_test]
    if isinstance(images, lazy_images.LazyImages):  # a cut of the index, nothing read
        return images.subset(idx), labels.subset(idx)
    return images[idx], labels[idx]


def _finisher(size: int, crop: int, pad: int):
    """What `create_image_dataset` does to the whole split, for one image [H, W, C]."""
    def finish(image: np.ndarray) -> np.ndarray:
        image = image[..., None] if image.ndim == 2 else image
        image = _resize_all(image[None], size, crop)[0]
        return np.pad(image, ((pad, pad), (pad, pad), (0, 0))) if pad else image
    return finish


def lazy_source(cfg: ml_collections.ConfigDict, name: str, source_split: str):
    """(images, labels, num_classes) read on demand, for data.pipeline=grain."""
    if name == "folder":
        reader = lazy_images.FolderReader(str(cfg.path), IMAGE_SUFFIXES)
    else:
        tfds_split = cfg.get(f"tfds_{source_split}_split", TFDS_SPLITS[source_split])
        reader = lazy_images.TfdsReader(name, tfds_split, cfg.get("tfds_data_dir") or None)
    rows = np.arange(len(reader))
    size = int(cfg.get("image_size", 0))
    finish = _finisher(size, int(cfg.get("crop", 0)), int(cfg.get("pad", 0)))
    images = lazy_images.LazyImages(reader, rows, finish, size if name == "folder" else 0,
                                    str(cfg.get("bad_images", "stop")), _center_crop_resize)
    return images, lazy_images.LazyLabels(reader, rows), reader.num_classes


def create_image_dataset(cfg: ml_collections.ConfigDict, split: str, seed: int) -> ImageDataset:
    """The `split` ("train" or "test") of the image source named by `config.data`."""
    name = cfg.name
    holdout = float(cfg.get("holdout_fraction", 0.0))
    source_split = cfg.get("source_split", "train") if holdout > 0 else split
    lazy = cfg.get("pipeline", "memory") == "grain" and name not in ("digits", "idx")
    if lazy:
        images, labels, num_classes = lazy_source(cfg, name, source_split)
        holdout = holdout or (0.1 if name == "folder" else 0.0)
    elif name == "digits":
        images, labels, num_classes = load_digits()
        holdout = holdout or 1 / 6  # 1,497 train / 300 test images
    elif name == "idx":
        images, labels, num_classes = load_idx(str(cfg.path), source_split)
    elif name == "folder":
        images, labels, num_classes = load_folder(str(cfg.path), int(cfg.get("image_size", 0)))
        holdout = holdout or 0.1
    else:
        tfds_split = cfg.get(f"tfds_{source_split}_split", TFDS_SPLITS[source_split])
        images, labels, num_classes = load_tfds(name, tfds_split, cfg.get("tfds_data_dir") or None)
    if holdout > 0:
        images, labels = _holdout(images, labels, split, holdout)
    pad = int(cfg.get("pad", 0))
    if not lazy:
        images = _resize_all(images, int(cfg.get("image_size", 0)), int(cfg.get("crop", 0)))
    if pad and not lazy:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return ImageDataset(images, labels, seed=seed, num_classes=num_classes,
                        random_flip=bool(cfg.get("random_flip", False)) and split == "train",
                        binarize=cfg.get("binarize", "none"), train=split == "train")
