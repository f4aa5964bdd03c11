"""VAE figures and NLL table: Kingma & Welling (2014) Fig. 4 and Burda et al. (2016) Table 1.

    python experiments/vae_kingma_burda/run.py --mnist_dir=../shared/data/mnist [--quick]

Trains, on sklearn's digits and (if --mnist_dir is given) the MNIST test-set images split
90/10, a VAE with the ELBO and with the IWAE (k = 5) objective, then reports the test negative
ELBO and the importance-sampled NLL (k = 5,000) of each, and draws the 2-D latent manifold and
reconstructions. Writes results.json, results.md and PNG figures next to this file.
"""

import argparse
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from absl import logging  # noqa: E402

from aigc_jax import train  # noqa: E402
from configs import vae  # noqa: E402


def digits_config(objective: str, latent_dim: int, steps: int):
    """The digits VAE with `objective` ("elbo" or "iwae" with k = 5)."""
    c = vae.get_config("digits")
    c.vae.objective = objective
    c.model.latent_dim = latent_dim
    c.train.num_steps = steps
    c.train.sample_every = 0
    c.train.tensorboard = False
    return c


def mnist_config(mnist_dir: str, objective: str, latent_dim: int, steps: int):
    """Burda et al.'s one-layer model on the 10,000 MNIST test images, split 9,000 / 1,000."""
    c = vae.get_config("mnist")
    c.data.name, c.data.path = "idx", mnist_dir
    c.data.source_split, c.data.holdout_fraction = "test", 0.1
    c.vae.objective = objective
    c.model.latent_dim = latent_dim
    # Burda et al.'s 3,280-epoch staircase is far beyond this CPU; a cosine schedule instead.
    c.optimizer.schedule, c.optimizer.learning_rate, c.optimizer.min_lr = "cosine", 1e-3, 1e-5
    c.optimizer.warmup_steps = 200
    c.train.batch_size, c.train.num_steps = 100, steps
    c.train.log_every, c.train.eval_every = 500, steps
    c.train.checkpoint_every, c.train.sample_every = steps, 0
    c.train.ema_decay = 0.999
    c.train.tensorboard = False
    c.eval.batch_size, c.eval.final_batch_size = 100, 50
    return c


def run(name: str, config, out: dict, workdir_root: str) -> None:
    """Train, evaluate (NLL k=5000) and sample one config; record its numbers in `out`."""
    workdir = os.path.join(workdir_root, name)
    shutil.rmtree(workdir, ignore_errors=True)
    t0 = time.time()
    train.train_and_evaluate(config, workdir)
    results = train.evaluate(config, workdir)
    train.sample(config, workdir, 64)
    k = int(config.eval.nll_samples)
    out[name] = {"objective": config.vae.objective, "latent_dim": int(config.model.latent_dim),
                 "steps": int(config.train.num_steps), "neg_elbo": results["neg_elbo"],
                 f"nll_k{k}": results[f"nll_iwae_k{k}"], "minutes": (time.time() - t0) / 60}
    for fig in ("manifold", "reconstructions"):
        src = os.path.join(workdir, "figures", f"{fig}.png")
        if os.path.exists(src):
            shutil.copy(src, os.path.join(HERE, f"{name}_{fig}.png"))


def main() -> None:
    """Run the grid, then write results.json and results.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist_dir", default="", help="folder with t10k-*-ubyte.gz (optional)")
    p.add_argument("--workdir", default="runs/experiments/vae_kingma_burda")
    p.add_argument("--quick", action="store_true", help="few steps: a smoke test, not results")
    args = p.parse_args()
    logging.set_verbosity(logging.WARNING)
    digits_steps, mnist_steps = (300, 300) if args.quick else (6000, 10000)
    out: dict = {}
    for objective in ("elbo", "iwae"):
        run(f"digits_{objective}", digits_config(objective, 8, digits_steps), out, args.workdir)
        if args.mnist_dir:
            run(f"mnist_{objective}", mnist_config(args.mnist_dir, objective, 50, mnist_steps),
                out, args.workdir)
    run("digits_2d", digits_config("elbo", 2, digits_steps), out, args.workdir)
    if args.mnist_dir:
        run("mnist_2d", mnist_config(args.mnist_dir, "elbo", 2, mnist_steps), out, args.workdir)
    if args.quick:
        return
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    lines = ["| run | objective | latent | steps | test -ELBO (nats) | test NLL, k=5000 (nats) "
             "| minutes |", "|---|---|---|---|---|---|---|"]
    for name, r in out.items():
        lines.append(f"| {name} | {r['objective']} | {r['latent_dim']} | {r['steps']} | "
                     f"{r['neg_elbo']:.2f} | {r['nll_k5000']:.2f} | {r['minutes']:.1f} |")
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
