"""Token files: a corpus tokenized once into `train.bin` / `val.bin`, read as `np.memmap`.

The layout is nanoGPT's: a flat array of token ids, uint16 when the vocabulary fits (GPT-2's
50,257), uint32 above 65,535. `meta.json` beside them (written by `prepare_token_files`, see
`python -m aigc_jax.data.prepare`) records the dtype, the tokenizer and each file's token count,
so a truncated or half-written file is an error, not a silently shorter corpus. A folder from
nanoGPT's own prepare scripts (no meta.json) is read with the run's `data.tokenizer`.

Batches are those of the in-memory `TextDataset` on the same tokens (windows at offsets drawn
from (seed, step)); only the pages a batch touches are read, so host memory does not grow with
the file. Evaluation visits the windows in a fixed affine order (k -> a*k + c mod n, a coprime
to n), a shuffle that needs no O(n) permutation array.
"""

import json
import math
import os

import ml_collections
import numpy as np
from absl import logging

from aigc_jax.data import text as text_lib
from aigc_jax.data import tokenizers
from aigc_jax.data.base import rng_for
from aigc_jax.errors import UserError

META = "meta.json"
SPLIT_FILES = {"train": "train.bin", "test": "val.bin"}
FORMAT = "aigc_jax token files v1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies up to 65,536 ids (nanoGPT's layout), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def read_meta(folder: str) -> dict | None:
    """`folder/meta.json`, or None for a folder without one (nanoGPT's layout)."""
    path = os.path.join(folder, META)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def open_tokens(path: str, dtype: np.dtype, expected: int | None = None) -> np.memmap:
    """The token file at `path` as a read-only memmap, checked against its recorded length."""
    if not os.path.isfile(path):
        raise UserError(f"token file {path} does not exist; write it with "
                        "`python -m aigc_jax.data.prepare` or point data.path at its folder.")
    size = os.path.getsize(path)
    if size % dtype.itemsize:
        raise UserError(f"token file {path} has {size} bytes, not a whole number of "
                        f"{dtype.name} tokens: it is truncated; prepare it again.")
    n = size // dtype.itemsize
    if expected is not None and n != expected:
        raise UserError(f"token file {path} holds {n} tokens but {META} records {expected}: "
                        "it is truncated or was changed; rerun the prepare command to finish it.")
    if n == 0:
        raise UserError(f"token file {path} is empty.")
    return np.memmap(path, dtype=dtype, mode="r")


class TokenFileDataset(text_lib.TextDataset):
    """A `TextDataset` over a memmapped token file (picklable: workers reopen the file)."""

    def __init__(self, path: str, dtype: np.dtype, expected: int | None, block_size: int,
                 seed: int, tokenizer_info: dict, source: str):
        self.path, self.dtype, self.expected = path, np.dtype(dtype), expected
        super().__init__(open_tokens(path, self.dtype, expected), block_size, seed,
                         tokenizer_info, source)

    def _init_eval_order(self) -> None:
        # An affine shuffle k -> a*k + c (mod n), a coprime to n: no O(n) permutation array.
        rng = rng_for(text_lib.EVAL_SEED, 1)
        n = self.num_examples
        a = int(rng.integers(1, max(n, 2)))
        while math.gcd(a, n) != 1:
            a += 1
        self._affine = (a % max(n, 1), int(rng.integers(0, max(n, 1))))

    def eval_order(self, idx: np.ndarray) -> np.ndarray:
        """Window numbers at positions `idx` of the fixed affine shuffle."""
        a, c = self._affine
        return (a * np.asarray(idx, np.int64) + c) % self.num_examples

    def windows(self, starts: np.ndarray) -> np.ndarray:
        """The token windows [B, T + 1] (int32) at `starts` [B]: B contiguous reads.

        Each call maps the file afresh and unmaps it after copying, as nanoGPT's get_batch
        does: pages a long-lived map has touched stay in this process's resident set, which
        would grow towards the file's size over a run."""
        tokens = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))
        out = np.stack([tokens[s:s + self.block_size + 1] for s in starts.tolist()])
        del tokens
        return out.astype(np.int32)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["tokens"] = None  # a pickled memmap would copy the whole file
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.tokens = open_tokens(self.path, self.dtype, self.expected)


def create_token_file_dataset(config: ml_collections.ConfigDict,
                              split: str) -> TokenFileDataset:
    """The "train" (train.bin) or "test" (val.bin) split of the token folder `data.path`."""
    folder = str(config.data.path)
    if not folder or not os.path.isdir(folder):
        raise UserError(f"data.name='tokens' needs data.path, a folder with train.bin and "
                        f"val.bin; {folder!r} is not one.")
    meta = read_meta(folder)
    file = SPLIT_FILES[split]
    if meta is None and str(config.data.tokenizer) in ("char", "sentencepiece"):
        raise UserError(f"token folder {folder} has no {META}, so its data.tokenizer="
                        f"{config.data.tokenizer!r} vocabulary is unknown; write the folder "
                        "with `python -m aigc_jax.data.prepare` (or use tokenizer gpt2/byte).")
    if meta is None:  # nanoGPT's layout: the run's tokenizer says the vocabulary
        tok = text_lib.run_tokenizer(config, "")
        info, expected = tok.to_info(), None
        dtype = token_dtype(tok.vocab_size)
    else:
        if not meta.get("complete", False):
            raise UserError(f"token folder {folder} is not completely prepared "
                            f"({meta.get('progress', '?')}); rerun the prepare command to "
                            "resume it.")
        info, dtype = meta["tokenizer"], np.dtype(meta["dtype"])
        expected = int(meta["splits"][file]["tokens"])
    ds = TokenFileDataset(os.path.join(folder, file), dtype, expected,
                          int(config.model.block_size), int(config.seed), info,
                          f"tokens:{folder} ({split})")
    logging.info("%s: %d %s tokens (memmap), vocabulary %d", ds.path, ds.num_tokens,
                 dtype.name, int(info["vocab_size"]))
    return ds


def check_tokenizer(meta: dict, tok: tokenizers.Tokenizer, folder: str) -> None:
    """A resumed prepare must use the tokenizer the folder's first tokens were written with."""
    if meta.get("tokenizer") != tok.to_info():
        raise UserError(f"{folder} holds tokens from another tokenizer or corpus; use another "
                        "--out folder or delete it.")
