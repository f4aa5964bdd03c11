"""Stable Diffusion's autoencoder in the `diffusers` `AutoencoderKL` layout <-> the KL
autoencoder of `aigc_jax/models/autoencoder.py`.

A diffusers directory (or the `vae/` folder of a pipeline) holds `config.json`
(`block_out_channels` -> ch, ch_mult; `layers_per_block` -> num_res_blocks; `latent_channels`
-> z_channels = embed_dim; `norm_num_groups`; `scaling_factor`, 0.18215 for SD 1.x) and
`diffusion_pytorch_model.safetensors`. The two networks are the same function: convolutions
are [O, I, kh, kw] there and [kh, kw, I, O] here; the 1x1 `conv_shortcut` is our `shortcut`
Dense; the single-head attention's `to_q`/`to_k`/`to_v` are our fused `c_attn` columns
[q | k | v] and `to_out.0` our `c_proj`; the decoder's `up_blocks` run deepest level first,
so `up_blocks.i` is our level len(ch_mult) - 1 - i. GroupNorm epsilon is 1e-6 in both.
Tensors are read and written with `safetensors.numpy`: no torch.
"""

import os
import re
from typing import Any

import numpy as np

from aigc_jax.errors import UserError
from aigc_jax.pretrained import files

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CONVERT_HINT = ("AutoencoderKL weights are read from safetensors; convert a .bin or .ckpt with "
                "diffusers' save_pretrained")
CLASS_NAME = "AutoencoderKL"
# diffusers' older attention names (checkpoints saved before diffusers 0.14) -> current ones.
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_RESBLOCK = {"Norm_0": "norm1", "conv1": "conv1", "Norm_1": "norm2", "conv2": "conv2",
             "shortcut": "conv_shortcut"}


def find_dir(directory: str) -> str:
    """`directory`, or its `vae/` sub-folder when it is a whole diffusers pipeline."""
    sub = os.path.join(directory, "vae")
    if not os.path.exists(os.path.join(directory, "config.json")) and os.path.isdir(sub):
        return sub
    return directory


def read_config(directory: str) -> dict[str, Any]:
    """`directory/config.json` as a dict; missing or malformed is a UserError naming it."""
    return files.read_config(directory, f"a diffusers AutoencoderKL directory has config.json "
                             f"and {WEIGHTS_FILE}")


