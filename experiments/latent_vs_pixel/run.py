"""Latent vs pixel diffusion at equal training compute (Rombach et al., 2022, Sec. 4.1 in
miniature): the same text-conditioned UNet on 8x8x4 autoencoder latents and on 32x32x3 pixels.

    python experiments/latent_vs_pixel/run.py --flops          # train GFLOPs per step of each
    python experiments/latent_vs_pixel/run.py --latent=runs/ldm --pixel=runs/ldm_pixel \
        [--scales=3] [--prompts=100] [--clip=runs/clip]

`--flops` prints each variant's train-step cost from XLA's cost analysis (the latent step
includes encoding the batch with the frozen autoencoder) and the pixel step count that matches
a latent run's training compute. With two trained runs it evaluates both on the same held-out
prompts (the method's text evaluation at --scales), times guided DDIM sampling (images/s,
after compiling), and writes results.json and comparison.png here: per-attribute accuracy
of the two, and the same prompts and seeds drawn by each.
"""

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from aigc_jax import data as data_lib  # noqa: E402
from aigc_jax import parallel, plotting, run_config, train  # noqa: E402
from benchmarks.common import train_step_flops  # noqa: E402

PROMPTS = ("top left: a large red 7", "center: a small blue 3", "bottom right: a large green 0",
           "two digits: a large 2 left of a small 5")
ATTRIBUTES = ("full_prompt", "digit", "colour", "size", "position")


def step_gflops(config: ml_collections.ConfigDict, workdir: str) -> float:
    """GFLOPs of one train step of `config` (XLA cost analysis of the loop's step, with the
    frozen components as arguments), built in a scratch `workdir`."""
    run = train.Run(config, workdir)
    try:
        abstract = run.abstract_state()
        batch = parallel.shard_batch(run.mesh, run.train_ds.train_batch(
            0, int(config.train.batch_size), 0, 1))
        return train_step_flops(run.method, abstract, batch, run.frozen) / 1e9
    finally:
        run.ckpt.close()


def trained_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a trained run saved."""
    saved = run_config.load_saved(workdir)
    if saved is None:
        raise SystemExit(f"{workdir!r} holds no trained run (no config.json)")
    return ml_collections.ConfigDict(saved)


def sampling_rate(run: train.Run, state, per_prompt: int) -> tuple[float, np.ndarray]:
    """(images/s of sampling with the run's config after compiling, the images for PROMPTS)."""
    sample = lambda rng: run.method.sample(  # noqa: E731
        state, rng, per_prompt, frozen=run.frozen, prompts=list(PROMPTS))["images"]
    jax.block_until_ready(sample(jax.random.PRNGKey(0)))  # compile
    t0 = time.perf_counter()
    images = jax.block_until_ready(sample(jax.random.PRNGKey(0)))
    return len(images) / (time.perf_counter() - t0), np.asarray(images)


def main() -> None:
    """--flops: the step costs; else evaluate two trained runs into results.json and a figure."""
    p = argparse.ArgumentParser()
    p.add_argument("--flops", action="store_true", help="print train GFLOPs/step and stop")
    p.add_argument("--latent_steps", type=int, default=3000, help="with --flops")
    p.add_argument("--autoencoder", default="", help="with --flops: a first-stage run (default: "
                   "benchmarks/bench_ldm.py's stand-in at initial weights)")
    p.add_argument("--latent", default="")
    p.add_argument("--pixel", default="")
    p.add_argument("--scales", default="3")
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--clip", default="", help="a CLIP run for FD and CLIP score")
    args = p.parse_args()

    if args.flops:
        from benchmarks.bench_ldm import stand_in_autoencoder
        from configs import ldm

        with tempfile.TemporaryDirectory() as tmp:
            ae = args.autoencoder
            if not ae:
                ae = os.path.join(tmp, "ae")
                stand_in_autoencoder(ae)
            cost = {}
            for name, variant in (("latent", "captioned_digits"),
                                  ("pixel", "captioned_digits_pixel")):
                c = ldm.get_config(variant)
                c.diffusion.text, c.train.tensorboard = "joint", False
                if name == "latent":
                    c.components.autoencoder.workdir = ae
                cost[name] = step_gflops(c, os.path.join(tmp, name))
        ratio = cost["pixel"] / cost["latent"]
        print(json.dumps({"train_gflops_per_step": cost, "pixel_over_latent": round(ratio, 2),
                          "latent_steps": args.latent_steps,
                          "equal_compute_pixel_steps": round(args.latent_steps / ratio)}))
        return

    if not (args.latent and args.pixel):
        raise SystemExit("give --latent and --pixel (trained runs), or --flops")
    scales = tuple(float(w) for w in args.scales.split(","))
    results, grids = {}, {}
    for name, workdir in (("latent", args.latent), ("pixel", args.pixel)):
        config = trained_config(workdir)
        config.eval.guidance_scales = scales
        config.eval.num_prompts = args.prompts
        config.sampler.guidance_scale = max(scales)  # the sampling timing and the grid
        if args.clip:
            config.components.text_encoder.workdir = args.clip
            config.components.image_encoder.workdir = args.clip
        t0 = time.time()
        # The method's text evaluation only: `train.evaluate` would add the pixel run's full
        # 1,000-step VLB over the test split (bits/dim, not this comparison's metric).
        run, state = train.load_trained(config, workdir)
        res = run.method.evaluate(state, data_lib.create_dataset(run.config, "test"),
                                  jax.random.PRNGKey(3), None, run.frozen)
        eval_seconds = time.time() - t0
        step = int(jax.device_get(state.step))
        rate, grids[name] = sampling_rate(run, state, args.seeds)
        with tempfile.TemporaryDirectory() as tmp:
            gflops = step_gflops(trained_config(workdir), tmp)
        results[name] = {
            "workdir": workdir, "step": step, "train_gflops_per_step": round(gflops, 2),
            "train_tflops_total": round(gflops * step / 1e3, 1),
            "sample_images_per_s": round(rate, 2), "eval_seconds": round(eval_seconds, 1),
            "sampler": res["sampling"],
            **{k: v for k, v in res.items() if "accuracy" in k or "fd_" in k or "clip_" in k}}
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2, default=float)

    w = f"w{max(scales):g}"
    fig, ax = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    x = np.arange(len(ATTRIBUTES))
    for i, name in enumerate(("latent", "pixel")):
        r = results[name]
        ax[0].bar(x + 0.4 * i - 0.2, [r[f"{a}_accuracy_{w}"] for a in ATTRIBUTES], 0.4,
                  label=f"{name}: {r['step']} steps, {r['train_tflops_total']} TFLOPs, "
                        f"{r['sample_images_per_s']} img/s")
        ax[1 + i].imshow(plotting.make_grid(grids[name], ncols=args.seeds))
        ax[1 + i].set_title(f"{name} ({r['step']} steps)")
        ax[1 + i].axis("off")
    ax[0].set_xticks(x, ATTRIBUTES)
    ax[0].set(ylabel=f"accuracy, held-out prompts ({w})", ylim=(0, 1))
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "comparison.png"), dpi=120)
    print(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
