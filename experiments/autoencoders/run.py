"""MNIST first stages: a KL-f4 and a VQ-f4 (K = 512) autoencoder, trained, evaluated, drawn.

    python experiments/autoencoders/run.py --data_path=../shared/data/mnist --workdir=runs \
        [--stop_after=N]

For each of `mnist_kl_f4` and `mnist_vq_f4` (configs/autoencoder.py): train in
<workdir>/<variant> (resuming, or nothing to do when the run is complete), `--mode=eval`
(PSNR, SSIM, rFD with the shipped MNIST classifier's features, code usage, latent statistics),
`--mode=sample` figures; then copies the figures here and writes results.json / results.md.
Train and test are the 9,000 / 1,000 split of the IDX test files (the VAE/diffusion MNIST
experiments use the same split). Time the training with /usr/bin/time (README here).
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from aigc_jax import train  # noqa: E402
from configs.autoencoder import get_config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("mnist_kl_f4", "mnist_vq_f4")
KEYS = ("psnr", "ssim", "rfd_mnist", "codebook_usage", "perplexity", "bits_per_dim_prior_free",
        "scale_factor", "latent_std")


def main() -> None:
    """Train/evaluate/draw both variants and write the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", default="/work/shared/data/mnist")
    p.add_argument("--workdir", default="runs")
    p.add_argument("--stop_after", type=int, default=0, help="train.stop_after (0: off)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    args = p.parse_args()
    path = os.path.join(HERE, "results.json")
    results = {}
    if os.path.exists(path):  # one variant at a time keeps the other's row
        with open(path) as f:
            results = json.load(f)
    for variant in args.variants.split(","):
        config = get_config(variant)
        config.data.path = args.data_path
        config.train.stop_after = args.stop_after
        workdir = os.path.join(args.workdir, variant)
        train.train_and_evaluate(config, workdir)
        ev = train.evaluate(config, workdir)
        train.sample(config, workdir, 16)
        for name in ("reconstructions", "latent_traversal", "interpolations"):
            shutil.copy(os.path.join(workdir, "figures", f"{name}.png"),
                        os.path.join(HERE, f"{variant}_{name}.png"))
        step = max(int(f.split(".")[0]) for f in os.listdir(os.path.join(workdir, "eval")))
        results[variant] = {"step": step, **{k: ev[k] for k in KEYS if k in ev},
                            "stop_after": args.stop_after}
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    lines = ["| variant | step | PSNR (dB) | SSIM | rFD (MNIST feats) | code usage | perplexity "
             "| bits/dim (log2 K / code) | scale factor |", "|---|---|---|---|---|---|---|---|---|"]
    for v, r in results.items():
        def fmt(k, spec, r=r):
            return format(r[k], spec) if k in r else "-"
        lines.append(f"| {v} | {r['step']} | {fmt('psnr', '.2f')} | {fmt('ssim', '.4f')} | "
                     f"{fmt('rfd_mnist', '.2f')} | {fmt('codebook_usage', '.3f')} | "
                     f"{fmt('perplexity', '.1f')} | {fmt('bits_per_dim_prior_free', '.4f')} | "
                     f"{fmt('scale_factor', '.3f')} |")
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
