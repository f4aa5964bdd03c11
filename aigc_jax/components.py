"""Trained runs as frozen components of another run, and warm starts (DESIGN.md, "Components").

A run names others in its config:

    config.components.autoencoder.workdir = "runs/vae_digits"   # + step (0: newest), weights
    config.init_from.workdir = "runs/gpt_base"                  # warm start trainable params

A family exports *roles*: typed bundles of pure functions whose first argument is the frozen
weights (`Autoencoder.encode(weights, images)`), built by the family's own code from the run's
`config.json` and `data_info.json`. `load` restores only the weights (no optimizer state) from
the run's checkpoint, placed with the mesh's shardings. The loop passes them to the jitted
step as an argument (never closed over, never donated, never checkpointed) and records each
component's provenance (workdir, step, config hash) in `config.json` and `eval/<step>.json`.
big_vision does the same for its stage-2 trainers (`proj/givt`, `proj/distill`).
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh

from aigc_jax import parallel
from aigc_jax.errors import UserError

PyTree = Any
WEIGHTS = {"ema": "ema_params", "params": "params"}


# ----------------------------------------------------------------------------------- roles


@dataclasses.dataclass(frozen=True)
class Autoencoder:
    """images <-> latents. `encode(w, uint8 [B, H, W, C]) -> float [B, *latent_shape]` (already
    multiplied by the stored scale factor); `decode(w, latents) -> float [B, H, W, C] in [-1, 1]`
    (undoes the scale factor first). Discrete autoencoders (VQ, FSQ) also map code indices:
    `encode_indices(w, uint8 images) -> int32 [B, h, w]`, `decode_indices(w, indices) ->
    images in [-1, 1]`, with `codebook_size` codes (None / 0 for continuous latents)."""

    encode: Callable[[PyTree, jax.Array], jax.Array]
    decode: Callable[[PyTree, jax.Array], jax.Array]
    latent_shape: tuple[int, ...]
    image_shape: tuple[int, ...]
    scale_factor: float = 1.0
    encode_indices: Callable[[PyTree, jax.Array], jax.Array] | None = None
    decode_indices: Callable[[PyTree, jax.Array], jax.Array] | None = None
    codebook_size: int = 0


@dataclasses.dataclass(frozen=True)
class TextEncoder:
    """prompts -> token ids on the host (`tokenize(list[str]) -> int32 [B, T]`), then
    `encode(w, tokens) -> (states [B, T, D], pooled [B, D])`."""

    tokenize: Callable[[Sequence[str]], np.ndarray]
    encode: Callable[[PyTree, jax.Array], tuple[jax.Array, jax.Array]]
    max_length: int
    width: int


@dataclasses.dataclass(frozen=True)
class ImageEncoder:
    """`encode(w, uint8 [B, H, W, C]) -> embeddings [B, D]`."""

    encode: Callable[[PyTree, jax.Array], jax.Array]
    image_shape: tuple[int, ...]
    width: int


@dataclasses.dataclass(frozen=True)
class Classifier:
    """`logits(w, uint8 [B, H, W, C]) -> [B, num_classes]`."""

    logits: Callable[[PyTree, jax.Array], jax.Array]
    image_shape: tuple[int, ...]
    num_classes: int


@dataclasses.dataclass(frozen=True)
class TokenPrior:
    """`logits(w, tokens int32 [B, S]) -> [B, S, vocab_size]`: next-token logits."""

    logits: Callable[[PyTree, jax.Array], jax.Array]
    vocab_size: int
    block_size: int


ROLES: dict[str, type] = {
    "autoencoder": Autoencoder,
    "text_encoder": TextEncoder,
    "image_encoder": ImageEncoder,
    "classifier": Classifier,
    "token_prior": TokenPrior,
}


@dataclasses.dataclass(frozen=True)
class Component:
    """A loaded component: its role bundle, its frozen weights and where they came from."""

    role: str
    bundle: Any
    weights: PyTree
    provenance: dict[str, Any]


# ------------------------------------------------------------------------------ run files


def config_hash(config: ml_collections.ConfigDict | dict) -> str:
    """A short, stable hash of a config (sorted-key JSON), for provenance records."""
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    text = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_run(workdir: str, what: str) -> tuple[ml_collections.ConfigDict, dict]:
    """(config, data info) of the trained run in `workdir`, or a UserError naming `what`."""
    if not workdir:
        raise UserError(f"config.{what}.workdir is empty; set it to a trained run's workdir.")
    if not os.path.isdir(workdir):
        raise UserError(f"config.{what}.workdir={workdir!r} does not exist.")
    files = {}
    for name in ("config.json", "data_info.json"):
        path = os.path.join(workdir, name)
        try:
            with open(path) as f:
                files[name] = json.load(f)
        except FileNotFoundError:
            raise UserError(f"config.{what}.workdir={workdir!r} holds no trained run "
                            f"(no {name}).") from None
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path} (config.{what}) cannot be read: {e}.") from None
    saved = dict(files["config.json"])
    saved.pop("provenance", None)  # what that run recorded of its own components
    config = ml_collections.ConfigDict(saved)
    return config, files["data_info.json"]


def read_only_manager(workdir: str) -> ocp.CheckpointManager:
    """An orbax manager that only reads `workdir/checkpoints` (another run's, or this one's)."""
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})


def resolve_step(workdir: str, step: int, what: str) -> int:
    """`step` if the run has a checkpoint there, its newest checkpoint when step is 0."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    steps = []
    if os.path.isdir(ckpt_dir):
        mngr = read_only_manager(workdir)
        steps = sorted(mngr.all_steps())
        mngr.close()
    if not steps:
        raise UserError(f"config.{what}.workdir={workdir!r} holds no checkpoint; train it first.")
    if step == 0:
        return steps[-1]
    if step not in steps:
        raise UserError(f"config.{what}.step={step} is not a checkpoint of {workdir!r} "
                        f"(it has {steps}).")
    return step


