"""Reading and writing the files of a pretrained directory: its `config.json` and its
safetensors weights (through `safetensors`' numpy API, no torch), with one-line errors."""

import json
import os
from typing import Any

import numpy as np

from aigc_jax.errors import UserError


def read_config(directory: str, layout: str) -> dict[str, Any]:
    """`directory/config.json` as a dict; missing or malformed is a UserError naming it
    (`layout` completes "a ... directory has ..." in the missing-file message)."""
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {layout}.") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} cannot be read: {e}.") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_tensors(path: str, convert_hint: str) -> dict[str, np.ndarray]:
    """Every tensor of the safetensors file `path`; missing (`convert_hint` says how to make
    one) or unreadable is a UserError naming it."""
    from safetensors.numpy import load_file

    if not os.path.exists(path):
        raise UserError(f"{path} is missing ({convert_hint}).")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own types (bad header, bfloat16, ...)
        raise UserError(f"{path} cannot be read as numpy safetensors: {_first_line(e)}") from None


def tensor_shapes(path: str, convert_hint: str) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the safetensors file `path`, from its header only."""
    from safetensors import safe_open

    if not os.path.exists(path):
        raise UserError(f"{path} is missing ({convert_hint}).")
    try:
        with safe_open(path, "np") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own types (bad header, ...)
        raise UserError(f"{path} cannot be read as safetensors: {_first_line(e)}") from None


def write(out_dir: str, weights_file: str, tensors: dict[str, np.ndarray],
          config: dict[str, Any]) -> list[str]:
    """`weights_file` (safetensors, format "pt", which transformers and diffusers check) and
    `config.json` in `out_dir` (created); the paths written."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    weights = os.path.join(out_dir, weights_file)
    save_file(tensors, weights, metadata={"format": "pt"})
    cfg_path = os.path.join(out_dir, "config.json")
    with open(cfg_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return [weights, cfg_path]
