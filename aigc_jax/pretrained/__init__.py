"""Pretrained weights in and out: GPT-2 from and to the `transformers` layout, Stable
Diffusion's autoencoder from and to the `diffusers` `AutoencoderKL` layout.

    --config.init_from.hf=DIR     # a transformers GPT-2 directory (method lm) or a diffusers
                                  # AutoencoderKL directory (method autoencoder); with network,
                                  # a hub name

`resolve_config` takes the model's shape from `DIR/config.json` (GPT-2: n_layer, n_head, n_embd,
biases, LayerNorm epsilon, tanh GELU, and GPT-2's tokenizer from `DIR`; AutoencoderKL:
block_out_channels, layers_per_block, latent_channels, norm_num_groups); a fresh run starts from
the checkpoint's weights (`init_params`), `--mode=sample` needs no training at all, and
`--mode=import` writes the weights as step 0 of a workdir (with the autoencoder's
scaling_factor as its latent_stats.json), so an imported model serves as a component.
`export_run` (`python -m aigc_jax.export --format=hf`) writes a trained GPT or KL autoencoder
run back in those layouts.
"""

import json
import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from aigc_jax.errors import UserError
from aigc_jax.pretrained import gpt2, sd_vae
from aigc_jax.pretrained.hub import resolve_dir

__all__ = ["data_info", "export_run", "gpt2", "hf_dir", "init_params", "load_gpt2",
           "resolve_config", "resolve_dir", "sd_vae", "transformers_tokenizer",
           "workdir_files", "write_tokenizer"]
# Methods whose weights import from init_from.hf, and the layout each reads.
IMPORTERS = {"lm": "a transformers GPT-2 directory",
             "autoencoder": "a diffusers AutoencoderKL directory"}


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
    if config.method not in IMPORTERS:
        known = "; ".join(f"{m}: {what}" for m, what in IMPORTERS.items())
        raise UserError(f"config.init_from.hf imports weights for the methods {sorted(IMPORTERS)} "
                        f"({known}); this run's method is {config.method!r}.")
    if config.method == "autoencoder":
        return _resolve_autoencoder(config, name)
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


def _autoencoder_arch(config: ml_collections.ConfigDict) -> tuple[str, dict[str, Any]]:
    """(the AutoencoderKL directory init_from.hf names, its architecture dict)."""
    directory = sd_vae.find_dir(resolve_dir(hf_dir(config), "init_from.hf"))
    arch = sd_vae.architecture(sd_vae.read_config(directory),
                               os.path.join(directory, "config.json"))
    return directory, arch


def _autoencoder_shapes(arch: dict[str, Any]) -> dict:
    """Our autoencoder network's parameter shapes for `arch`, traced without compute."""
    import jax
    import jax.numpy as jnp

    from aigc_jax.models.autoencoder import Autoencoder, downsampling_factor

    model = Autoencoder(arch["image_channels"], arch["ch"], tuple(arch["ch_mult"]),
                        arch["num_res_blocks"], arch["z_channels"], arch["embed_dim"],
                        num_groups=arch["num_groups"])
    size = downsampling_factor(arch["ch_mult"])
    tree = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, size, size, arch["image_channels"])))["params"]
    return jax.tree.map(lambda x: tuple(x.shape), tree)


def _resolve_autoencoder(config: ml_collections.ConfigDict, name: str
                         ) -> ml_collections.ConfigDict:
    """`config` with `model.*` set from a diffusers AutoencoderKL config (a KL autoencoder)."""
    directory, arch = _autoencoder_arch(config)
    c = config.copy_and_resolve_references()
    m = c.model
    m.ch, m.ch_mult, m.num_res_blocks = arch["ch"], arch["ch_mult"], arch["num_res_blocks"]
    m.z_channels, m.embed_dim, m.num_groups = arch["z_channels"], arch["embed_dim"], \
        arch["num_groups"]
    m.attn_resolutions = ()
    c.autoencoder.regularizer = "kl"
    sd_vae.check(directory, _autoencoder_shapes(arch), len(arch["ch_mult"]))
    logging.info("init_from.hf %s: AutoencoderKL with block_out_channels %s, %d res blocks, %d "
                 "latent channels, scaling_factor %g", directory,
                 [arch["ch"] * k for k in arch["ch_mult"]], arch["num_res_blocks"],
                 arch["z_channels"], arch["scale_factor"])
    from aigc_jax import config_validation  # imports the method registry

    config_validation.validate(c)
    return c


