"""GPT-2 in the `transformers` layout <-> the GPT of `aigc_jax/models/gpt.py`.

A `transformers` GPT-2 directory holds `config.json` (the shape: n_layer, n_head, n_embd,
n_positions, vocab_size, layer_norm_epsilon, activation_function), `model.safetensors` (or
shards listed in `model.safetensors.index.json`) and the tokenizer files. GPT-2's linear layers
are `Conv1D`s whose weight is [in, out] (the transpose of `torch.nn.Linear`, which is why
nanoGPT transposes them); a Flax `Dense` kernel is [in, out] too, so they copy unchanged. The
fused c_attn columns are [q | k | v], each split into heads as `MultiHeadAttention` does. The
output layer is tied to `wte`. Tensors are read and written with `safetensors.numpy`: no torch.
"""

import json
import os
from typing import Any

import numpy as np

from aigc_jax.errors import UserError
from aigc_jax.pretrained import files

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# transformers' activation names -> `model.gelu` ("gelu_new" is GPT-2's tanh approximation).
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "exact"}
# Causal-mask buffers that older checkpoints store beside the weights (not parameters).
BUFFERS = (".attn.bias", ".attn.masked_bias")
PREFIX = "transformer."

# Per block: transformers name -> (our path under h_<i>, shape as a function of D).
BLOCK = {
    "ln_1.weight": (("ln_1", "scale"), lambda d: (d,)),
    "ln_1.bias": (("ln_1", "bias"), lambda d: (d,)),
    "attn.c_attn.weight": (("attn", "c_attn", "kernel"), lambda d: (d, 3 * d)),
    "attn.c_attn.bias": (("attn", "c_attn", "bias"), lambda d: (3 * d,)),
    "attn.c_proj.weight": (("attn", "c_proj", "kernel"), lambda d: (d, d)),
    "attn.c_proj.bias": (("attn", "c_proj", "bias"), lambda d: (d,)),
    "ln_2.weight": (("ln_2", "scale"), lambda d: (d,)),
    "ln_2.bias": (("ln_2", "bias"), lambda d: (d,)),
    "mlp.c_fc.weight": (("mlp", "c_fc", "kernel"), lambda d: (d, 4 * d)),
    "mlp.c_fc.bias": (("mlp", "c_fc", "bias"), lambda d: (4 * d,)),
    "mlp.c_proj.weight": (("mlp", "c_proj", "kernel"), lambda d: (4 * d, d)),
    "mlp.c_proj.bias": (("mlp", "c_proj", "bias"), lambda d: (d,)),
}


def read_config(directory: str) -> dict[str, Any]:
    """`directory/config.json` as a dict; missing or malformed is a UserError naming it."""
    return files.read_config(directory, "a transformers GPT-2 directory has config.json, "
                             "model.safetensors and tokenizer files")


def architecture(hf: dict[str, Any], where: str) -> dict[str, Any]:
    """Our model options from a transformers GPT-2 `config.json` (`where` names the file);
    an architecture or option our GPT does not have is a UserError naming the key."""
    if hf.get("model_type") != "gpt2":
        raise UserError(f"{where}: model_type={hf.get('model_type')!r} is an unknown "
                        "architecture; only GPT-2 ('gpt2') checkpoints import.")
    for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
        if not isinstance(hf.get(key), int) or hf[key] < 1:
            raise UserError(f"{where}: {key}={hf.get(key)!r} must be a positive integer.")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise UserError(f"{where}: activation_function={act!r} is not supported; expected one "
                        f"of {sorted(ACTIVATIONS)}.")
    n_embd = hf["n_embd"]
    unsupported = {  # key: (value we need, what transformers defaults it to)
        "n_inner": ((None, 4 * n_embd), None),
        "scale_attn_weights": ((True,), True),
        "scale_attn_by_inverse_layer_idx": ((False,), False),
        "add_cross_attention": ((False,), False),
        "tie_word_embeddings": ((True,), True),
    }
    for key, (ok, default) in unsupported.items():
        if hf.get(key, default) not in ok:
            raise UserError(f"{where}: {key}={hf.get(key)!r} is not supported by our GPT "
                            f"(it needs {' or '.join(repr(v) for v in ok)}).")
    if n_embd % hf["n_head"]:
        raise UserError(f"{where}: n_embd={n_embd} is not a multiple of n_head={hf['n_head']}.")
    return {"n_layer": hf["n_layer"], "n_head": hf["n_head"], "n_embd": n_embd,
            "n_positions": hf["n_positions"], "vocab_size": hf["vocab_size"],
            "ln_epsilon": float(hf.get("layer_norm_epsilon", 1e-5)), "gelu": ACTIVATIONS[act]}


