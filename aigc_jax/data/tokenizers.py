"""Tokenizers for the text sources: character-level, byte-level, SentencePiece and GPT-2's BPE.

Each tokenizer is rebuilt from a JSON-serialisable dict (`to_info()` / `from_info()`), which the
text dataset puts in its `info()`; the loop saves that as `workdir/data_info.json`, so sampling
never needs the data again. SentencePiece models are trained on the training text (as the Flax
lm1b example does), cached on disk by a hash of that text and the options, and carried in the
info dict as the base64 of the `.model` file (never pickle). GPT-2's byte-level BPE (Radford
et al., 2019) is read from a `transformers` directory (`tokenizer.json`, or `vocab.json` +
`merges.txt`) by the `tokenizers` library and carried as its `tokenizer.json` text.
"""

import base64
import hashlib
import io
import os
from typing import Protocol

import numpy as np
from absl import logging

from aigc_jax.errors import UserError

KINDS = ("char", "byte", "sentencepiece", "gpt2")


class Tokenizer(Protocol):
    """Text to int token ids and back."""

    vocab_size: int

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, int32 [L]."""
        ...

    def decode(self, ids) -> str:
        """Text of a sequence of token ids."""
        ...

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of `text` this tokenizer cannot represent."""
        ...

    def to_info(self) -> dict:
        """A JSON-serialisable dict that `from_info` turns back into this tokenizer."""
        ...


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