def architecture(hf: dict[str, Any], where: str) -> dict[str, Any]:
    """Our autoencoder's options from an AutoencoderKL `config.json` (`where` names it); an
    option our model does not have is a UserError naming the key."""
    if hf.get("_class_name", CLASS_NAME) != CLASS_NAME:
        raise UserError(f"{where}: _class_name={hf.get('_class_name')!r} is an unknown "
                        f"architecture; only diffusers' {CLASS_NAME!r} imports.")
    channels = hf.get("block_out_channels")
    if not (isinstance(channels, list) and channels and all(
            isinstance(c, int) and c > 0 for c in channels)):
        raise UserError(f"{where}: block_out_channels={channels!r} must be a list of positive "
                        "integers.")
    groups = int(hf.get("norm_num_groups", 32))
    if channels[0] % groups or any(c % channels[0] for c in channels):
        raise UserError(f"{where}: block_out_channels={channels} must be multiples of its first "
                        f"entry, itself a multiple of norm_num_groups={groups}.")
    levels = len(channels)
    needs = {  # key: (values we support, diffusers' default)
        "down_block_types": ((["DownEncoderBlock2D"] * levels,), ["DownEncoderBlock2D"]),
        "up_block_types": ((["UpDecoderBlock2D"] * levels,), ["UpDecoderBlock2D"]),
        "act_fn": (("silu",), "silu"),
        "use_quant_conv": ((True,), True),
        "use_post_quant_conv": ((True,), True),
        "mid_block_add_attention": ((True,), True),
    }
    for key, (ok, default) in needs.items():
        if hf.get(key, default) not in ok:
            raise UserError(f"{where}: {key}={hf.get(key)!r} is not supported by our "
                            f"autoencoder (it needs {ok[0]!r}).")
    for key in ("shift_factor", "latents_mean", "latents_std"):
        if hf.get(key) not in (None, 0, 0.0):
            raise UserError(f"{where}: {key}={hf[key]!r} is not supported (our latents are "
                            "only scaled, by scaling_factor, as SD 1.x/2.x's).")
    in_ch, out_ch = int(hf.get("in_channels", 3)), int(hf.get("out_channels", 3))
    if in_ch != out_ch:
        raise UserError(f"{where}: in_channels={in_ch} and out_channels={out_ch} differ; our "
                        "autoencoder reconstructs its input.")
    latent = int(hf.get("latent_channels", 4))
    return {"image_channels": in_ch, "ch": channels[0],
            "ch_mult": tuple(c // channels[0] for c in channels),
            "num_res_blocks": int(hf.get("layers_per_block", 1)), "z_channels": latent,
            "embed_dim": latent, "num_groups": groups,
            "scale_factor": float(hf.get("scaling_factor", 0.18215)),
            "sample_size": int(hf.get("sample_size", 32) if not isinstance(
                hf.get("sample_size"), list) else hf["sample_size"][0])}


def hf_config(arch: dict[str, Any]) -> dict[str, Any]:
    """The AutoencoderKL `config.json` of our architecture dict (see `architecture`)."""
    levels = len(arch["ch_mult"])
    return {"_class_name": CLASS_NAME, "in_channels": arch["image_channels"],
            "out_channels": arch["image_channels"],
            "down_block_types": ["DownEncoderBlock2D"] * levels,
            "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": [arch["ch"] * m for m in arch["ch_mult"]],
            "layers_per_block": arch["num_res_blocks"], "act_fn": "silu",
            "latent_channels": arch["z_channels"], "norm_num_groups": arch["num_groups"],
            "sample_size": arch["sample_size"], "scaling_factor": arch["scale_factor"],
            "shift_factor": None, "force_upcast": True, "use_quant_conv": True,
            "use_post_quant_conv": True, "mid_block_add_attention": True}


def _module_name(side: str, name: str, levels: int) -> str:
    """diffusers' module path for one of our encoder/decoder sub-module names."""
    fixed = {"conv_in": "conv_in", "conv_out": "conv_out", "norm_out": "conv_norm_out",
             "mid_block_1": "mid_block.resnets.0", "mid_block_2": "mid_block.resnets.1",
             "mid_attn_1": "mid_block.attentions.0"}
    if name in fixed:
        return f"{side}.{fixed[name]}"
    m = re.fullmatch(r"(down|up)_(\d+)_(block_(\d+)|downsample|upsample)", name)
    if m is None:
        raise UserError(f"our parameter {side}/{name} has no diffusers AutoencoderKL "
                        "counterpart (attention outside the mid-block, attn_resolutions, "
                        "is not part of that architecture).")
    kind, level, index = m.group(1), int(m.group(2)), m.group(4)
    blocks = "down_blocks" if kind == "down" else "up_blocks"
    i = level if kind == "down" else levels - 1 - level
    if index is not None:
        return f"{side}.{blocks}.{i}.resnets.{index}"
    return f"{side}.{blocks}.{i}.{'downsamplers' if kind == 'down' else 'upsamplers'}.0.conv"


def hf_names(path: tuple[str, ...], levels: int) -> tuple[list[str], str]:
    """(diffusers tensor names, conversion kind) of one of our parameter paths. Kinds: conv
    ([O, I, kh, kw] <-> [kh, kw, I, O]), conv1x1 ([O, I, 1, 1] <-> a Dense [I, O]), dense (a
    Linear [O, I] <-> [I, O]), qkv (three Linears, fused: kernel or bias), vector."""
    leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
    if path[0] in ("quant_conv", "post_quant_conv"):
        return [f"{path[0]}.{leaf}"], "conv" if path[-1] == "kernel" else "vector"
    module, rest = _module_name(path[0], path[1], levels), path[2:-1]
    if path[1] == "mid_attn_1":
        if rest[0] == "Norm_0":
            return [f"{module}.group_norm.{leaf}"], "vector"
        if rest[-1] == "c_attn":
            return [f"{module}.to_{x}.{leaf}" for x in "qkv"], "qkv"
        return [f"{module}.to_out.0.{leaf}"], "dense" if path[-1] == "kernel" else "vector"
    if rest and rest[0] in _RESBLOCK:
        module = f"{module}.{_RESBLOCK[rest[0]]}"
    kind = "vector"
    if path[-1] == "kernel":
        kind = "conv1x1" if rest and rest[0] == "shortcut" else "conv"
    return [f"{module}.{leaf}"], kind


def _flat(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def _unflat(flat: dict[tuple[str, ...], Any]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = v
    return out


def _to_ours(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    if kind in ("dense", "conv1x1"):
        return value.reshape(value.shape[:2]).T
    return value


def read_tensors(directory: str) -> tuple[dict[str, np.ndarray], str]:
    """Every tensor of `directory/diffusion_pytorch_model.safetensors` (legacy attention names
    renamed) and that path for messages; a missing or unreadable file is a UserError."""
    path = os.path.join(directory, WEIGHTS_FILE)
    loaded = files.load_tensors(path, CONVERT_HINT)
    return {_current_name(k): v for k, v in loaded.items()}, path


def _current_name(key: str) -> str:
    """`key` with diffusers' legacy attention names (query, key, value, proj_attn) renamed."""
    parts = key.split(".")
    if len(parts) > 2 and parts[-2] in LEGACY_ATTENTION and "attentions" in parts:
        return ".".join([*parts[:-2], LEGACY_ATTENTION[parts[-2]], parts[-1]])
    return key


def tensor_shapes(directory: str) -> tuple[dict[str, tuple[int, ...]], str]:
    """The shape of every tensor in the weights file, read from its header only (no data)."""
    path = os.path.join(directory, WEIGHTS_FILE)
    shapes = files.tensor_shapes(path, CONVERT_HINT)
    return {_current_name(k): v for k, v in shapes.items()}, path


def check(directory: str, shapes: dict, levels: int) -> None:
    """Raise the UserError `to_params` would, from the file's header alone: run before any
    compilation, so a checkpoint that does not fit the config fails at once."""
    header, where = tensor_shapes(directory)
    zero = np.zeros((), np.float32)
    to_params({k: np.broadcast_to(zero, v) for k, v in header.items()}, shapes, levels, where)


def to_params(tensors: dict[str, np.ndarray], shapes: dict, levels: int,
              where: str) -> dict[str, Any]:
    """Our autoencoder's parameter tree (float32 numpy, like `shapes`: the model's parameter
    tree of shapes) from AutoencoderKL tensors; a missing, misshapen or extra tensor is a
    UserError naming it."""
    tensors, out = dict(tensors), {}
    for path, shape in _flat(shapes.get("params", shapes)).items():
        names, kind = hf_names(path, levels)
        missing = [n for n in names if n not in tensors]
        if missing:
            raise UserError(f"{where} has no tensor {missing[0]!r} (needed for our "
                            f"{'/'.join(path)}; check block_out_channels and layers_per_block "
                            "in config.json).")
        each = kind if kind != "qkv" else ("dense" if path[-1] == "kernel" else "vector")
        parts = [_to_ours(np.asarray(tensors.pop(n), np.float32), each) for n in names]
        value = np.concatenate(parts, axis=-1) if kind == "qkv" else parts[0]
        if tuple(value.shape) != tuple(shape):
            raise UserError(f"{where}: tensor {names[0]!r} gives shape {tuple(value.shape)} for "
                            f"our {'/'.join(path)}, which config.json makes {tuple(shape)}.")
        out[path] = value
    if tensors:
        extra = sorted(tensors)
        raise UserError(f"{where}: tensor {extra[0]!r} is not part of the AutoencoderKL that "
                        f"config.json describes ({len(extra)} unexpected tensors).")
    return {"params": _unflat(out)}


def from_params(params: dict, levels: int) -> dict[str, np.ndarray]:
    """AutoencoderKL tensors (float32, diffusers names) from our autoencoder's parameters."""
    out = {}
    for path, value in _flat(params.get("params", params)).items():
        names, kind = hf_names(path, levels)
        value = np.asarray(value, np.float32)
        if kind == "conv":
            parts = [value.transpose(3, 2, 0, 1)]
        elif kind == "dense":
            parts = [value.T]
        elif kind == "conv1x1":
            parts = [value.T[:, :, None, None]]
        elif kind == "qkv":  # the fused columns split back into to_q, to_k, to_v
            parts = [p.T if path[-1] == "kernel" else p for p in np.split(value, 3, axis=-1)]
        else:
            parts = [value]
        for name, part in zip(names, parts, strict=True):
            out[name] = np.ascontiguousarray(part)
    return out


def write(out_dir: str, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> list[str]:
    """`diffusion_pytorch_model.safetensors` and `config.json` in `out_dir` (created)."""
    return files.write(out_dir, WEIGHTS_FILE, tensors, config)
