"""The config of a trained run, for `--mode=eval` and `--mode=sample`.

The run's `config.json` defines the model, the objective and the data; the command line may
change only what is safe to change after training (`SAFE_PREFIXES`: the sampler, the number
of samples, evaluation bounds, the seed of sampling, the data path, the device layout, the
convolution implementation (`model.conv_impl`: same parameters, same function) and `train.*`,
which a finished run no longer uses).
A changed training-defining key is one clear error instead of a silently different model.
"""

import json
import os
from typing import Any

import ml_collections

from aigc_jax.errors import UserError

SAFE_PREFIXES = ("sampler.", "eval.", "parallel.", "train.", "num_samples", "seed", "data.path",
                 "wavenet.temperature", "wavenet.sample_length", "wavenet.sample_lead",
                 "data.tfds_data_dir", "peak_flops", "model.conv_impl")


def is_safe(key: str) -> bool:
    """Whether `--config.<key>` may differ from the trained run's value in eval/sample."""
    return any(key == p.rstrip(".") or key.startswith(p) for p in SAFE_PREFIXES)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _same(a: Any, b: Any) -> bool:
    norm = (lambda v: list(v) if isinstance(v, (tuple, list)) else v)
    return norm(a) == norm(b)


def load_saved(workdir: str) -> dict[str, Any] | None:
    """The run's `config.json` as a dict (without its provenance), or None if there is none."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    saved.pop("provenance", None)
    return saved


def for_trained_run(config: ml_collections.ConfigDict, workdir: str,
                    overrides: dict[str, Any], mode: str) -> ml_collections.ConfigDict:
    """`config` with every training-defining value taken from `workdir/config.json`.

    `overrides` are the `--config.<key>` values given on the command line: safe ones are kept,
    a training-defining one that differs from the run's value is a UserError. Without a
    `config.json` (a run from before it was written) `config` is returned unchanged.
    """
    saved = load_saved(workdir)
    if saved is None:
        return config
    if saved.get("method") != config.method:
        raise UserError(f"--workdir={workdir!r} holds a {saved.get('method')!r} run but --config "
                        f"is a {config.method!r} config; pass the config file it was trained "
                        "with.")
    flat_saved = _flatten(saved)
    for key, value in overrides.items():
        if not is_safe(key) and key in flat_saved and not _same(flat_saved[key], value):
            raise UserError(
                f"--config.{key}={value!r} differs from the {flat_saved[key]!r} the run in "
                f"{workdir!r} was trained with; --mode={mode} takes the model from its "
                "config.json and may change only sampler.*, eval.*, train.*, num_samples, "
                "seed, data.path, parallel.*, model.conv_impl and WaveNet's temperature / "
                "sample_length / sample_lead (drop the flag, or train a new run).")
    # Every value the run saved, except safe keys given on the command line; keys newer than
    # the run keep the config file's defaults.
    out = ml_collections.ConfigDict(config.to_dict())
    with out.ignore_type():
        for key, value in flat_saved.items():
            if not (key in overrides and is_safe(key)):
                _set(out, key, value)
    return out


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        if part not in node:
            node[part] = ml_collections.ConfigDict()
        node = node[part]
    current = node.get(leaf)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    node[leaf] = value