def restore_weights(workdir: str, step: int, weights: str, mesh: Mesh, what: str) -> PyTree:
    """Only `params` or `ema_params` of the checkpoint at `step` (no optimizer state), each
    array placed with `parallel.state_shardings` on `mesh` (so FSDP shards it like the state)."""
    if weights not in WEIGHTS:
        raise UserError(f"config.{what}.weights={weights!r} is unknown; expected one of "
                        f"{sorted(WEIGHTS)}.")
    key = WEIGHTS[weights]
    mngr = read_only_manager(workdir)
    try:
        meta = mngr.item_metadata(step)["state"]
        tree = meta.tree if hasattr(meta, "tree") else meta
        if key not in tree:
            raise UserError(f"checkpoint {step} of {workdir!r} has no {key!r} "
                            f"(config.{what}.weights={weights!r}).")
        shapes = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[key])
        shardings = parallel.state_shardings(mesh, shapes)
        target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                              shapes, shardings)
        restore_args = jax.tree.map(lambda sh: ocp.ArrayRestoreArgs(sharding=sh), shardings)
        out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item={key: target}, restore_args={key: restore_args}, partial_restore=True)))
    finally:
        mngr.close()
    return out["state"][key]


# ------------------------------------------------------------------------------ loading


def load(role: str, spec: ml_collections.ConfigDict, mesh: Mesh,
         pinned: dict[str, Any] | None = None) -> Component:
    """The trained run `spec.workdir` as a frozen `role`, built by its own family's code.

    `pinned` is the provenance a resumed run recorded: the component is reloaded at that step,
    and a run whose config changed since is an error (the resumed run would train on a
    different model than its first half did).
    """
    from aigc_jax import methods  # methods import this module

    what = f"components.{role}"
    if role not in ROLES:
        raise UserError(f"config.{what} names an unknown role; known roles: {sorted(ROLES)}.")
    workdir = str(spec.get("workdir", ""))
    config, info = read_run(workdir, what)
    module = methods.get_module(config.method)
    exporters = getattr(module, "ROLES", {})
    if role not in exporters:
        raise UserError(f"config.{what}.workdir={workdir!r} is a {config.method!r} run, which "
                        f"cannot serve as {role!r}; it exports {sorted(exporters) or 'no roles'}.")
    step = int(spec.get("step", 0))
    if pinned is not None:
        if pinned["config_hash"] != config_hash(config):
            raise UserError(f"the {role} component {workdir!r} has a different config.json than "
                            f"when this run started (hash {pinned['config_hash']}); restore it, or "
                            "start a new --workdir.")
        step = int(pinned["step"])
    step = resolve_step(workdir, step, what)
    weights_name = str(spec.get("weights", "ema"))
    weights = restore_weights(workdir, step, weights_name, mesh, what)
    bundle = exporters[role](config, info, workdir)
    provenance = {"workdir": os.path.abspath(workdir), "step": step, "weights": weights_name,
                  "method": config.method, "config_hash": config_hash(config)}
    logging.info("component %s: %s run %s at step %d (%s weights)", role, config.method,
                 workdir, step, weights_name)
    return Component(role, bundle, weights, provenance)