def data_info(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The data info of an imported checkpoint, for `--mode=sample`/`import` with no data: a
    text run on GPT-2's tokenizer, or square images for an autoencoder (data.image_size, else
    the checkpoint's sample_size)."""
    if config.method == "autoencoder":
        _, arch = _autoencoder_arch(config)
        size = int(config.data.get("image_size", 0)) or arch["sample_size"]
        shape = [size, size, arch["image_channels"]]
        return {"kind": "image", "image_shape": shape, "num_classes": 0,
                "source": f"init_from.hf:{hf_dir(config)}",
                "example_spec": {"image": [shape, "uint8"], "label": [[], "int32"]}}
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


def workdir_files(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Files an imported run writes beside its step-0 checkpoint: for an AutoencoderKL, its
    scaling_factor as latent_stats.json (what the Autoencoder component scales latents by)."""
    if config.method != "autoencoder":
        return {}
    directory, arch = _autoencoder_arch(config)
    return {"latent_stats.json": {
        "scale_factor": arch["scale_factor"], "latent_std": 1.0 / arch["scale_factor"],
        "source": f"scaling_factor of {os.path.join(directory, 'config.json')}"}}


def _place(loaded: Any, params: Any) -> Any:
    """`loaded` (numpy) with the shardings of the matching leaves of `params`."""
    import jax

    return jax.tree.map(lambda new, old: jax.device_put(new, old.sharding)
                        if hasattr(old, "sharding") else new, loaded, params)


def _init_autoencoder(config: ml_collections.ConfigDict, params: Any
                      ) -> tuple[Any, dict[str, Any]]:
    """`params` with the autoencoder network replaced by the AutoencoderKL of init_from.hf."""
    import jax

    from aigc_jax.components import config_hash

    directory, arch = _autoencoder_arch(config)
    tensors, where = sd_vae.read_tensors(directory)
    shapes = jax.tree.map(lambda x: tuple(x.shape), params["autoencoder"])
    loaded = sd_vae.to_params(tensors, shapes, len(arch["ch_mult"]), where)["params"]
    n = len(jax.tree.leaves(loaded))
    logging.info("init_from.hf %s: %d parameter arrays loaded", directory, n)
    out = dict(params, autoencoder=_place(loaded, params["autoencoder"]))
    total = len(jax.tree.leaves(params))
    return out, {"hf": os.path.abspath(directory), "config_hash": config_hash(
        sd_vae.read_config(directory)), "copied": n, "total": total}


def init_params(config: ml_collections.ConfigDict, params: Any) -> tuple[Any, dict[str, Any]]:
    """The checkpoint `init_from.hf` as a tree like `params` (the model's fresh parameters,
    whose leaves' shardings the new ones take), and its provenance record."""
    import jax

    from aigc_jax.components import config_hash

    if config.method == "autoencoder":
        return _init_autoencoder(config, params)
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
    placed = _place(loaded, params)
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
    """Write a GPT run (its config, data info and weights) as a transformers GPT-2 directory,
    or a KL autoencoder run as a diffusers AutoencoderKL directory; options those cannot
    express are a UserError naming them."""
    from aigc_jax.models.gpt import config_from

    if config.method == "autoencoder":
        return export_autoencoder(config, info, params, out_dir)
    if config.method != "lm":
        raise UserError(f"--format=hf writes GPT runs (method 'lm') and KL autoencoder runs "
                        f"(method 'autoencoder'); this run's method is {config.method!r}.")
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



def autoencoder_export_blockers(config: ml_collections.ConfigDict) -> list[str]:
    """The options of an autoencoder run that diffusers' AutoencoderKL cannot express."""
    out = []
    if str(config.autoencoder.regularizer) != "kl":
        out.append(f"autoencoder.regularizer={config.autoencoder.regularizer!r} (AutoencoderKL "
                   "is the KL autoencoder, 'kl')")
    if tuple(config.model.attn_resolutions):
        out.append(f"model.attn_resolutions={tuple(config.model.attn_resolutions)} (attention "
                   "only in the mid-block, ())")
    embed = int(config.model.embed_dim) or int(config.model.z_channels)
    if embed != int(config.model.z_channels):
        out.append(f"model.embed_dim={embed} differs from model.z_channels="
                   f"{config.model.z_channels}")
    groups = int(config.model.num_groups)
    widths = [int(config.model.ch) * int(k) for k in config.model.ch_mult]
    if any(w % groups for w in widths):
        out.append(f"model.num_groups={groups} does not divide every level's width {widths} "
                   "(diffusers' GroupNorm uses exactly norm_num_groups groups)")
    return out


def export_autoencoder(config: ml_collections.ConfigDict, info: dict[str, Any], params: Any,
                       out_dir: str) -> list[str]:
    """Write a KL autoencoder run as a diffusers AutoencoderKL directory; `info["scale_factor"]`
    (the run's latent_stats.json, which `export` adds; else 1.0) becomes scaling_factor."""
    import jax

    blockers = autoencoder_export_blockers(config)
    if blockers:
        raise UserError(f"this run cannot be written as an AutoencoderKL: {'; '.join(blockers)}.")
    m = config.model
    scale = float(info.get("scale_factor", 1.0))
    arch = {"image_channels": int(info["image_shape"][-1]), "ch": int(m.ch),
            "ch_mult": tuple(int(k) for k in m.ch_mult),
            "num_res_blocks": int(m.num_res_blocks), "z_channels": int(m.z_channels),
            "num_groups": int(m.num_groups), "scale_factor": scale,
            "sample_size": int(info["image_shape"][0])}
    params = jax.tree.map(np.asarray, jax.device_get(params))
    ae = params.get("autoencoder", params)
    tensors = sd_vae.from_params(ae, len(arch["ch_mult"]))
    return sd_vae.write(out_dir, tensors, sd_vae.hf_config(arch))
