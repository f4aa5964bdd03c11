"""Audio sources (a folder of WAV files, tfds speech_commands / nsynth) as in-memory clips.

Every clip is read once, resampled to `data.sample_rate` with `scipy.signal.resample_poly`,
kept mono as int16 and padded with `data.pad` samples of silence on each side (so training
windows also start and end in silence, as generation does). Training examples are windows of
`data.window` samples: the clips of step s are a slice of per-epoch permutations and the
offsets inside them come from `rng_for(seed, 4, s)`, so a resumed run sees exactly the batches
of an uninterrupted one. Evaluation visits every clip once, from the start of its leading
silence, over `data.eval_window` samples; `weight` marks the samples of the clip itself (not
the padding), which are the ones scored.

Batches: {"audio": float32 [B, T] in [-1, 1], "label": int32 [B], "offset": int32 [B] (where
the window starts in its padded clip: the clip's onset is at `pad`)} (+ "weight" float32
[B, T] and "mask" bool [B] in evaluation).
"""

import functools
import math
import os
import re
from collections.abc import Iterator

import ml_collections
import numpy as np
from absl import logging

from aigc_jax.data.base import Batch, epoch_indices, padded_eval_indices, process_slice, rng_for
from aigc_jax.errors import UserError

AUDIO_SOURCES = ("wav_folder", "speech_commands", "nsynth")
# tfds audio: (native sample rate, label key path, train split, test split).
TFDS_AUDIO = {"speech_commands": (16000, "label", "train", "test"),
              "nsynth": (16000, "instrument/family", "train", "test")}
SPLIT_SEED = 20261202  # fixed: the held-out clips must not change with the run's seed


class AudioDataset:
    """One split: clips concatenated in one int16 array, each with `pad` silence on both sides."""

    def __init__(self, clips: list[np.ndarray], labels: np.ndarray, *, sample_rate: int,
                 window: int, eval_window: int, pad: int, seed: int, num_classes: int,
                 names: list[str], source: str):
        padded = [np.pad(c, (pad, pad)) for c in clips]
        lengths = np.array([len(c) for c in padded], np.int64)
        short = np.flatnonzero(lengths < window)
        if len(short):
            i = int(short[0])
            raise UserError(
                f"clip {names[i]} has {len(clips[i])} samples at {sample_rate} Hz "
                f"({len(clips[i]) / sample_rate:.3f} s, plus data.pad={pad} on each side), "
                f"fewer than data.window={window}; use a shorter window or more padding.")
        self.audio = np.concatenate(padded) if padded else np.zeros(0, np.int16)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths, self.pad = lengths, pad
        self.labels = labels.astype(np.int32)
        self.num_examples = len(clips)
        self.sample_rate, self.window, self.eval_window = sample_rate, window, eval_window
        self.seed, self.num_classes, self.names, self.source = seed, num_classes, names, source

    def info(self) -> dict:
        """What a method needs to build its model without the data (saved in the workdir)."""
        return {"kind": "audio", "sample_rate": self.sample_rate, "window": self.window,
                "num_classes": self.num_classes, "source": self.source, "pad": self.pad,
                "example_spec": {"audio": [[self.window], "float32"], "label": [[], "int32"],
                                 "offset": [[], "int32"]}}

    def _windows(self, idx: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
        pos = self.starts[idx, None] + offsets[:, None] + np.arange(length)  # [B, T]
        inside = offsets[:, None] + np.arange(length) < self.lengths[idx, None]
        audio = np.where(inside, self.audio[np.minimum(pos, len(self.audio) - 1)], 0)
        return audio.astype(np.float32) / 32768.0

    def train_batch(self, step: int, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """This process's rows of the global batch for `step`: random windows of random clips."""
        idx = epoch_indices(self.num_examples, self.seed, step, batch_size)
        high = self.lengths[idx] - self.window + 1
        offsets = (rng_for(self.seed, 4, step).random(batch_size) * high).astype(np.int64)
        rows = process_slice(batch_size, process_index, process_count)
        audio = self._windows(idx, offsets, self.window)
        return {"audio": audio[rows], "label": self.labels[idx][rows],
                "offset": offsets[rows].astype(np.int32)}

    def eval_batches(self, batch_size: int, process_index: int = 0, process_count: int = 1,
                     max_batches: int | None = None) -> Iterator[Batch]:
        """Every clip once from the start of its padding; `weight` marks the clip's own samples."""
        rows = process_slice(batch_size, process_index, process_count)
        t = np.arange(self.eval_window)
        for idx, mask in padded_eval_indices(self.num_examples, batch_size, max_batches):
            offsets = np.zeros(len(idx), np.int64)
            weight = (t >= self.pad) & (t < self.lengths[idx, None] - self.pad)
            batch = {"audio": self._windows(idx, offsets, self.eval_window),
                     "label": self.labels[idx], "offset": offsets.astype(np.int32),
                     "weight": weight.astype(np.float32),
                     "mask": mask}
            yield {k: v[rows] for k, v in batch.items()}

    def clip(self, i: int) -> np.ndarray:
        """Clip i without its padding, float32 [L] in [-1, 1]."""
        s = self.starts[i] + self.pad
        return self.audio[s:s + self.lengths[i] - 2 * self.pad].astype(np.float32) / 32768.0


# ---------------------------------------------------------------------------------------------
# Reading and resampling.


def to_float(data: np.ndarray) -> np.ndarray:
    """PCM samples of any WAV dtype to float32 in [-1, 1]."""
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    return data.astype(np.float32)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float32 [L] from `rate` to `target` Hz (polyphase, scipy.signal.resample_poly)."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] to int16 (clipped), the storage format of every clip."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def read_wav(path: str, sample_rate: int, mix_to_mono: bool) -> np.ndarray:
    """One WAV file as int16 [L] at `sample_rate`; unreadable or multi-channel files are errors."""
    from scipy.io import wavfile

    try:
        rate, data = wavfile.read(path)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"cannot read WAV file {path}: {e}") from None
    if data.ndim == 2 and data.shape[1] > 1:
        if not mix_to_mono:
            raise UserError(f"WAV file {path} has {data.shape[1]} channels; expected mono, or "
                            "set data.mix_to_mono=True to average the channels.")
        data = to_float(data).mean(axis=1)
    return to_int16(resample(to_float(data.reshape(-1)), int(rate), sample_rate))


def _split_folder(paths: list[str], cfg: ml_collections.ConfigDict, split: str) -> list[str]:
    """The files of `split`: names matching `data.test_pattern` (a regex) are the test split;
    without a pattern, a fixed random `data.holdout_fraction` of the files."""
    pattern = str(cfg.get("test_pattern", ""))
    if pattern:
        test = np.array([re.search(pattern, os.path.basename(p)) is not None for p in paths])
        if not test.any() or test.all():
            raise UserError(f"data.test_pattern={pattern!r} matches {int(test.sum())} of "
                            f"{len(paths)} files; it must select some but not all of them.")
    else:
        frac = float(cfg.get("holdout_fraction", 0.0)) or 0.1
        test = np.zeros(len(paths), bool)
        num_test = max(1, round(len(paths) * frac))
        test[rng_for(SPLIT_SEED, 1).permutation(len(paths))[:num_test]] = True
    return [p for p, t in zip(paths, test, strict=True) if t == (split == "test")]


@functools.lru_cache(maxsize=4)
def load_wav_folder(folder: str, sample_rate: int, mix_to_mono: bool
                    ) -> tuple[list[str], list[np.ndarray], list[str]]:
    """(paths, int16 clips, class names) of every .wav below `folder` (sub-folders: classes)."""
    if not os.path.isdir(folder):
        raise UserError(f"data.path={folder!r} is not a folder of WAV files.")
    paths = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs
                   if f.lower().endswith(".wav"))
    if not paths:
        raise UserError(f"no .wav files found under {folder!r}.")
    classes = sorted({os.path.relpath(os.path.dirname(p), folder) for p in paths})
    logging.info("reading %d WAV files (%d classes) from %s at %d Hz", len(paths), len(classes),
                 folder, sample_rate)
    return paths, [read_wav(p, sample_rate, mix_to_mono) for p in paths], classes