def load_all(config: ml_collections.ConfigDict, mesh: Mesh, accepted: Sequence[str],
             pinned: dict[str, dict] | None = None) -> dict[str, Component]:
    """Every component `config.components` names; a role the method does not take is an error."""
    specs = config.get("components") or {}
    out = {}
    for role in sorted(specs):
        spec = specs[role]
        if not str(spec.get("workdir", "")):
            continue  # declared by the config but not set: the method runs without it
        if role not in accepted:
            raise UserError(f"config.components.{role} is set, but method {config.method!r} "
                            f"takes {sorted(accepted) or 'no components'}.")
        out[role] = load(role, spec, mesh, (pinned or {}).get(role))
    return out


# ------------------------------------------------------------------------------ warm start


def _flatten(tree: PyTree) -> dict[str, Any]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                     for k in path): leaf for path, leaf in flat}


def parse_name_map(text: str) -> list[tuple[str, str]]:
    """'dst=src,dst2=src2' -> [(dst, src), ...]: parameter-path prefixes of this run and the
    source run (`init_from.name_map`; empty: identical paths)."""
    pairs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        dst, sep, src = item.partition("=")
        if not sep:
            raise UserError(f"config.init_from.name_map entry {item!r} must look like "
                            "'this/prefix=source/prefix'.")
        pairs.append((dst.strip().strip("/"), src.strip().strip("/")))
    return pairs


def _source_path(path: str, name_map: list[tuple[str, str]]) -> str | None:
    if not name_map:
        return path
    for dst, src in name_map:
        if path == dst or path.startswith(dst + "/") or not dst:
            rest = path[len(dst):].lstrip("/")
            return "/".join(p for p in (src, rest) if p)
    return None


def warm_start(params: PyTree, config: ml_collections.ConfigDict, mesh: Mesh
               ) -> tuple[PyTree, dict[str, Any]]:
    """`params` with every leaf that `config.init_from` maps to a same-shaped leaf of the
    source run replaced by it; (new params, provenance). Keys that match nothing are an error."""
    spec = config.init_from
    workdir = str(spec.workdir)
    source_config, _ = read_run(workdir, "init_from")
    step = resolve_step(workdir, int(spec.get("step", 0)), "init_from")
    source = _flatten(restore_weights(workdir, step, str(spec.get("weights", "ema")), mesh,
                                      "init_from"))
    name_map = parse_name_map(str(spec.get("name_map", "")))
    target = _flatten(params)
    copied, mismatched = {}, []
    for path, leaf in target.items():
        src = _source_path(path, name_map)
        if src is None or src not in source:
            continue
        if tuple(source[src].shape) != tuple(leaf.shape):
            mismatched.append(f"{path} {tuple(leaf.shape)} <- {src} {tuple(source[src].shape)}")
            continue
        copied[path] = source[src]
    if mismatched:
        raise UserError(f"config.init_from: {len(mismatched)} parameters differ in shape from "
                        f"{workdir!r}, first {mismatched[0]}.")
    if not copied:
        example = next(iter(target), "")
        raise UserError(f"config.init_from.workdir={workdir!r}: no parameter matches this run's "
                        f"(e.g. {example!r}; source has {next(iter(source), '')!r}); check "
                        "init_from.name_map.")
    if name_map:
        used = {dst for dst, _ in name_map if any(p == dst or p.startswith(dst + "/")
                                                 for p in copied)}
        unused = [dst for dst, _ in name_map if dst not in used]
        if unused:
            raise UserError(f"config.init_from.name_map prefix {unused[0]!r} matches no "
                            "parameter of this run.")
    paths = list(target)
    leaves = [copied.get(p, target[p]) for p in paths]
    treedef = jax.tree.structure(params)
    new = jax.tree.unflatten(treedef, [
        jax.device_put(v, t.sharding) if hasattr(t, "sharding") else v
        for v, t in zip(leaves, jax.tree.leaves(params), strict=True)])
    logging.info("init_from %s step %d: %d of %d parameter arrays copied", workdir, step,
                 len(copied), len(target))
    return new, {"workdir": os.path.abspath(workdir), "step": step,
                 "config_hash": config_hash(source_config), "copied": len(copied),
                 "total": len(target), "name_map": str(spec.get("name_map", ""))}


def is_set(spec: ml_collections.ConfigDict | None) -> bool:
    """Whether a components/init_from entry names a workdir."""
    return spec is not None and bool(str(spec.get("workdir", "")))

