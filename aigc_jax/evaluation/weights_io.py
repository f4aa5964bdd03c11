"""Saving and loading network variables as flat .npz or flax msgpack files (never pickle).

A .npz holds one array per leaf, keyed by its "/"-joined path ("params/fc/kernel"); a .msgpack
holds the nested dict via `flax.serialization`. A URL is downloaded once into the cache folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request

import numpy as np
from flax import serialization, traverse_util

from aigc_jax.errors import UserError

CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "aigc_jax")
SUFFIXES = (".npz", ".msgpack")


def save_variables(path: str, variables: dict) -> None:
    """Writes a nested dict of arrays to `path` (.npz or .msgpack), atomically."""
    variables = _to_numpy(variables)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    if path.endswith(".npz"):
        with open(tmp, "wb") as f:
            np.savez(f, **traverse_util.flatten_dict(variables, sep="/"))
    elif path.endswith(".msgpack"):
        with open(tmp, "wb") as f:
            f.write(serialization.msgpack_serialize(variables))
    else:
        raise UserError(f"weights file {path!r} must end in one of {SUFFIXES}.")
    os.replace(tmp, path)


def load_variables(path_or_url: str, cache_dir: str | None = None) -> dict:
    """The nested dict of numpy arrays stored at a local path or URL (.npz or .msgpack)."""
    path = fetch(path_or_url, cache_dir) if is_url(path_or_url) else path_or_url
    if not os.path.isfile(path):
        raise UserError(f"weights file {path!r} does not exist.")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                flat = {k: z[k] for k in z.files}
            return traverse_util.unflatten_dict(flat, sep="/")
        if path.endswith(".msgpack"):
            with open(path, "rb") as f:
                return _to_numpy(serialization.msgpack_restore(f.read()))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read weights file {path!r}: {e}") from None
    raise UserError(f"weights file {path!r} must end in one of {SUFFIXES}.")


def fetch(url: str, cache_dir: str | None = None) -> str:
    """Downloads `url` into `cache_dir/weights/` unless already there; returns the local path."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "weights.npz"
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    folder = os.path.join(cache_dir or CACHE_DIR, "weights")
    path = os.path.join(folder, f"{digest}_{name}")
    if os.path.isfile(path):
        return path
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.part{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"cannot download weights from {url}: {e}") from None
    os.replace(tmp, path)
    return path


def file_digest(path: str) -> str:
    """First 16 hex digits of the file's sha256 (identifies weights in cached statistics)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def is_url(s: str) -> bool:
    """Whether `s` is an http(s)/ftp URL rather than a local path."""
    return urllib.parse.urlparse(s).scheme in ("http", "https", "ftp")


def _to_numpy(tree: dict) -> dict:
    return {k: _to_numpy(v) if isinstance(v, dict) else np.asarray(v) for k, v in tree.items()}