@functools.lru_cache(maxsize=4)
def load_tfds_audio(name: str, split: str, data_dir: str, sample_rate: int,
                    max_examples: int) -> tuple[list[np.ndarray], np.ndarray, int]:
    """(int16 clips, labels, number of classes) of a tfds audio dataset, via `data_source`."""
    import tensorflow_datasets as tfds

    rate, label_key = TFDS_AUDIO[name][:2]
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # tfds raises many types; the user needs the one line.
        raise UserError(f"tfds dataset {name!r} split {split!r} is not available: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    n = len(source) if max_examples <= 0 else min(len(source), max_examples)
    clips, labels = [], np.zeros(n, np.int32)
    for i in range(n):
        ex = source[i]
        audio = np.asarray(ex["audio"])
        if audio.ndim > 1 and audio.shape[-1] > 1:
            raise UserError(f"tfds {name}[{split}] example {i} has {audio.shape[-1]} channels; "
                            "expected mono.")
        clips.append(to_int16(resample(to_float(audio.reshape(-1)), rate, sample_rate)))
        value = ex
        for k in label_key.split("/"):
            value = value[k]
        labels[i] = int(np.asarray(value).reshape(-1)[0])
    return clips, labels, int(labels.max()) + 1 if n else 0


def create_audio_dataset(config: ml_collections.ConfigDict, split: str) -> AudioDataset:
    """The `split` ("train" or "test") of the audio source named by `config.data`."""
    cfg = config.data
    rate, window = int(cfg.sample_rate), int(cfg.window)
    if rate <= 0 or window < 2:
        raise UserError(f"data.sample_rate={rate} and data.window={window} must be positive "
                        "(window >= 2 samples).")
    common = dict(sample_rate=rate, window=window, pad=int(cfg.get("pad", 0)),
                  eval_window=int(cfg.get("eval_window", 0)) or window, seed=int(config.seed))
    if cfg.name == "wav_folder":
        paths, clips, classes = load_wav_folder(str(cfg.path), rate,
                                                bool(cfg.get("mix_to_mono", False)))
        chosen = set(_split_folder(paths, cfg, split))
        keep = [i for i, p in enumerate(paths) if p in chosen]
        labels = np.array([classes.index(os.path.relpath(os.path.dirname(paths[i]), cfg.path))
                           for i in keep], np.int32)
        return AudioDataset([clips[i] for i in keep], labels, num_classes=len(classes),
                            names=[paths[i] for i in keep], source=f"wav_folder:{cfg.path}",
                            **common)
    if cfg.name in TFDS_AUDIO:
        tfds_split = TFDS_AUDIO[cfg.name][2 if split == "train" else 3]
        clips, labels, num_classes = load_tfds_audio(
            cfg.name, tfds_split, str(cfg.get("tfds_data_dir", "")), rate,
            int(cfg.get("max_examples", 0)))
        names = [f"{cfg.name}[{tfds_split}][{i}]" for i in range(len(clips))]
        return AudioDataset(clips, labels, num_classes=num_classes, names=names,
                            source=cfg.name, **common)
    raise UserError(f"data.name={cfg.name!r} is not an audio source; expected one of "
                    f"{AUDIO_SOURCES}.")
