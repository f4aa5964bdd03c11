"""Image grids and curves for samples, figures and experiments."""

import os

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, ncols: int | None = None, padding: int = 1,
              pad_value: int = 255) -> np.ndarray:
    """Tile uint8 [N, H, W, C] images into one uint8 [rows*H', cols*W', C] array."""
    images = np.asarray(images)
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.full((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c),
                   pad_value, images.dtype)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = images[i]
    return grid


def save_image_grid(images: np.ndarray, path: str, ncols: int | None = None,
                    scale: int = 0) -> str:
    """Write uint8 [N, H, W, C] images as one PNG grid; small images are upscaled for viewing."""
    grid = make_grid(images, ncols)
    if not scale:  # at least 256 px overall and 32 px a tile
        scale = max(1, 256 // max(grid.shape[:2]), 32 // images.shape[1])
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    mode = "L" if grid.shape[-1] == 1 else "RGB"
    Image.fromarray(grid.squeeze(-1) if mode == "L" else grid, mode).save(path)
    return path


def free_stem(directory: str, name: str, exts: tuple[str, ...] = (".png", ".npz", ".txt")
              ) -> str:
    """The first path stem of `directory/name`, `name_1`, `name_2`, ... with no file of `exts`
    yet, so new outputs never overwrite earlier ones."""
    stem, i = os.path.join(directory, name), 0
    while any(os.path.exists(stem + ext) for ext in exts):
        i += 1
        stem = os.path.join(directory, f"{name}_{i}")
    return stem
