"""DDPM progressive generation (Ho et al., 2020, Fig. 6 / 14): x_T -> x_0 along the chain.

    python experiments/ddpm_progressive/run.py --workdir=/tmp/ddpm_digits

Uses the newest checkpoint in `--workdir` (a digits run of `configs/diffusion.py:digits`; trained
here first with `--train` if the workdir is empty). Samples with the full 1000-step ancestral
(DDPM, fixed small variance) chain from the EMA weights and writes, next to this file:
  digits_progressive.png  each row one sample: x_t at evenly spaced t from T-1 to 0
  digits_x0_progressive.png  the same rows, showing the predicted x_0 at each t instead
  digits_samples.png      a grid of 100 samples (same sampler)
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from aigc_jax import plotting, train  # noqa: E402
from benchmarks.common import apply_overrides  # noqa: E402
from configs import diffusion as ddpm  # noqa: E402


def chain_figure(traj: np.ndarray, num_cols: int) -> np.ndarray:
    """traj uint8 [S, N, H, W, C] (t from T-1 down to 0) -> [N * num_cols, H, W, C], rows = samples.

    Columns are evenly spaced along the chain and always include the first step and x_0.
    """
    s = traj.shape[0]
    cols = np.unique(np.round(np.linspace(0, s - 1, num_cols)).astype(int))
    return np.transpose(traj[cols], (1, 0, 2, 3, 4)).reshape(-1, *traj.shape[2:]), len(cols)


def main() -> None:
    """Restore (or train) the digits model, sample with a trajectory, write the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/ddpm_digits")
    p.add_argument("--variant", default="digits")
    p.add_argument("--train", action="store_true", help="train the variant first if needed")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--cols", type=int, default=11)
    p.add_argument("--num_grid", type=int, default=100)
    p.add_argument("--prefix", default="digits")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, as --config.KEY=VALUE on the CLI (repeatable); must "
                        "match the overrides the run in --workdir was trained with")
    args = p.parse_args()

    config = ddpm.get_config(args.variant)
    apply_overrides(config, args.set)
    config.sampler.name, config.sampler.num_steps, config.sampler.eta = "ddpm", 0, 0.0
    t0 = time.time()
    if args.train:
        train.train_and_evaluate(config, args.workdir)
    run, state = train.load_trained(config, args.workdir)
    key = jax.random.PRNGKey(0)
    images, traj = run.method.sample(state, key, args.rows, return_trajectory=True)
    traj = {k: np.asarray(v) for k, v in traj.items()}
    for name, stem in (("x_t", "progressive"), ("x0", "x0_progressive")):
        tiles, ncols = chain_figure(traj[name], args.cols)
        path = os.path.join(HERE, f"{args.prefix}_{stem}.png")
        plotting.save_image_grid(tiles, path, ncols=ncols)
        print("wrote", path)
    grid = np.asarray(run.method.sample(state, jax.random.PRNGKey(1), args.num_grid))
    path = os.path.join(HERE, f"{args.prefix}_samples.png")
    plotting.save_image_grid(grid, path, ncols=10)
    print("wrote", path, f"({time.time() - t0:.0f} s, step {int(state.step)})")


if __name__ == "__main__":
    main()