class CharTokenizer:
    """One token per Unicode character of a fixed vocabulary (nanoGPT's shakespeare_char)."""

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self.vocab_size = len(self.chars)
        self._points = _codepoints(self.chars)  # sorted, so searchsorted is the lookup

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """The vocabulary of every distinct character in `text`."""
        return cls("".join(chr(c) for c in np.unique(_codepoints(text))))

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`; characters outside the vocabulary raise a UserError."""
        points = _codepoints(text)
        ids = np.searchsorted(self._points, points).clip(0, self.vocab_size - 1)
        if not np.array_equal(self._points[ids], points):
            raise UserError(f"text has characters outside the vocabulary: "
                            f"{self.unknown_chars(text)!r}.")
        return ids.astype(np.int32)

    def decode(self, ids) -> str:
        """The characters of `ids` (ids past the vocabulary are dropped)."""
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1).tolist()
                       if 0 <= i < self.vocab_size)

    def unknown_chars(self, text: str) -> list[str]:
        """Distinct characters of `text` not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))

    def to_info(self) -> dict:
        """The vocabulary itself, as a string."""
        return {"kind": "char", "chars": self.chars, "vocab_size": self.vocab_size}


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocabulary 256): every text is representable."""

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        """The UTF-8 bytes of `text` as int32 ids."""
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        """UTF-8 decoding of the bytes; invalid sequences become U+FFFD."""
        ids = np.asarray(ids).reshape(-1)
        return bytes(ids[(ids >= 0) & (ids < 256)].astype(np.uint8).tolist()).decode(
            "utf-8", errors="replace")

    def unknown_chars(self, text: str) -> list[str]:
        """None: bytes cover everything."""
        return []

    def to_info(self) -> dict:
        """Nothing to save besides the kind."""
        return {"kind": "byte", "vocab_size": 256}


class SentencePieceTokenizer:
    """A SentencePiece model (Kudo & Richardson, 2018), held as the bytes of its `.model` file."""

    def __init__(self, model_proto: bytes, path: str = ""):
        import sentencepiece as spm

        self.model_proto, self.path = model_proto, path
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = int(self.sp.get_piece_size())

    def encode(self, text: str) -> np.ndarray:
        """Piece ids of `text` (newlines are a user-defined piece, so text round-trips)."""
        return np.asarray(self.sp.encode(text), np.int32)

    def decode(self, ids) -> str:
        """The text of `ids` (ids past the vocabulary are dropped)."""
        ids = [i for i in np.asarray(ids).reshape(-1).tolist() if 0 <= i < self.vocab_size]
        return self.sp.decode(ids)

    def unknown_chars(self, text: str) -> list[str]:
        """Characters that encode to the unknown piece (none with byte fallback)."""
        unk = self.sp.unk_id()
        return sorted(c for c in set(text) if unk in self.sp.encode(c))

    def to_info(self) -> dict:
        """The `.model` file's bytes in base64, and where the cached copy lives."""
        return {"kind": "sentencepiece", "vocab_size": self.vocab_size, "path": self.path,
                "model_b64": base64.b64encode(self.model_proto).decode("ascii")}


class BPETokenizer:
    """A `tokenizers` tokenizer (GPT-2's byte-level BPE), held as its `tokenizer.json` text."""

    def __init__(self, spec: str, path: str = ""):
        from tokenizers import Tokenizer as HFTokenizer

        self.spec, self.path = spec, path
        self.tok = HFTokenizer.from_str(spec)
        self.vocab_size = int(self.tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` (special tokens such as <|endoftext|> are recognised in it)."""
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, np.int32)

    def decode(self, ids) -> str:
        """The text of `ids` (ids past the vocabulary are dropped)."""
        ids = [i for i in np.asarray(ids).reshape(-1).tolist() if 0 <= i < self.vocab_size]
        return self.tok.decode(ids, skip_special_tokens=False)

    def unknown_chars(self, text: str) -> list[str]:
        """Characters that do not survive encode + decode (none for byte-level BPE)."""
        return sorted(c for c in set(text) if self.decode(self.encode(c)) != c)

    def to_info(self) -> dict:
        """The whole `tokenizer.json` and the directory it came from."""
        return {"kind": "gpt2", "vocab_size": self.vocab_size, "path": self.path,
                "tokenizer_json": self.spec}


def load_bpe(path: str) -> BPETokenizer:
    """GPT-2's tokenizer from a directory (or a hub name, where `huggingface_hub` can fetch it)
    holding `tokenizer.json`, or `vocab.json` + `merges.txt` (byte-level BPE as GPT-2's)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors

    from aigc_jax.pretrained.hub import resolve_dir

    directory = resolve_dir(path, "data.tokenizer_path")
    spec_file = os.path.join(directory, "tokenizer.json")
    if os.path.exists(spec_file):
        try:
            with open(spec_file, encoding="utf-8") as f:
                spec = f.read()
            return BPETokenizer(HFTokenizer.from_str(spec).to_str(), directory)
        except Exception as e:  # tokenizers raises its own exception types
            raise UserError(f"{spec_file} is not a tokenizers file: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    vocab, merges = (os.path.join(directory, n) for n in ("vocab.json", "merges.txt"))
    for name in (vocab, merges):
        if not os.path.exists(name):
            raise UserError(f"{directory!r} has no tokenizer: neither tokenizer.json nor "
                            f"{os.path.basename(name)} (vocab.json + merges.txt) is there.")
    try:
        bpe = models.BPE.from_file(vocab, merges)
    except Exception as e:
        raise UserError(f"{vocab} + {merges} are not a BPE vocabulary: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    tok = HFTokenizer(bpe)  # the pipeline of transformers' GPT2TokenizerFast
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if "<|endoftext|>" in tok.get_vocab():
        tok.add_special_tokens(["<|endoftext|>"])
    return BPETokenizer(tok.to_str(), directory)


def default_cache_dir() -> str:
    """`$AIGC_JAX_CACHE/spm` or `~/.cache/aigc_jax/spm`."""
    root = os.environ.get("AIGC_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "aigc_jax")
    return os.path.join(root, "spm")


def train_sentencepiece(text: str, vocab_size: int, cache_dir: str = "",
                        max_corpus_chars: int = 10_000_000) -> SentencePieceTokenizer:
    """A unigram SentencePiece model trained on (the start of) `text`, cached under `cache_dir`.

    Byte fallback and identity normalisation make every text round-trip; "\\n" is its own piece.
    """
    import sentencepiece as spm

    corpus = text[:max_corpus_chars] if max_corpus_chars > 0 else text
    options = dict(vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
                   byte_fallback=True, normalization_rule_name="identity",
                   remove_extra_whitespaces=False, split_digits=True,
                   user_defined_symbols=["\n"], hard_vocab_limit=False,
                   pad_id=-1, bos_id=-1, eos_id=-1, unk_id=0,
                   max_sentence_length=1 << 16, num_threads=2)
    key = hashlib.sha256(corpus.encode("utf-8") + repr(sorted(options.items())).encode())
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"spm_{vocab_size}_{key.hexdigest()[:16]}.model")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return SentencePieceTokenizer(f.read(), path)
    # Training sentences are lines; "\n" is re-inserted by the user-defined piece at encode time.
    lines = [line for line in corpus.split("\n") if line]
    if not lines:
        raise UserError("cannot train SentencePiece on an empty training text.")
    model = io.BytesIO()
    logging.info("training a %d-piece SentencePiece model on %d characters", vocab_size,
                 len(corpus))
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                   minloglevel=2, **options)
    proto = model.getvalue()
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(proto)
        os.replace(tmp, path)  # atomic, so concurrent runs never read half a file
    except OSError as e:
        logging.warning("could not cache the SentencePiece model in %s: %s", cache_dir, e)
        path = ""
    return SentencePieceTokenizer(proto, path)


def build(kind: str, train_text: str, vocab_size: int = 0, cache_dir: str = "",
          max_corpus_chars: int = 10_000_000, path: str = "") -> Tokenizer:
    """The tokenizer `kind` for a corpus whose training part is `train_text` (`path`: the
    directory of a "gpt2" tokenizer)."""
    if kind == "char":
        return CharTokenizer.from_text(train_text)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "sentencepiece":
        if vocab_size <= 0:
            raise UserError(f"data.spm_vocab_size={vocab_size} must be positive.")
        return train_sentencepiece(train_text, vocab_size, cache_dir, max_corpus_chars)
    if kind == "gpt2":
        if not path:
            raise UserError("data.tokenizer='gpt2' needs data.tokenizer_path (a directory with "
                            "tokenizer.json or vocab.json + merges.txt) or init_from.hf.")
        return load_bpe(path)
    raise UserError(f"data.tokenizer={kind!r} is unknown; expected one of {KINDS}.")


def from_info(info: dict) -> Tokenizer:
    """The tokenizer described by `to_info()` (as saved in `workdir/data_info.json`)."""
    kind = info.get("kind")
    if kind == "char":
        return CharTokenizer(info["chars"])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "sentencepiece":
        return SentencePieceTokenizer(base64.b64decode(info["model_b64"]), info.get("path", ""))
    if kind == "gpt2":
        return BPETokenizer(info["tokenizer_json"], info.get("path", ""))
    raise UserError(f"tokenizer kind {kind!r} in the data info is unknown; expected one of "
                    f"{KINDS}.")
