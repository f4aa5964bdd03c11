"""Text sources (a local file, tfds tiny_shakespeare, tfds lm1b) as token streams in memory.

The corpus is tokenized once into one stream per split. Training batches are windows of
`block_size + 1` tokens at random offsets drawn from (seed, step), as nanoGPT's `get_batch`, so a
resumed run sees exactly the batches of an uninterrupted one. Evaluation uses the split cut into
non-overlapping windows, visited in one fixed shuffled order: a prefix of `max_batches` batches
is a fixed random sample (nanoGPT's `estimate_loss` with `eval_iters`), all of them the whole
split.

Splits: a local file is cut contiguously, the last `data.val_fraction` for validation (nanoGPT's
90/10). tiny_shakespeare uses tfds' "train" for training and "validation+test" for validation,
which is the same 90/10 cut of the same text. lm1b uses its "train" and "test" splits, sentences
joined by newlines.
"""

import functools
import os
from collections.abc import Iterator

import ml_collections
import numpy as np
from absl import logging

from aigc_jax.data import tokenizers
from aigc_jax.data.base import (
    Batch,
    padded_eval_indices,
    process_slice,
    rng_for,
    tfds_data_source,
)
from aigc_jax.errors import UserError

# Fixed, run-independent seed for the eval window order: eval numbers compare across runs.
EVAL_SEED = 20261124
TFDS_SPLITS = {"tiny_shakespeare": ("train", "validation+test"), "lm1b": ("train", "test")}


class TextDataset:
    """One split as a token stream with deterministic random training windows."""

    def __init__(self, tokens: np.ndarray, block_size: int, seed: int, tokenizer_info: dict,
                 source: str):
        if len(tokens) < block_size + 2:
            raise UserError(f"the {source} split has {len(tokens)} tokens, fewer than "
                            f"model.block_size + 2 = {block_size + 2}; use more text or a "
                            "smaller block_size.")
        self.tokens, self.block_size, self.seed = tokens, block_size, seed
        self.tokenizer_info, self.source = tokenizer_info, source
        self.num_tokens = len(tokens)
        # Eval windows: tokens[k*T : k*T + T + 1], so every target after the first is scored once.
        self.num_examples = (self.num_tokens - 1) // block_size
        self._init_eval_order()

    def _init_eval_order(self) -> None:
        self._eval_order = rng_for(EVAL_SEED, 1).permutation(self.num_examples)

    def eval_order(self, idx: np.ndarray) -> np.ndarray:
        """The eval windows visited at positions `idx` of the fixed shuffled order."""
        return self._eval_order[idx]

    def info(self) -> dict:
        """Vocabulary, tokenizer and batch layout: what `lm.create` needs without the data."""
        vocab = int(self.tokenizer_info["vocab_size"])
        return {"kind": "text", "vocab_size": vocab, "block_size": self.block_size,
                "tokenizer": self.tokenizer_info, "source": self.source,
                "num_tokens": self.num_tokens,
                "example_spec": {"tokens": [[self.block_size + 1], "int32"]}}

    def windows(self, starts: np.ndarray) -> np.ndarray:
        """The token windows [B, T + 1] (int32) that start at offsets `starts` [B]."""
        offsets = np.arange(self.block_size + 1)
        return self.tokens[starts[:, None] + offsets].astype(np.int32)  # [B, T + 1]

    def train_batch(self, step: int, batch_size: int, process_index: int = 0,
                    process_count: int = 1) -> Batch:
        """This process's rows of the global batch for `step`: {"tokens": int32 [B, T + 1]}."""
        rng = rng_for(self.seed, 3, step)
        starts = rng.integers(0, self.num_tokens - self.block_size, size=batch_size)
        rows = process_slice(batch_size, process_index, process_count)
        return {"tokens": self.windows(starts[rows])}

    def eval_batches(self, batch_size: int, process_index: int = 0, process_count: int = 1,
                     max_batches: int | None = None) -> Iterator[Batch]:
        """Fixed batches of non-overlapping windows in a fixed random order; `mask` [B] marks
        padding rows of the last batch."""
        rows = process_slice(batch_size, process_index, process_count)
        for idx, mask in padded_eval_indices(self.num_examples, batch_size, max_batches):
            starts = self.eval_order(idx) * self.block_size
            yield {"tokens": self.windows(starts[rows]), "mask": mask[rows]}


# ---------------------------------------------------------------------------------------------
# Sources: each returns (training text, this split's text).


@functools.lru_cache(maxsize=2)
def read_text_file(path: str) -> str:
    """The whole UTF-8 file at `path`; a missing or unreadable file is a UserError."""
    if not path:
        raise UserError("data.name='text' needs data.path, the text file to train on "
                        "(e.g. --config.data.path=input.txt).")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the text file data.path={path!r}: "
                        f"{e.strerror if isinstance(e, OSError) else e}") from None
    if not text:
        raise UserError(f"the text file data.path={path!r} is empty.")
    return text


