"""Pretrained weights in and out: GPT-2 from and to the `transformers` layout.

    --config.init_from.hf=DIR     # a transformers GPT-2 directory (or a hub name, with network)

`resolve_config` takes the model's shape from `DIR/config.json` (n_layer, n_head, n_embd, biases,
LayerNorm epsilon, tanh GELU) and GPT-2's tokenizer from `DIR`; a fresh run starts from the
checkpoint's weights (`init_params`) and `--mode=sample` needs no training at all. `export_run`
(`python -m aigc_jax.export --format=hf`) writes a trained GPT run back as such a directory.
"""

import json
import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from aigc_jax.errors import UserError
from aigc_jax.pretrained import gpt2
from aigc_jax.pretrained.hub import resolve_dir

__all__ = ["data_info", "export_run", "gpt2", "hf_dir", "init_params", "load_gpt2",
           "resolve_config", "resolve_dir", "transformers_tokenizer", "write_tokenizer"]


def hf_dir(config: ml_collections.ConfigDict) -> str:
    """`config.init_from.hf` ("" when unset or absent)."""
    init_from = config.get("init_from", None)
    return str(init_from.get("hf", "")) if init_from is not None else ""


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with `model.*` set from the checkpoint `init_from.hf` names (and its GPT-2
    tokenizer) when it names one; otherwise `config` itself. `model.block_size` is kept (the
    position table is cropped to it, as nanoGPT's crop_block_size) and must fit n_positions."""
    name = hf_dir(config)
    if not name:
        return config
    if str(config.init_from.get("workdir", "")):
        raise UserError("config.init_from.hf and config.init_from.workdir are both set; warm "
                        "start from one of them.")
    if config.method != "lm":
        raise UserError(f"config.init_from.hf loads GPT-2 weights, for method 'lm'; this run's "
                        f"method is {config.method!r}.")
    directory = resolve_dir(name, "init_from.hf")
    where = os.path.join(directory, "config.json")
    arch = gpt2.architecture(gpt2.read_config(directory), where)
    c = config.copy_and_resolve_references()
    m = c.model
    if int(m.block_size) > arch["n_positions"]:
        raise UserError(f"model.block_size={m.block_size} is longer than n_positions="
                        f"{arch['n_positions']} of {where}.")
    m.n_layer, m.n_head, m.n_embd = arch["n_layer"], arch["n_head"], arch["n_embd"]
    m.bias, m.position = True, "learned"
    m.ln_epsilon, m.gelu = arch["ln_epsilon"], arch["gelu"]
    c.data.tokenizer = "gpt2"
    logging.info("init_from.hf %s: GPT-2 with %d layers, %d heads, %d dims, GELU %s, LayerNorm "
                 "epsilon %g; GPT-2's tokenizer", directory, m.n_layer, m.n_head, m.n_embd,
                 m.gelu, m.ln_epsilon)
    from aigc_jax import config_validation  # imports the method registry

    config_validation.validate(c)
    return c


def data_info(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The data info of a text run on GPT-2's tokenizer, for `--mode=sample` with no data."""
    from aigc_jax.data import tokenizers
    from aigc_jax.data.text import tokenizer_path

    tok = tokenizers.load_bpe(tokenizer_path(config))
    block = int(config.model.block_size)
    return {"kind": "text", "vocab_size": tok.vocab_size, "block_size": block,
            "tokenizer": tok.to_info(), "source": f"init_from.hf:{hf_dir(config)}",
            "num_tokens": 0, "example_spec": {"tokens": [[block + 1], "int32"]}}


def load_gpt2(name: str, block_size: int, vocab_size: int, key: str = "init_from.hf"
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(our GPT params as numpy, the architecture dict) from a transformers GPT-2 directory."""
    directory = resolve_dir(name, key)
    arch = gpt2.architecture(gpt2.read_config(directory), os.path.join(directory, "config.json"))
    tensors, where = gpt2.read_tensors(directory)
    return gpt2.to_params(tensors, arch, block_size, vocab_size, where), arch


def init_params(config: ml_collections.ConfigDict, params: Any) -> tuple[Any, dict[str, Any]]:
    """The checkpoint `init_from.hf` as a tree like `params` (the model's fresh parameters,
    whose leaves' shardings the new ones take), and its provenance record."""
    import jax

    from aigc_jax.components import config_hash

    p = params.get("params", params)
    vocab = p["wte"]["embedding"].shape[0]
    block = int(config.model.block_size)
    loaded, _ = load_gpt2(hf_dir(config), block, vocab)
    directory = resolve_dir(hf_dir(config), "init_from.hf")
    want = jax.tree.map(lambda x: tuple(x.shape), params)
    got = jax.tree.map(lambda x: tuple(x.shape), loaded)
    if want != got:  # resolve_config makes them equal; a mismatch is a programming error
        raise AssertionError(f"GPT-2 parameters {got} do not match the model's {want}")
    logging.info("init_from.hf %s: %d parameter arrays loaded", hf_dir(config),
                 len(jax.tree.leaves(loaded)))
    placed = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding)
                          if hasattr(old, "sharding") else new, loaded, params)
    n = len(jax.tree.leaves(loaded))
    return placed, {"hf": os.path.abspath(directory), "config_hash": config_hash(
        gpt2.read_config(directory)), "copied": n, "total": n}


# ----------------------------------------------------------------------------- export


def _one_token_per_symbol(vocab: dict[str, int], byte_level: bool) -> Any:
    """A `tokenizers` pipeline with one token per character (or per UTF-8 byte, spelt as
    GPT-2's byte-level characters): our char and byte tokenizers in transformers' terms."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer(models.WordLevel(vocab, unk_token=None))
    each = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")  # (?m): "." matches \n
    if byte_level:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), each])
        tok.decoder = decoders.ByteLevel()
    else:
        tok.pre_tokenizer = each
        tok.decoder = decoders.Fuse()
    return tok


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable spelling of each byte 0..255 (the alphabet of tokenizers' ByteLevel)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def transformers_tokenizer(info: dict[str, Any]) -> Any:
    """The run's tokenizer (`data_info["tokenizer"]`) as a `tokenizers.Tokenizer` giving the
    same ids, or None for SentencePiece (no byte-exact equivalent here)."""
    from tokenizers import Tokenizer as HFTokenizer

    kind = info.get("kind")
    if kind == "gpt2":
        return HFTokenizer.from_str(info["tokenizer_json"])
    if kind == "char":
        return _one_token_per_symbol({c: i for i, c in enumerate(info["chars"])}, False)
    if kind == "byte":  # byte b is the id b
        return _one_token_per_symbol({c: b for b, c in enumerate(_bytes_to_unicode())}, True)
    return None


def write_tokenizer(out_dir: str, info: dict[str, Any], block_size: int) -> list[str]:
    """transformers tokenizer files for the run's tokenizer: tokenizer.json and
    tokenizer_config.json (GPT-2's also vocab.json + merges.txt); [] for SentencePiece."""
    tok = transformers_tokenizer(info)
    if tok is None:
        return []
    path = os.path.join(out_dir, "tokenizer.json")
    tok.save(path)
    files = [path]
    cfg: dict[str, Any] = {"model_max_length": block_size,
                           "tokenizer_class": "PreTrainedTokenizerFast"}
    if info.get("kind") == "gpt2":
        files += list(tok.model.save(out_dir))  # vocab.json, merges.txt
        eos = "<|endoftext|>" if tok.token_to_id("<|endoftext|>") is not None else None
        cfg.update(tokenizer_class="GPT2Tokenizer", add_prefix_space=False, bos_token=eos,
                   eos_token=eos, unk_token=eos)
    cfg_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return files + [cfg_path]


def export_run(config: ml_collections.ConfigDict, info: dict[str, Any], params: Any,
               out_dir: str) -> list[str]:
    """Write a GPT run (its config, data info and weights) as a transformers GPT-2 directory;
    options GPT-2 cannot express are a UserError naming them."""
    from aigc_jax.models.gpt import config_from

    if config.method != "lm":
        raise UserError(f"--format=hf writes GPT runs (method 'lm'); this run's method is "
                        f"{config.method!r}.")
    blockers = gpt2.export_blockers(config.model)
    if blockers:
        raise UserError(f"this run cannot be written as GPT-2: {'; '.join(blockers)}.")
    vocab_size = int(info["vocab_size"])
    gcfg = config_from(config.model, vocab_size)
    tok_info = info.get("tokenizer", {})
    eos = None
    if tok_info.get("kind") == "gpt2":
        eos = transformers_tokenizer(tok_info).token_to_id("<|endoftext|>")
    cfg = gpt2.hf_config(gcfg.n_layer, gcfg.n_head, gcfg.n_embd, gcfg.block_size, vocab_size,
                         gcfg.ln_epsilon, gcfg.gelu, gcfg.dropout, eos)
    import jax

    params = jax.tree.map(np.asarray, jax.device_get(params))
    tensors = gpt2.from_params(params, gcfg.n_layer, vocab_size)
    files = gpt2.write(out_dir, tensors, cfg)
    tok_files = write_tokenizer(out_dir, tok_info, gcfg.block_size)
    if not tok_files:
        logging.warning("no tokenizer files written: a %r tokenizer has no byte-exact "
                        "transformers equivalent here; tokenize with this run's data_info.json",
                        tok_info.get("kind"))
    if not gcfg.bias:
        logging.info("model.bias=False: GPT-2's biases written as zeros (the same function)")
    return files + tok_files

