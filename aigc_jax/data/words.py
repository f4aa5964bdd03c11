"""A fixed word-level tokenizer for captions: lowercase words and punctuation marks as tokens.

The vocabulary is a list saved in `data_info.json` (`to_info` / `from_info`), so a trained
text tower reads prompts exactly as it read its captions. Ids: 0 pad, 1 start of text, 2 end
of text, 3 unknown (only data captions may map to it: prompts with unknown words are an error).
"""

import re
from collections.abc import Sequence

import numpy as np

from aigc_jax.errors import UserError

PAD, SOT, EOT, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sot>", "<eot>", "<unk>")
_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


class WordTokenizer:
    """Captions <-> int32 [T] ids: <sot> words <eot> <pad>...; `max_length` T counts all."""

    def __init__(self, words: Sequence[str], max_length: int):
        self.vocab = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = int(max_length)
        self.vocab_size = len(self.vocab)

    @staticmethod
    def split(text: str) -> list[str]:
        """Lowercase words and single punctuation marks of `text`."""
        return _WORD.findall(text.lower())

    def unknown_words(self, text: str) -> list[str]:
        """Distinct words of `text` outside the vocabulary, in order of appearance."""
        return list(dict.fromkeys(w for w in self.split(text) if w not in self.index))

    def encode(self, text: str, strict: bool = True) -> np.ndarray:
        """int32 [max_length] ids of `text`, truncated to fit (the end token is always kept).

        strict: unknown words are a UserError; otherwise they map to <unk>.
        """
        words = self.split(text)
        if strict:
            unknown = self.unknown_words(text)
            if unknown:
                raise UserError(f"prompt {text!r} has words outside the text encoder's "
                                f"vocabulary: {', '.join(unknown)}.")
        ids = [self.index.get(w, UNK) for w in words][:self.max_length - 2]
        out = np.full(self.max_length, PAD, np.int32)
        out[:len(ids) + 2] = [SOT, *ids, EOT]
        return out

    def encode_batch(self, texts: Sequence[str], strict: bool = True) -> np.ndarray:
        """int32 [B, max_length] ids of a batch of texts."""
        if not len(texts):
            return np.zeros((0, self.max_length), np.int32)
        return np.stack([self.encode(t, strict) for t in texts])

    def decode(self, ids: Sequence[int]) -> str:
        """The words between <sot> and <eot>, joined by spaces (punctuation attached)."""
        words = []
        for i in np.asarray(ids).tolist():
            if i == EOT:
                break
            if i not in (PAD, SOT):
                words.append(self.vocab[i])
        return re.sub(r" ([,.:;!?])", r"\1", " ".join(words))

    def to_info(self) -> dict:
        """JSON-serialisable description (kind, vocabulary, max_length)."""
        return {"kind": "words", "vocab": self.vocab, "max_length": self.max_length}

    @classmethod
    def from_info(cls, info: dict) -> "WordTokenizer":
        """The tokenizer `to_info` described."""
        return cls(info["vocab"], int(info["max_length"]))


def build_vocab(texts: Sequence[str], min_count: int = 1, max_words: int = 0) -> list[str]:
    """Words of `texts` seen at least `min_count` times, most frequent first (ties by name),
    at most `max_words` (0: all)."""
    counts: dict[str, int] = {}
    for t in texts:
        for w in WordTokenizer.split(t):
            counts[w] = counts.get(w, 0) + 1
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return words[:max_words] if max_words else words