@functools.lru_cache(maxsize=4)
def read_tfds_text(name: str, split: str, data_dir: str, max_examples: int) -> str:
    """The "text" feature of a tfds split, examples joined by newlines (no TensorFlow needed)."""
    source = tfds_data_source(name, split, data_dir or None)
    n = len(source) if max_examples <= 0 else min(len(source), max_examples)
    logging.info("reading %d examples of tfds %s[%s]", n, name, split)
    texts = []
    for i in range(n):
        t = source[i]["text"]
        texts.append(t.decode("utf-8") if isinstance(t, bytes) else str(t))
    return "\n".join(texts)


def load_texts(cfg: ml_collections.ConfigDict, split: str) -> tuple[str, str]:
    """(training text, text of `split`) for the source named by `cfg.name`."""
    if cfg.name == "text":
        text = read_text_file(str(cfg.path))
        frac = float(cfg.val_fraction)
        if not 0.0 < frac < 1.0:
            raise UserError(f"data.val_fraction={frac} must be in (0, 1).")
        cut = int(len(text) * (1.0 - frac))
        return text[:cut], (text[:cut] if split == "train" else text[cut:])
    if cfg.name in TFDS_SPLITS:
        train_split, val_split = TFDS_SPLITS[cfg.name]
        args = (cfg.name, str(cfg.get("tfds_data_dir", "")), int(cfg.max_examples))
        train = read_tfds_text(args[0], train_split, *args[1:])
        return train, (train if split == "train" else read_tfds_text(args[0], val_split,
                                                                      *args[1:]))
    raise UserError(f"data.name={cfg.name!r} is not a text source; expected text, "
                    f"{', '.join(TFDS_SPLITS)}.")


@functools.lru_cache(maxsize=2)
def _tokenizer(cfg_key: tuple, train_text: str) -> tokenizers.Tokenizer:
    kind, vocab_size, cache_dir, max_chars, path = cfg_key
    return tokenizers.build(kind, train_text, vocab_size, cache_dir, max_chars, path)


def spm_cache_dir(cfg: ml_collections.ConfigDict) -> str:
    """`data.spm_cache_dir`, else `spm_cache/` beside a local text file, else ~/.cache/aigc_jax."""
    if cfg.get("spm_cache_dir", ""):
        return str(cfg.spm_cache_dir)
    if cfg.name == "text" and os.access(os.path.dirname(os.path.abspath(cfg.path)), os.W_OK):
        return os.path.join(os.path.dirname(os.path.abspath(cfg.path)), "spm_cache")
    return tokenizers.default_cache_dir()


def tokenizer_path(config: ml_collections.ConfigDict) -> str:
    """Where a "gpt2" tokenizer's files are: `data.tokenizer_path`, else `init_from.hf`."""
    path = str(config.data.get("tokenizer_path", ""))
    return path or str(config.get("init_from", {}).get("hf", ""))


def run_tokenizer(config: ml_collections.ConfigDict, train_text: str) -> tokenizers.Tokenizer:
    """The tokenizer a run of `config` uses, built from (or for) its training text."""
    cfg = config.data
    key = (str(cfg.tokenizer), int(cfg.get("spm_vocab_size", 0)), spm_cache_dir(cfg),
           int(cfg.get("spm_max_corpus_chars", 10_000_000)), tokenizer_path(config))
    return _tokenizer(key, train_text)


def known_text(tok: tokenizers.Tokenizer, text: str, split: str) -> str:
    """`text` without the characters a char vocabulary (built from the training text) lacks."""
    if isinstance(tok, tokenizers.CharTokenizer) and split != "train":
        unknown = tok.unknown_chars(text)
        if unknown:  # the vocabulary comes from the training text only
            logging.warning("dropping %d characters of the %s split not in the training "
                            "vocabulary: %r", len(unknown), split, unknown[:20])
            text = "".join(c for c in text if c not in set(unknown))
    return text


def create_text_dataset(config: ml_collections.ConfigDict, split: str) -> TextDataset:
    """The "train" or "test" (validation) split of the text source named by `config.data`."""
    cfg = config.data
    if cfg.name == "tokens":
        from aigc_jax.data import token_files

        return token_files.create_token_file_dataset(config, split)
    train_text, text = load_texts(cfg, split)
    tok = run_tokenizer(config, train_text)
    text = known_text(tok, text, split)
    tokens = tok.encode(text)
    tokens = tokens.astype(np.uint16 if tok.vocab_size <= 1 << 16 else np.int32)
    source = f"{cfg.name}:{cfg.path}" if cfg.name == "text" else str(cfg.name)
    logging.info("%s split of %s: %d characters, %d tokens, vocabulary %d", split, source,
                 len(text), len(tokens), tok.vocab_size)
    return TextDataset(tokens, int(config.model.block_size), int(config.seed), tok.to_info(),
                       f"{source} ({split})")
