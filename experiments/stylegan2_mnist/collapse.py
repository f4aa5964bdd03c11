"""How fast the mnist32 GANs lose sample diversity, per setting (the mode-collapse study of
this experiment's README).

    python experiments/stylegan2_mnist/collapse.py --workdir=runs/sg2_collapse \
        --data=../shared/data/mnist --steps=300 [--only=base,no_noise]

Each setting is one short CLI run (`train.num_steps=--steps`, a sample grid every 50 steps,
no periodic eval); diversity is the per-pixel standard deviation across the 64 images of the
fixed-latent grid, averaged over pixels, in [-1, 1] units. 64 real test digits give ~0.27; a
collapsed generator (every latent the same digit) stays below ~0.2. Prints one Markdown row
per setting: its diversity at each sample step.
"""

import argparse
import glob
import os
import re
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SG2, DCGAN = "configs/stylegan2.py:mnist32", "configs/gan.py:mnist32"
SETTINGS = {
    "base": (SG2, []),
    "lr 1e-3": (SG2, ["optimizer.learning_rate=0.001"]),
    "lr 5e-4": (SG2, ["optimizer.learning_rate=0.0005"]),
    "no noise, lr 1e-3": (SG2, ["model.use_noise=False", "optimizer.learning_rate=0.001"]),
    "gamma 10": (SG2, ["stylegan.r1_gamma=10"]),
    "no path length": (SG2, ["stylegan.pl_weight=0"]),
    "no noise": (SG2, ["model.use_noise=False"]),
    "mbstd group 32": (SG2, ["model.mbstd_group_size=32"]),
    "mbstd 8 features": (SG2, ["model.mbstd_num_features=8"]),
    "mbstd 8 features, batch 64": (SG2, ["model.mbstd_num_features=8", "train.batch_size=64"]),
    "2x widths": (SG2, ["model.channel_base=1024", "model.channel_max=128"]),
    "ADA cifar-like": (SG2, ["model.mbstd_group_size=32", "model.mapping_layers=2",
                             "stylegan.style_mixing_prob=0", "stylegan.pl_weight=0",
                             "stylegan.r1_gamma=0.01"]),
    "DCGAN, no BN in D": (DCGAN, ["model.d_norm=none"]),
}


def diversity(npz: str) -> float:
    """Mean over pixels of the std across a sample grid's images, images in [-1, 1]."""
    x = np.load(npz)["images"].astype(np.float32) / 127.5 - 1.0
    return float(x.std(axis=0).mean())


def main() -> None:
    """Run the chosen settings and print their diversity over training."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--data", required=True, help="folder of the MNIST IDX files")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"error: unknown settings {unknown}; known: {list(SETTINGS)}")
    print("| setting | overrides | diversity at steps 50, 100, ... |\n|---|---|---|")
    for name in names:
        config, sets = SETTINGS[name]
        wd = os.path.join(args.workdir, re.sub(r"[^a-z0-9]+", "_", name.lower()))
        cmd = [sys.executable, "-m", "aigc_jax.main", f"--config={config}", f"--workdir={wd}",
               f"--config.data.path={args.data}", f"--config.train.num_steps={args.steps}",
               "--config.train.eval_every=0", "--config.train.sample_every=50",
               "--config.train.checkpoint_every=1000000", *[f"--config.{kv}" for kv in sets]]
        if not os.path.exists(os.path.join(wd, "samples")):
            with open(wd + ".log", "w") as log:
                subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
        grids = sorted(glob.glob(os.path.join(wd, "samples", "step_*.npz")),
                       key=lambda f: int(re.findall(r"(\d+)\.npz$", f)[0]))
        values = ", ".join(f"{diversity(g):.3f}" for g in grids)
        print(f"| {name} | {' '.join(sets) or '-'} | {values} |", flush=True)


if __name__ == "__main__":
    main()
