"""Prepare a corpus as token files (`train.bin`, `val.bin`, `meta.json`) for data.name=tokens.

    python -m aigc_jax.data.prepare --config=configs/lm.py:tiny \\
        --config.data.path=input.txt --out=/data/shakespeare_tokens

The split and the tokenizer are the run's own (`create_text_dataset`): the same config with
data.name=text trains on exactly these tokens. The text is encoded in chunks ending at a
newline, each appended and fsynced before `meta.json` records it, so an interrupted prepare
rerun with the same flags continues where it stopped (and a half-written chunk is cut off).
Chunking is exact for the char and byte tokenizers; BPE and SentencePiece may merge across a
chunk's final newline differently from one whole-text pass.
"""

import json
import os
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from aigc_jax.data import text as text_lib
from aigc_jax.data import token_files
from aigc_jax.errors import UserError

CHUNK_CHARS = 1 << 20


def _chunk_end(text: str, pos: int, chunk: int) -> int:
    end = pos + chunk
    if end >= len(text):
        return len(text)
    nl = text.find("\n", end, end + chunk)
    return nl + 1 if nl >= 0 else end


def _write_meta(folder: str, meta: dict) -> None:
    tmp = os.path.join(folder, token_files.META + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, token_files.META))


def prepare_token_files(config: ml_collections.ConfigDict, out: str,
                        chunk_chars: int = CHUNK_CHARS, progress: bool = True) -> dict:
    """Write (or finish writing) the token files of `config`'s text source into `out`;
    returns the final meta.json contents."""
    cfg = config.data
    if cfg.name == "tokens":
        raise UserError("data.name='tokens' is already prepared; prepare reads a text source "
                        "(data.name=text with data.path, tiny_shakespeare, lm1b).")
    train_text, _ = text_lib.load_texts(cfg, "train")
    _, val_text = text_lib.load_texts(cfg, "test")
    tok = text_lib.run_tokenizer(config, train_text)
    texts = {"train.bin": train_text, "val.bin": text_lib.known_text(tok, val_text, "test")}
    dtype = token_files.token_dtype(tok.vocab_size)
    os.makedirs(out, exist_ok=True)
    meta = token_files.read_meta(out)
    if meta is None:
        meta = {"format": token_files.FORMAT, "dtype": dtype.name,
                "vocab_size": int(tok.vocab_size), "tokenizer": tok.to_info(),
                "complete": False, "splits": {}}
    token_files.check_tokenizer(meta, tok, out)
    for file, text in texts.items():
        st = meta["splits"].setdefault(file, {"tokens": 0, "chars_done": 0,
                                              "chars": len(text)})
        if st["chars"] != len(text):
            raise UserError(f"{out}/{file} was started from a text of {st['chars']} characters, "
                            f"this one has {len(text)}; use another --out folder.")
        path = os.path.join(out, file)
        with open(path, "r+b" if os.path.exists(path) else "wb") as f:
            f.truncate(st["tokens"] * dtype.itemsize)  # drop a chunk meta.json never recorded
            f.seek(0, os.SEEK_END)
            bar = tqdm(total=len(text), initial=st["chars_done"], unit="char", unit_scale=True,
                       desc=file, disable=not progress, file=sys.stderr)
            pos = st["chars_done"]
            while pos < len(text):
                end = _chunk_end(text, pos, chunk_chars)
                ids = tok.encode(text[pos:end]).astype(dtype)
                f.write(ids.tobytes())
                f.flush()
                os.fsync(f.fileno())
                st["tokens"] += len(ids)
                st["chars_done"] = pos = end
                meta["progress"] = f"{file}: {pos} of {len(text)} characters"
                _write_meta(out, meta)
                bar.update(end - bar.n)
            bar.close()
    meta["complete"] = True
    meta["progress"] = "done"
    _write_meta(out, meta)
    return meta


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags, defined only when run as a script (importing this module as a
    library must not claim --config/--out, which other entry points define too)."""
    config_flags.DEFINE_config_file("config", None, "The run's config and variant.",
                                    lock_config=True)
    flags.DEFINE_string("out", None, "Folder for train.bin, val.bin and meta.json.")


def main(argv: list[str]) -> None:
    """Prepare FLAGS.config's corpus into FLAGS.out; a UserError is one line, exit status 2."""
    try:
        if FLAGS.config is None or not FLAGS.out:
            raise UserError("prepare needs --config=configs/lm.py:VARIANT and --out=FOLDER.")
        meta = prepare_token_files(FLAGS.config, FLAGS.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    counts = ", ".join(f"{k} {v['tokens']:,} tokens" for k, v in meta["splits"].items())
    print(f"wrote {FLAGS.out}: {counts} ({meta['dtype']}, vocabulary {meta['vocab_size']})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
