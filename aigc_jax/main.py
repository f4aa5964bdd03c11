"""Command-line entry point: `python -m aigc_jax.main --config=configs/vae.py:digits --workdir=DIR`.

Flags: --mode=train|eval|sample|import, --num_samples=N, --prompt=TEXT (GPT, DALL-E, text
diffusion), --prompts_file=PATH (text diffusion: one prompt a line), --output=NAME (sample);
anything else is a `--config.<key>=<value>` override. Eval and sample take the model from the
run's config.json; import writes `config.init_from.hf`'s weights as step 0 of a new workdir. A
UserError prints as one line and exits with status 2; a run stopped by SIGTERM or SIGINT, with
its checkpoint saved, exits with status 75.
"""

import os
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from aigc_jax import config_validation, parallel, run_config, train
from aigc_jax import logging as metric_logging
from aigc_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file and variant: configs/vae.py:digits.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "import"],
                  "What to do (import: write config.init_from.hf's weights as step 0 of a new "
                  "workdir).")
flags.DEFINE_integer("num_samples", None, "Samples to draw (sample mode) or to evaluate on.")
flags.DEFINE_string("prompt", None, "Prompt text for sampling (GPT, DALL-E, text diffusion).")
flags.DEFINE_string("prompts_file", None, "Sample mode, text diffusion: a file of prompts, one "
                    "a line (--num_samples images each).")
flags.DEFINE_string("output", None, "Sample mode: name of the output files in the workdir "
                    "(NAME.png/.npz/.txt); default samples, samples_1, ... (never overwritten).")


def _loaded_config():
    """FLAGS.config, or a one-line error when --config is missing or its file cannot be loaded
    (ml_collections defers that error to the first access, as a multi-line traceback)."""
    if FLAGS["config"].present == 0 and FLAGS["config"].value is None:
        raise UserError("--config is required, e.g. --config=configs/vae.py:digits "
                        "(a file in configs/ and a variant).")
    path = config_flags.get_config_filename(FLAGS["config"]).partition(":")[0]
    if not os.path.isfile(path):
        raise UserError(f"--config file {path!r} does not exist; pass one of configs/*.py "
                        "(relative to the current directory) with a variant after ':'.")
    try:
        config = FLAGS.config
        config.get("method")  # forces the deferred load
    except OSError as e:
        raise UserError(_one_line(e)) from None
    return config


def check_workdir(workdir: str, mode: str) -> None:
    """Train needs a writable workdir (created here); eval and sample need an existing one and
    must not create it."""
    if mode != "train":
        if not os.path.isdir(workdir):
            raise UserError(f"--workdir={workdir!r} does not exist; --mode={mode} needs the "
                            "workdir of a trained run.")
        return
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(f"--workdir={workdir!r} cannot be created ({e.strerror}); choose a "
                        "directory you can write to.") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"--workdir={workdir!r} is not writable; choose a directory you can "
                        "write to.")


def run(argv: list[str]) -> None:
    """Dispatch on --mode after validating the config."""
    if len(argv) > 1:
        raise UserError(f"unexpected positional arguments {argv[1:]}; flags look like --key=value.")
    config = _loaded_config()
    if FLAGS.workdir is None:
        raise UserError("--workdir is required.")
    metric_logging.quiet_libraries()
    parallel.maybe_initialize_distributed()  # before anything touches the XLA backend
    if FLAGS.mode in ("train", "import"):  # validated first: a bad config creates no workdir
        config_validation.validate(config)
        check_workdir(FLAGS.workdir, "train")
    elif str(config.init_from.get("hf", "")) and not os.path.exists(
            os.path.join(FLAGS.workdir, "config.json")):  # straight from imported weights
        config_validation.validate(config)
    else:  # the trained run's config.json defines the model
        check_workdir(FLAGS.workdir, FLAGS.mode)
        config = run_config.for_trained_run(
            config, FLAGS.workdir, config_flags.get_override_values(FLAGS["config"]), FLAGS.mode)
        config_validation.validate(config)
    logging.info("JAX %s on %d %s device(s), process %d of %d", jax.__version__,
                 jax.device_count(), jax.default_backend(), jax.process_index(),
                 jax.process_count())
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, FLAGS.workdir)
    elif FLAGS.mode == "import":
        train.import_pretrained(config, FLAGS.workdir)
    elif FLAGS.mode == "eval":
        train.evaluate(config, FLAGS.workdir, FLAGS.num_samples)
    else:
        num = FLAGS.num_samples if FLAGS.num_samples is not None else int(config.num_samples)
        kwargs = {} if FLAGS.prompt is None else {"prompt": FLAGS.prompt}
        if FLAGS.prompts_file is not None:
            kwargs["prompts"] = read_prompts(FLAGS.prompts_file)
        train.sample(config, FLAGS.workdir, num, output=FLAGS.output, **kwargs)


def read_prompts(path: str) -> list[str]:
    """The non-empty lines of a prompts file, or a one-line error naming it."""
    try:
        with open(path) as f:
            prompts = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise UserError(f"--prompts_file={path!r} cannot be read ({e.strerror}).") from None
    if not prompts:
        raise UserError(f"--prompts_file={path!r} holds no prompts (one per line).")
    return prompts


def main(argv: list[str]) -> None:
    """absl main: a UserError is one line and exit status 2; a run stopped by SIGTERM/SIGINT
    with its checkpoint saved exits with train.PREEMPTED_EXIT_CODE (75); Ctrl-C in eval or
    sample exits 130 with one line."""
    try:
        run(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except train.Preempted as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(train.PREEMPTED_EXIT_CODE)
    except KeyboardInterrupt:
        print(f"interrupted: --mode={FLAGS.mode} stopped by Ctrl-C; nothing was written.",
              file=sys.stderr)
        sys.exit(130)


def _one_line(error: Exception) -> str:
    """The sentence that matters from a flag-parsing error, without any embedded traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if any(line.startswith("Traceback") for line in lines):
        # config_flags embeds the config file's traceback; its last line is the real message.
        last = lines[-1]
        head, sep, tail = last.partition(": ")
        return tail if sep and head.isidentifier() else last
    return lines[0]


def _flags_parser(argv: list[str]) -> list[str]:
    # Config-file problems (unknown variant, unknown key, wrong type) surface while flags are
    # parsed; report them in one line instead of absl's traceback.
    try:
        return FLAGS(argv)
    except (KeyError, AttributeError) as e:
        # ml_collections raises these with only the missing name for an unknown override key.
        found = re.search(r"'([^'\\]+)", str(e))
        name = found.group(1) if found else str(e)
        flag = next((a.split("=")[0] for a in argv[1:]
                     if a.startswith("--config.") and name in a.split("=")[0]), name)
        print(f"error: {flag.lstrip('-')} is not a key of the config; check its spelling "
              "against the config file.", file=sys.stderr)
        sys.exit(2)
    except (flags.Error, ValueError, TypeError, OSError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=_flags_parser)
