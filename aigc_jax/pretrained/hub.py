"""Where pretrained files live: a local directory, or a Hugging Face hub name fetched into the
local cache by `huggingface_hub` when it is installed and the network is there."""

import os

from aigc_jax.errors import UserError

# What an import reads: weights, config and the tokenizer, never PyTorch pickles.
HUB_PATTERNS = ("*.json", "*.safetensors", "merges.txt", "vocab.json")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or os.sep + os.sep in name or name.count("/") > 1


def resolve_dir(name: str, key: str) -> str:
    """The local directory for `name` (config key `key`): the directory itself, or the hub
    snapshot of a name like "gpt2" or "openai-community/gpt2-medium"."""
    if not name:
        raise UserError(f"config.{key} is empty; set it to a local directory or a hub name.")
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or _looks_like_path(name):
        raise UserError(f"config.{key}={name!r} is not a directory.")
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(f"config.{key}={name!r} is not a local directory, and huggingface_hub "
                        "is not installed to fetch it from the hub.") from None
    try:
        return huggingface_hub.snapshot_download(name, allow_patterns=list(HUB_PATTERNS))
    except Exception as e:  # no network, unknown repo, gated repo: one line for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"config.{key}={name!r} is not a local directory and could not be "
                        f"fetched from the hub: {first}") from None
