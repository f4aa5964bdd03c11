"""Data sources by `config.data.name`: image sources here, text sources in `data.text`,
image-text pairs in `data.captions` (captioned digits) and `data.caption_files`, audio in
`data.audio`."""

import ml_collections

from aigc_jax.data.audio import AUDIO_SOURCES
from aigc_jax.data.base import Batch, Dataset

TEXT_SOURCES = ("text", "tokens", "tiny_shakespeare", "lm1b")
CAPTION_SOURCES = ("captioned_digits", "caption_folder", "caption_jsonl", "coco_captions")


def create_dataset(config: ml_collections.ConfigDict, split: str) -> Dataset:
    """The train or test split named by `config.data`, seeded by `config.seed`."""
    if config.data.name in CAPTION_SOURCES:
        if config.data.name == "captioned_digits":
            from aigc_jax.data import captions

            return captions.create_captioned_digits(config.data, split, int(config.seed))
        from aigc_jax.data import caption_files

        return caption_files.create_caption_dataset(config.data, split, int(config.seed))
    if config.data.name in TEXT_SOURCES:
        from aigc_jax.data import text

        return text.create_text_dataset(config, split)
    if config.data.name in AUDIO_SOURCES:
        from aigc_jax.data import audio

        return audio.create_audio_dataset(config, split)
    from aigc_jax.data import images

    return images.create_image_dataset(config.data, split, int(config.seed))


__all__ = ["CAPTION_SOURCES", "Batch", "Dataset", "create_dataset"]