def read_tensors(directory: str) -> tuple[dict[str, np.ndarray], str]:
    """Every tensor of the checkpoint by transformers name without the "transformer." prefix,
    and the file name for messages; a missing or unreadable file is a UserError."""
    index = os.path.join(directory, INDEX_FILE)
    if os.path.exists(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
    else:
        names = [WEIGHTS_FILE]
    tensors = {}
    for name in names:
        loaded = files.load_tensors(
            os.path.join(directory, name), "GPT-2 weights are read from safetensors files; "
            "convert a pytorch_model.bin with transformers' save_pretrained")
        for key, value in loaded.items():
            tensors[key.removeprefix(PREFIX)] = value
    where = os.path.join(directory, names[0] if len(names) == 1 else INDEX_FILE)
    return tensors, where


def to_params(tensors: dict[str, np.ndarray], arch: dict[str, Any], block_size: int,
              vocab_size: int, where: str) -> dict[str, Any]:
    """Our GPT's parameter tree ({"params": ...}, float32 numpy) from GPT-2's tensors: the
    position table cropped to `block_size`, the embedding zero-padded to `vocab_size` rows."""
    d, tensors = arch["n_embd"], dict(tensors)
    for key in [k for k in tensors if k.endswith(BUFFERS)]:
        del tensors[key]
    if "lm_head.weight" in tensors:  # tied: the same matrix as wte, or wte itself
        head = tensors.pop("lm_head.weight")
        if "wte.weight" not in tensors:
            tensors["wte.weight"] = head
        elif not np.array_equal(head, tensors["wte.weight"]):
            raise UserError(f"{where}: lm_head.weight differs from wte.weight; our GPT ties the "
                            "output layer to the token embedding.")

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise UserError(f"{where} has no tensor {name!r} (config.json says n_layer="
                            f"{arch['n_layer']}, n_embd={d}).")
        value = tensors.pop(name)
        if tuple(value.shape) != tuple(shape):
            raise UserError(f"{where}: tensor {name!r} has shape {tuple(value.shape)}, but "
                            f"config.json needs {tuple(shape)}.")
        return np.asarray(value, np.float32)

    wte = take("wte.weight", (arch["vocab_size"], d))
    if vocab_size < len(wte):
        raise UserError(f"the model's vocabulary ({vocab_size}) is smaller than the "
                        f"checkpoint's vocab_size={len(wte)} ({where}).")
    wte = np.concatenate([wte, np.zeros((vocab_size - len(wte), d), np.float32)])
    wpe = take("wpe.weight", (arch["n_positions"], d))
    if block_size > len(wpe):
        raise UserError(f"model.block_size={block_size} is longer than the checkpoint's "
                        f"n_positions={len(wpe)} ({where}).")
    params: dict[str, Any] = {"wte": {"embedding": wte}, "wpe": {"embedding": wpe[:block_size]},
                              "ln_f": {"scale": take("ln_f.weight", (d,)),
                                       "bias": take("ln_f.bias", (d,))}}
    for i in range(arch["n_layer"]):
        block: dict[str, Any] = {}
        for name, (path, shape) in BLOCK.items():
            node = block
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = take(f"h.{i}.{name}", shape(d))
        params[f"h_{i}"] = block
    if tensors:
        extra = sorted(tensors)
        raise UserError(f"{where}: tensor {extra[0]!r} is not part of GPT-2 with n_layer="
                        f"{arch['n_layer']} ({len(extra)} unexpected tensors).")
    return {"params": params}


def from_params(params: Any, n_layer: int, vocab_size: int) -> dict[str, np.ndarray]:
    """transformers' GPT2LMHeadModel tensors (float32, "transformer." names) from our GPT's
    parameters; biases our model leaves out (model.bias=False) are written as zeros, which is
    the same function."""
    p = params.get("params", params)
    d = p["wte"]["embedding"].shape[1]

    def get(node: dict, path: tuple[str, ...], shape: tuple[int, ...]) -> np.ndarray:
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:  # only biases may be absent
                assert path[-1] == "bias", path
                return np.zeros(shape, np.float32)
        return np.ascontiguousarray(np.asarray(node, np.float32))

    out = {"wte.weight": get(p, ("wte", "embedding"), ())[:vocab_size],
           "wpe.weight": get(p, ("wpe", "embedding"), ()),
           "ln_f.weight": get(p, ("ln_f", "scale"), (d,)),
           "ln_f.bias": get(p, ("ln_f", "bias"), (d,))}
    for i in range(n_layer):
        for name, (path, shape) in BLOCK.items():
            out[f"h.{i}.{name}"] = get(p[f"h_{i}"], path, shape(d))
    return {PREFIX + k: np.ascontiguousarray(v) for k, v in out.items()}


def hf_config(n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int,
              ln_epsilon: float, gelu: str, dropout: float = 0.0,
              eos_token_id: int | None = None) -> dict[str, Any]:
    """A transformers GPT2Config dict for our GPT's options."""
    act = {"tanh": "gelu_new", "exact": "gelu"}[gelu]
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "n_inner": None,
            "n_positions": block_size, "n_ctx": block_size, "vocab_size": vocab_size,
            "layer_norm_epsilon": ln_epsilon, "activation_function": act,
            "resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "tie_word_embeddings": True,
            "bos_token_id": eos_token_id, "eos_token_id": eos_token_id, "use_cache": True}


def export_blockers(model_cfg: Any) -> list[str]:
    """The options of a GPT run (`config.model`) that GPT-2's architecture cannot express."""
    out = []
    if str(model_cfg.get("position", "learned")) != "learned":
        out.append(f"model.position={model_cfg.position!r} (GPT-2 has learned absolute "
                   "positions, 'learned')")
    gelu = str(model_cfg.get("gelu", "exact"))
    if gelu not in ("exact", "tanh"):
        out.append(f"model.gelu={gelu!r}")
    return out


def write(out_dir: str, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> list[str]:
    """`model.safetensors` and `config.json` in `out_dir` (created); the paths written."""
    return files.write(out_dir, WEIGHTS_FILE, tensors, config)
