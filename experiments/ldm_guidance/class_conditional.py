"""Can the latent space carry digit identity at all? Digit accuracy of a class-conditional run.

    python experiments/ldm_guidance/class_conditional.py --workdir=runs/ldm_class [--num=200]

For a `configs/ldm.py:captioned_digits` run trained with `--config.diffusion.text=none
--config.model.num_classes=10` (the label is the digit; one digit per image): `--num` samples
with labels 0, 1, 2, ... at each guidance scale, read by the attribute checker's digit
classifier (the only attribute stated), beside the same number for real test images. Prints
the JSON and writes class_conditional_<train.num_steps>.json next to this script.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from aigc_jax import run_config, train  # noqa: E402
from aigc_jax.data import captions as cap  # noqa: E402
from aigc_jax.data import create_dataset  # noqa: E402
from aigc_jax.evaluation.attributes import Checker  # noqa: E402


def digit_records(labels: np.ndarray) -> np.ndarray:
    """Attribute records that state one digit and nothing else."""
    r = np.full((len(labels), cap.RECORD_LEN), -1, np.int32)
    r[:, 0] = 1
    r[:, cap.field_index(0, "digit")] = labels
    return r


def digit_accuracy(checker: Checker, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of images whose one glyph the checker reads as its label."""
    return float(np.mean(checker.check(images, digit_records(labels))["digit"] == 1))


def main() -> None:
    """Sample each scale, check the digits, write class_conditional_<steps>.json."""
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--scales", default="0,1,3")
    args = p.parse_args()
    config = ml_collections.ConfigDict(run_config.load_saved(args.workdir))
    if int(config.model.num_classes) != 10 or config.diffusion.text != "none":
        raise SystemExit(f"{args.workdir} is not a class-conditional run (model.num_classes=10, "
                         "diffusion.text=none).")
    checker = Checker("digits")
    test = create_dataset(config, "test").examples(np.arange(args.num))
    out = {"workdir": args.workdir, "num": args.num,
           "real": digit_accuracy(checker, test["image"], test["label"])}
    labels = np.arange(args.num) % 10
    for w in (float(s) for s in args.scales.split(",")):
        config.sampler.guidance_scale = w
        run, state = train.load_trained(config, args.workdir)
        images = run.method.sample(state, jax.random.PRNGKey(0), args.num,
                                   labels=jnp.asarray(labels), frozen=run.frozen)
        out[f"w{w:g}"] = digit_accuracy(checker, np.asarray(images), labels)
    name = f"class_conditional_{int(config.train.num_steps)}.json"
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
