"""Write a trained run in another ecosystem's layout.

    python -m aigc_jax.export --workdir=runs/gpt --format=hf --out=runs/gpt_hf

`--format=hf`: a GPT run as a `transformers` GPT-2 directory (config.json, model.safetensors
and, for GPT-2's tokenizer, the tokenizer files), loadable with
`GPT2LMHeadModel.from_pretrained(out)`; a KL autoencoder run as a `diffusers` AutoencoderKL
directory (config.json with its latent_stats.json scale factor as scaling_factor,
diffusion_pytorch_model.safetensors), loadable with `AutoencoderKL.from_pretrained(out)`.
A UserError prints as one line and exits with status 2.
"""

import json
import os
import sys

import ml_collections
from absl import app, flags, logging

from aigc_jax.errors import UserError

FORMATS = ("hf",)

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The trained run to export.")
flags.DEFINE_string("format", "hf", f"Output layout: {', '.join(FORMATS)}.")
flags.DEFINE_string("out", None, "Directory to write (created).")
flags.DEFINE_integer("step", 0, "Checkpoint step to export (0: the newest).")
flags.DEFINE_enum("weights", "ema", ["ema", "params"], "EMA or raw weights.")


def export(workdir: str, out: str, fmt: str = "hf", step: int = 0,
           weights: str = "ema") -> list[str]:
    """Export the run in `workdir` (checkpoint `step`, 0: newest) to `out` in format `fmt`;
    returns the files written."""
    from aigc_jax import components, parallel, pretrained

    if fmt not in FORMATS:
        raise UserError(f"--format={fmt!r} is unknown; expected one of {FORMATS}.")
    if not out:
        raise UserError("--out is required: the directory to write.")
    if not workdir or not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir!r} is not a directory.")
    files = {}
    for name in ("config.json", "data_info.json"):
        path = os.path.join(workdir, name)
        try:
            with open(path) as f:
                files[name] = json.load(f)
        except FileNotFoundError:
            raise UserError(f"--workdir={workdir!r} holds no trained run (no {name}).") from None
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path} cannot be read: {e}.") from None
    files["config.json"].pop("provenance", None)  # the run's own components, not needed here
    config, info = ml_collections.ConfigDict(files["config.json"]), files["data_info.json"]
    if config.method == "lm":  # check before restoring anything
        blockers = pretrained.gpt2.export_blockers(config.model)
        if blockers:
            raise UserError(f"this run cannot be written as GPT-2: {'; '.join(blockers)}.")
    if config.method == "autoencoder":
        blockers = pretrained.autoencoder_export_blockers(config)
        if blockers:
            raise UserError(f"this run cannot be written as an AutoencoderKL: "
                            f"{'; '.join(blockers)}.")
        from aigc_jax.methods.autoencoder.method import read_latent_stats

        stats = read_latent_stats(workdir)
        if stats is None:
            logging.warning("%s has no latent_stats.json (run --mode=eval on it): "
                            "scaling_factor written as 1.0", workdir)
        info = dict(info, scale_factor=float(stats["scale_factor"]) if stats else 1.0)
    step = components.resolve_step(workdir, step, "export")
    params = components.restore_weights(workdir, step, weights, parallel.create_mesh(), "export")
    files = pretrained.export_run(config, info, params, out)
    logging.info("exported step %d of %s to %s", step, workdir, out)
    return files


def main(argv: list[str]) -> None:
    """absl main: a UserError is one line and exit status 2."""
    del argv
    try:
        for f in export(FLAGS.workdir, FLAGS.out, FLAGS.format, FLAGS.step, FLAGS.weights):
            print(f)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
