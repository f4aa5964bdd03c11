"""nanoGPT's CPU Shakespeare recipe in aigc_jax: validation-loss curve, full-split loss, samples.

    python experiments/gpt_shakespeare/run.py --data_path=/path/to/tinyshakespeare/input.txt

Trains `configs/lm.py:shakespeare_char_cpu` (4 layers, 4 heads, 128 dims, block 64, batch 12,
2,000 iterations; eval every 250 iterations on 20 fixed validation batches, nanoGPT's
`--eval_iters=20`) on the file, evaluates the whole validation split (`--mode=eval`), samples
from `--prompt`, draws nanoGPT's own estimator (20 random batches of 12) ten times for the final
model, and writes next to this file: val_loss.png (curve against nanoGPT's published figure),
samples.txt and results.json. With --workdir holding a finished run it only re-reads it.
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
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from aigc_jax import train  # noqa: E402
from aigc_jax.data.text import create_text_dataset  # noqa: E402
from aigc_jax.logging import read_metrics  # noqa: E402
from configs import lm as gpt  # noqa: E402

# nanoGPT README, CPU recipe (4 x 128, block 64, batch 12, 2,000 iterations, eval_iters=20):
# "This still runs in about ~3 minutes, but gets us a loss of only 1.88".
NANOGPT_LOSS = 1.88


def config_for(data_path: str):
    """The shakespeare_char_cpu variant on the local text file."""
    c = gpt.get_config("shakespeare_char_cpu")
    c.data.path = data_path
    c.train.tensorboard = False
    return c


def periodic_evals(metrics: list[dict]) -> list[dict]:
    """The training loop's eval rows (20 batches): the first eval row of each step (a later
    one at the same step is `--mode=eval` on the whole split)."""
    first: dict[int, dict] = {}
    for r in metrics:
        if r["split"] == "eval":
            first.setdefault(r["step"], r)
    return [first[s] for s in sorted(first)]


def plot(metrics: list[dict], path: str) -> None:
    """Validation (and train) loss against iterations, with nanoGPT's published number."""
    train_rows = [r for r in metrics if r["split"] == "train"]
    eval_rows = periodic_evals(metrics)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], color="0.6",
            label="train loss (mean of the last 100 iterations)")
    ax.plot([r["step"] for r in eval_rows], [r["loss"] for r in eval_rows], "o-", color="C0",
            label="val loss, 20 fixed batches of 12 x 64 (aigc_jax)")
    ax.axhline(NANOGPT_LOSS, color="C3", ls="--",
               label=f"nanoGPT README, same recipe: loss {NANOGPT_LOSS} at 2,000 it.")
    ax.set(xlabel="iteration", ylabel="cross-entropy (nats / character)", ylim=(1.3, 3.5),
           title="tiny Shakespeare, char-level, nanoGPT CPU recipe")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def nanogpt_estimates(config, workdir: str, draws: int = 10) -> list[float]:
    """nanoGPT's `estimate_loss` on the validation split, `draws` times for the trained run:
    each is the mean loss of `eval.num_batches` (20) batches of 12 random windows."""
    run, state = train.load_trained(config, workdir)
    val = create_text_dataset(config, "test")
    block, b = int(config.model.block_size), int(config.eval.batch_size)
    eval_step = jax.jit(run.method.eval_step)
    rng = np.random.default_rng(int(config.seed))
    out = []
    for _ in range(draws):
        losses = []
        for _ in range(int(config.eval.num_batches)):
            batch = {"tokens": val.windows(rng.integers(0, val.num_tokens - block, size=b))}
            losses.append(float(np.mean(eval_step(state, batch, jax.random.PRNGKey(0))["loss"])))
        out.append(round(float(np.mean(losses)), 4))
    return out


def main() -> None:
    """Train (unless done), evaluate, sample and plot; write the outputs next to this file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", required=True, help="tiny Shakespeare input.txt")
    p.add_argument("--workdir", default="/tmp/gpt_shakespeare_experiment")
    p.add_argument("--out_dir", default=HERE)
    p.add_argument("--prompt", default="ROMEO:\n")
    p.add_argument("--num_samples", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete --workdir first")
    args = p.parse_args()
    logging.set_verbosity(logging.INFO)

    config = config_for(args.data_path)
    config.seed = args.seed
    if args.fresh:
        shutil.rmtree(args.workdir, ignore_errors=True)
    before = read_metrics(args.workdir) if os.path.exists(args.workdir) else []
    already = max([r["step"] for r in before if r["split"] == "train"], default=0)
    t0 = time.perf_counter()
    state = train.train_and_evaluate(config, args.workdir)
    train_s = time.perf_counter() - t0
    full = train.evaluate(config, args.workdir)
    files = train.sample(config, args.workdir, args.num_samples, prompt=args.prompt)
    os.makedirs(args.out_dir, exist_ok=True)
    shutil.copyfile(files[0], os.path.join(args.out_dir, "samples.txt"))

    metrics = read_metrics(args.workdir)
    plot(metrics, os.path.join(args.out_dir, "val_loss.png"))
    results = {
        "config": "configs/lm.py:shakespeare_char_cpu", "data_path": args.data_path,
        "seed": int(config.seed), "steps": int(state.step),
        "val_loss_20_batches": {str(r["step"]): round(r["loss"], 4)
                                for r in periodic_evals(metrics)},
        "val_loss_full_split": round(float(full["loss"]), 4),
        # Ten draws of nanoGPT's estimator (20 random batches of 12) for the same final model.
        "nanogpt_estimator_20x12": nanogpt_estimates(config, args.workdir),
        "nanogpt_readme_loss": NANOGPT_LOSS,
        # Training wall time of this call: null when --workdir already held the finished run.
        "train_wall_s": round(train_s, 1) if already < int(state.step) else None,
        "prompt": args.prompt,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
