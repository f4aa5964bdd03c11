"""Image sources read on demand (data.pipeline=grain): a folder of files or a tfds data source.

`LazyImages[idx]` decodes, resizes and pads just the rows asked for, exactly as the in-memory
loaders do for the whole split, so an `ImageDataset` over it gives the same batches. Nothing is
read up front but the file list (or the tfds index) and one image for the shape. An unreadable
file stops the run with its name (data.bad_images=stop) or is replaced by the next readable
row and counted (skip): the same substitute every time, so batches stay a function of the step.
"""

import os

import numpy as np
from absl import logging
from PIL import Image

from aigc_jax.data.base import tfds_data_source
from aigc_jax.errors import UserError

BAD_IMAGES = ("stop", "skip")
MAX_SKIPS = 100  # consecutive unreadable rows before a skip gives up


class FolderReader:
    """Image files by index, sub-folder names as labels (the order of `load_folder`)."""

    def __init__(self, folder: str, suffixes: tuple[str, ...]):
        if not os.path.isdir(folder):
            raise UserError(f"data.path={folder!r} is not a folder of images.")
        self.paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder)
                            for f in files if f.lower().endswith(suffixes))
        if not self.paths:
            raise UserError(f"no images ({', '.join(suffixes)}) found under {folder!r}.")
        dirs = [os.path.relpath(os.path.dirname(p), folder) for p in self.paths]
        classes = sorted(set(dirs))
        self.labels = np.searchsorted(classes, dirs).astype(np.int32)
        self.num_classes = len(classes)

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return self.paths[i]

    def read(self, i: int, size: int, center_crop_resize) -> np.ndarray:
        """The image `i` as uint8 [H, W, 3] (resized to `size` when > 0, as `load_folder`)."""
        with Image.open(self.paths[i]) as im:
            im = im.convert("RGB")
            if size:
                im = center_crop_resize(im, size)
            return np.asarray(im)


class TfdsReader:
    """Examples of a prepared tfds split by index through `tfds.data_source` (array_record)."""

    def __init__(self, name: str, split: str, data_dir: str | None):
        self.args = (name, split, data_dir)
        self._source = tfds_data_source(name, split, data_dir)
        first = self._source[0]
        self.label_key = next((k for k in ("label", "labels") if k in first), None)
        features = self._source.dataset_info.features
        feature = features[self.label_key] if self.label_key in features else None
        self.num_classes = int(getattr(feature, "num_classes", 0) or 1)

    def __len__(self) -> int:
        return len(self._source)

    def name(self, i: int) -> str:
        return f"tfds {self.args[0]}[{self.args[1]}] example {i}"

    def read(self, i: int, size: int, center_crop_resize) -> np.ndarray:
        return np.asarray(self._source[i]["image"])

    def label(self, i: int) -> int:
        if self.label_key is None:
            return 0
        return int(np.asarray(self._source[i][self.label_key]).reshape(-1)[0])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_source": None}  # workers reopen the data source

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._source = tfds_data_source(*self.args)


class LazyImages:
    """Rows `rows` of a reader, decoded on access: `[idx]` -> uint8 [B, H, W, C]."""

    def __init__(self, reader, rows: np.ndarray, finish, size: int, bad_images: str,
                 center_crop_resize):
        if bad_images not in BAD_IMAGES:
            raise UserError(f"data.bad_images={bad_images!r} is unknown; expected one of "
                            f"{BAD_IMAGES}.")
        self.reader, self.rows, self.finish, self.size = reader, rows, finish, size
        self.bad_images, self._ccr = bad_images, center_crop_resize
        self.skipped = 0
        self.shape = (len(rows), *self.one(0).shape)

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, idx: np.ndarray) -> "LazyImages":
        """The rows `idx` of this split (a held-out cut), still unread."""
        return LazyImages(self.reader, self.rows[idx], self.finish, self.size, self.bad_images,
                          self._ccr)

    def one(self, k: int) -> np.ndarray:
        """Row `k`, finished (resized, padded); unreadable rows stop or skip by data.bad_images."""
        for attempt in range(MAX_SKIPS):
            i = int(self.rows[(k + attempt) % len(self.rows)])
            try:
                image = self.finish(self.reader.read(i, self.size, self._ccr))
            except (OSError, ValueError) as e:
                if self.bad_images == "stop":
                    raise UserError(f"cannot read image {self.reader.name(i)}: {e}; "
                                    "data.bad_images=skip skips unreadable images.") from None
                self.skipped += 1
                logging.warning("skipping unreadable image %s (%d skipped so far): %s",
                                self.reader.name(i), self.skipped, e)
                continue
            if hasattr(self, "shape") and image.shape != self.shape[1:]:
                raise UserError(f"image {self.reader.name(i)} is {image.shape}, the first is "
                                f"{self.shape[1:]}; set data.image_size to resize them all.")
            return image
        raise UserError(f"{MAX_SKIPS} images in a row from {self.reader.name(i)} are "
                        "unreadable; check data.path.")

    def __getitem__(self, idx) -> np.ndarray:
        return np.stack([self.one(int(k)) for k in np.asarray(idx).reshape(-1)])


class LazyLabels:
    """Labels of rows `rows` of a reader: from its label array, or read per example (tfds)."""

    def __init__(self, reader, rows: np.ndarray):
        self.reader, self.rows = reader, rows

    def subset(self, idx: np.ndarray) -> "LazyLabels":
        return LazyLabels(self.reader, self.rows[idx])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        rows = self.rows[np.asarray(idx).reshape(-1)]
        if hasattr(self.reader, "labels"):
            return self.reader.labels[rows]
        return np.array([self.reader.label(int(i)) for i in rows], np.int32)
