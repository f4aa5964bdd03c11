"""Data sources by `config.data.name`: image sources here, text sources in `data.text`."""

import ml_collections

from aigc_jax.data.base import Batch, Dataset

TEXT_SOURCES = ("text", "tiny_shakespeare", "lm1b")


def create_dataset(config: ml_collections.ConfigDict, split: str) -> Dataset:
    """The train or test split named by `config.data`, seeded by `config.seed`."""
    if config.data.name in TEXT_SOURCES:
        from aigc_jax.data import text

        return text.create_text_dataset(config, split)
    from aigc_jax.data import images

    return images.create_image_dataset(config.data, split, int(config.seed))


__all__ = ["Batch", "Dataset", "create_dataset"]
