"""DDIM steps x eta (Song et al., 2021, Table 1) on one trained digits DDPM: Frechet distance.

    python experiments/ddim_table/run.py --workdir=/tmp/ddpm_digits --num_samples=1000

Restores the newest checkpoint of a `configs/diffusion.py:digits` run (EMA weights) and, for every
DDIM sub-sequence length S in --steps and every eta in --etas, draws --num_samples samples from
the same x_T noise and reports the Frechet distance in the features of the bundled digits
classifier (`aigc_jax.evaluation.sample_quality`, extractor "digits") against the digits train
split. S = 1000 with eta = 1 is DDPM's ancestral sampler (fixed small variance). Writes
results.json and results.md next to this file, after every cell; a later run on the same
checkpoint and --num_samples keeps those cells and computes only the missing ones.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aigc_jax import data as data_lib  # noqa: E402
from aigc_jax import evaluation, train  # noqa: E402
from aigc_jax.methods.diffusion import method as diffusion  # noqa: E402
from aigc_jax.methods.diffusion import samplers  # noqa: E402
from aigc_jax.models.unet import create_unet  # noqa: E402
from configs import diffusion as ddpm  # noqa: E402


def make_sampler(config, info: dict):
    """A jitted (params, steps, rng, num) -> uint8 images; steps are arguments, not constants.

    Passing the coefficient tables as arrays compiles once per sub-sequence length, not once
    per (length, eta).
    """
    d = diffusion.diffusion_from_config(config)
    h, w, c = info["image_shape"]
    model = create_unet(config.model, c)

    def draw(params, steps: samplers.Steps, rng: jax.Array, num: int) -> jax.Array:
        def model_fn(x, t):
            return model.apply(params, x, t, None)

        k_x, k_z = jax.random.split(rng)
        x_T = jax.random.normal(k_x, (num, h, w, c))
        x0 = samplers.sample_loop(d, model_fn, steps, x_T, k_z, bool(config.sampler.clip_x0))
        return samplers.to_uint8(x0)

    return d, jax.jit(draw, static_argnames="num")


def write_tables(results: dict) -> None:
    """results.json and a steps x eta Markdown table of fd_digits."""
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    etas = results["etas"]
    lines = [f"Frechet distance (digits classifier features, {results['num_samples']} samples "
             f"vs the digits train split; lower is better) of one digits DDPM "
             f"(step {results['checkpoint_step']}) sampled with DDIM.", "",
             "| steps S | " + " | ".join(f"eta = {e:g}" for e in etas) + " |",
             "|---|" + "---|" * len(etas)]
    for s in results["steps"]:
        cells = [results["fd"].get(f"S={s},eta={e:g}") for e in etas]
        lines.append(f"| {s} | " + " | ".join("not run" if v is None else f"{v:.2f}" for v in cells)
                     + " |")
    if results.get("test_fd") is not None:
        lines += ["", f"For scale: the {results['test_count']} real digits test images against "
                  f"the same train split give FD {results['test_fd']:.2f}."]
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main() -> None:
    """Restore the model, sweep (S, eta), write the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/ddpm_digits")
    p.add_argument("--num_samples", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=500)
    p.add_argument("--steps", default="10,20,50,100,1000")
    p.add_argument("--etas", default="0,0.5,1")
    args = p.parse_args()
    steps_list = [int(s) for s in args.steps.split(",")]
    etas = [float(e) for e in args.etas.split(",")]

    config = ddpm.get_config("digits")
    run, state = train.load_trained(config, args.workdir)
    d, draw = make_sampler(config, run.info)
    results = {"workdir": args.workdir, "checkpoint_step": int(state.step),
               "num_samples": args.num_samples, "extractor": "digits",
               "reference_split": "train", "steps": steps_list, "etas": etas, "fd": {},
               "kid": {}, "seconds": {}, "command": " ".join(["python"] + sys.argv)}
    previous = os.path.join(HERE, "results.json")
    if os.path.exists(previous):  # keep the finished cells of a run on the same model and N
        with open(previous) as f:
            old = json.load(f)
        if (old.get("checkpoint_step"), old.get("num_samples")) == (int(state.step),
                                                                    args.num_samples):
            for k in ("fd", "kid", "seconds"):
                results[k] = old.get(k, {})
            results["steps"] = sorted(set(old.get("steps", [])) | set(steps_list))
            results["etas"] = sorted(set(old.get("etas", [])) | set(etas))
    test_images = np.asarray(data_lib.create_dataset(config, "test").images)
    q = evaluation.sample_quality(lambda num, i: test_images[i * num:(i + 1) * num],
                                  len(test_images), config.data, extractor="digits",
                                  reference_split="train", batch_size=len(test_images))
    results["test_fd"], results["test_count"] = float(q["fd_digits"]), len(test_images)
    t_all = time.time()
    for s in steps_list:
        for eta in etas:
            if f"S={s},eta={eta:g}" in results["fd"]:
                continue  # computed by an earlier run on this model and N
            t0 = time.time()
            tables = samplers.make_steps(d, "ddim", s, eta)
            tables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tables)._replace(
                t=jnp.asarray(tables.t, jnp.int32))

            def sample_fn(num: int, i: int, tables=tables) -> np.ndarray:
                # Batch i of every cell starts from the same x_T and noise keys.
                return np.asarray(draw(state.ema_params, tables, jax.random.PRNGKey(i), num))

            q = evaluation.sample_quality(sample_fn, args.num_samples, config.data,
                                          extractor="digits", reference_split="train",
                                          batch_size=args.batch_size)
            key = f"S={s},eta={eta:g}"
            results["fd"][key] = float(q["fd_digits"])
            results["kid"][key] = float(q["kid"])
            results["seconds"][key] = round(time.time() - t0, 1)
            print(key, results["fd"][key], f"{time.time() - t0:.0f}s", flush=True)
            results["total_minutes"] = round((time.time() - t_all) / 60, 1)
            write_tables(results)


if __name__ == "__main__":
    main()
