"""GAN loss comparison on digits, in the spirit of Lucic et al. (2018), "Are GANs Created Equal?".

    python experiments/gan_losses/run.py                 # 4 losses x 3 seeds, ~25 min on 2 cores
    python experiments/gan_losses/run.py --steps=200 --seeds=0 --losses=hinge   # smoke run

Trains `configs/gan.py:digits` (DCGAN, 8x8) once per (loss, seed) with the same architecture,
optimiser (Adam 2e-4, beta1 0.5), batch, EMA and number of iterations; only the loss changes,
plus what WGAN-GP needs: the gradient penalty (lambda 10) and no BatchNorm in the critic
(d_norm="none": the penalty needs per-example gradients, as in Gulrajani et al.). Each run is
scored by the Fréchet distance in the shipped digits classifier's features (`fd_digits`,
aigc_jax.evaluation.sample_quality: N EMA samples against the digits train split). Writes next
to this file: results.json (every run, with the protocol), results.md (mean and std per loss),
grid_<loss>.png (each loss's best seed, fixed noise), and for the best run overall
best_interpolation.png (slerp between random latents) and best_progress.png (the fixed-noise
grid across training, one row per sample_every).
"""

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from aigc_jax import train  # noqa: E402
from aigc_jax.methods.gan import method as gan  # noqa: E402
from configs import gan as gan_configs  # noqa: E402

LOSSES = ("non_saturating", "hinge", "wgan_gp", "least_squares")


def config_for(loss: str, seed: int, steps: int, num_samples: int):
    """The digits GAN with `loss`; WGAN-GP gets its penalty and a BatchNorm-free critic."""
    c = gan_configs.get_config("digits")
    c.loss, c.seed = loss, seed
    if loss == "wgan_gp":
        c.gp_weight = 10.0
        c.model.d_norm = "none"
    c.train.num_steps = steps
    c.train.log_every = max(steps // 10, 1)
    c.train.eval_every = 0
    c.train.checkpoint_every = steps
    c.train.sample_every = max(steps // 6, 1)
    c.train.tensorboard = False
    c.train.async_checkpoint = False
    c.eval.fid_num_samples = num_samples
    c.num_samples = 64
    return c


def run_one(loss: str, seed: int, args) -> dict:
    """Train one (loss, seed) in its own workdir and score its EMA generator."""
    workdir = os.path.join(args.workdir, f"{loss}_seed{seed}")
    shutil.rmtree(workdir, ignore_errors=True)
    config = config_for(loss, seed, args.steps, args.num_samples)
    t0 = time.perf_counter()
    state = train.train_and_evaluate(config, workdir)
    train_s = time.perf_counter() - t0
    run = train.Run(config, workdir)
    # The same evaluation key for every run: differences come from the generators.
    scores = run.method.evaluate(state, None, jax.random.PRNGKey(1234), args.num_samples)
    run.ckpt.close()
    return {"loss": loss, "seed": seed, "workdir": workdir, "train_seconds": round(train_s, 1),
            "fd_digits": scores["fd_digits"], "kid": scores["kid"],
            "precision": scores["precision"], "recall": scores["recall"],
            "classifier_score": scores["classifier_score"], "protocol": scores["protocol"],
            "config": json.loads(config.to_json_best_effort())}


def table(results: list[dict], steps: int, num_samples: int) -> str:
    """Markdown: Fréchet distance mean and std over seeds for each loss."""
    lines = [f"FD in the digits classifier's features (lower is better), {num_samples} EMA "
             f"samples vs. the digits train split, after {steps} iterations; mean ± std "
             "(sample std, ddof=1) over seeds.", "",
             "| loss | seeds | FD mean | FD std | per seed | precision | recall |",
             "|---|---|---|---|---|---|---|"]
    for loss in LOSSES:
        rows = [r for r in results if r["loss"] == loss]
        if not rows:
            continue
        fd = np.array([r["fd_digits"] for r in rows])
        std = fd.std(ddof=1) if len(fd) > 1 else float("nan")
        per_seed = ", ".join(f"{v:.2f}" for v in fd)
        lines.append(f"| {loss} | {len(rows)} | {fd.mean():.2f} | {std:.2f} | {per_seed} | "
                     f"{np.mean([r['precision'] for r in rows]):.3f} | "
                     f"{np.mean([r['recall'] for r in rows]):.3f} |")
    return "\n".join(lines) + "\n"


def write_results(results: list[dict], args, seconds: float) -> None:
    """results.json (every run) and results.md (the table) in --out_dir."""
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"steps": args.steps, "num_samples": args.num_samples,
                   "total_seconds": round(seconds, 1), "command": " ".join(sys.argv),
                   "runs": results}, f, indent=2, default=float)
    md = table(results, args.steps, args.num_samples)
    md += f"\nTotal wall time: {seconds / 60:.1f} min ({' '.join(sys.argv)}).\n"
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(md)


def main() -> None:
    """Train every (loss, seed), write the table and the figures next to this file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--num_samples", type=int, default=1500)
    p.add_argument("--workdir", default="/tmp/gan_losses_experiment")
    p.add_argument("--out_dir", default=HERE)
    p.add_argument("--figures_only", action="store_true",
                   help="only redraw the figures from --out_dir/results.json and the workdirs")
    args = p.parse_args()
    logging.set_verbosity(logging.WARNING)
    # Seeds of one loss compile the same programs: reuse them across runs.
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    if args.figures_only:
        with open(os.path.join(args.out_dir, "results.json")) as f:
            saved = json.load(f)
        args.steps = saved["steps"]
        write_figures(saved["runs"], args)
        return
    losses = args.losses.split(",")
    for loss in losses:
        if loss not in LOSSES:
            raise SystemExit(f"--losses: {loss!r} is unknown; expected some of {LOSSES}")
    os.makedirs(args.out_dir, exist_ok=True)
    start = time.perf_counter()
    results = []
    # Seed-major, with the files rewritten after every run: a cut-short run still has every loss.
    for seed in (int(s) for s in args.seeds.split(",")):
        for loss in losses:
            r = run_one(loss, seed, args)
            print(f"{loss} seed {seed}: fd_digits={r['fd_digits']:.3f} "
                  f"({r['train_seconds']:.0f}s training)", flush=True)
            results.append(r)
            write_results(results, args, time.perf_counter() - start)
    print(open(os.path.join(args.out_dir, "results.md")).read())
    write_figures(results, args)


def write_figures(results: list[dict], args) -> None:
    """Each loss's best grid; interpolation and progress figures of the best run."""
    for loss in LOSSES:  # each loss's best seed: its final fixed-noise grid
        rows = [r for r in results if r["loss"] == loss]
        if rows:
            best = min(rows, key=lambda r: r["fd_digits"])
            shutil.copy(os.path.join(best["workdir"], "samples", f"step_{args.steps}.png"),
                        os.path.join(args.out_dir, f"grid_{loss}.png"))
    best = min(results, key=lambda r: r["fd_digits"])
    config = config_for(best["loss"], best["seed"], args.steps, args.num_samples)
    run, state = train.load_trained(config, best["workdir"])
    ctx = gan.make_context(config, run.info)
    gan.write_interpolation(ctx, state, jax.random.PRNGKey(0),
                            os.path.join(args.out_dir, "best_interpolation.png"))
    gan.write_progress(best["workdir"], os.path.join(args.out_dir, "best_progress.png"))
    print(f"best run: {best['loss']} seed {best['seed']} (fd_digits {best['fd_digits']:.3f})")


if __name__ == "__main__":
    main()
