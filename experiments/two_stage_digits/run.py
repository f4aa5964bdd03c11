"""Two stages: a digits VAE, then diffusion in its latent space (LDM's recipe in miniature).

Trains (or reuses) `configs/vae.py:digits` and `configs/diffusion.py:digits_latent` with the
VAE as its frozen `autoencoder` component, then compares sample quality of the two ways to
sample the same decoder: the VAE's prior N(0, I), and the latent diffusion model (DDIM-100).
Both are scored by the Fréchet distance in the bundled digits classifier's features (and KID,
classifier score, precision/recall) against the 1,497-image train split.

    python experiments/two_stage_digits/run.py                  # ~5 min on a quiet 2-core CPU
    python experiments/two_stage_digits/run.py --quick          # smoke run, writes nothing here

Writes results.json, results.md and samples.png next to this file.
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from aigc_jax import evaluation, plotting, train  # noqa: E402
from configs import diffusion as diffusion_configs  # noqa: E402
from configs import vae as vae_configs  # noqa: E402


def configs(workdir: str, quick: bool):
    """(stage-1 VAE config, stage-2 latent-diffusion config) for the two workdirs."""
    vae = vae_configs.get_config("tiny" if quick else "digits")
    ldm = diffusion_configs.get_config("tiny_latent" if quick else "digits_latent")
    ldm.components.autoencoder.workdir = os.path.join(workdir, "vae")
    return vae, ldm


def score(sample_fn, num: int, data_cfg) -> dict:
    """FD (digits features) etc. of `num` samples against the digits train split."""
    out = evaluation.sample_quality(sample_fn, num, data_cfg, extractor="digits",
                                    reference_split="train", batch_size=500)
    return {k: v for k, v in out.items() if k != "protocol"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=os.path.join(REPO, "runs", "experiments", "two_stage"))
    p.add_argument("--num_samples", type=int, default=1500)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    num = 100 if args.quick else args.num_samples
    vae_cfg, ldm_cfg = configs(args.workdir, args.quick)
    start = time.time()
    train.train_and_evaluate(vae_cfg, os.path.join(args.workdir, "vae"))  # resumes if done
    train.train_and_evaluate(ldm_cfg, os.path.join(args.workdir, "ldm"))
    vae_run, vae_state = train.load_trained(vae_cfg, os.path.join(args.workdir, "vae"))
    ldm_run, ldm_state = train.load_trained(ldm_cfg, os.path.join(args.workdir, "ldm"))
    key = jax.random.PRNGKey(7)

    def vae_samples(n, i):
        return vae_run.method.sample(vae_state, jax.random.fold_in(key, i), n)

    def ldm_samples(n, i):
        return ldm_run.method.sample(ldm_state, jax.random.fold_in(key, i), n,
                                     frozen=ldm_run.frozen)

    results = {"vae_prior": score(vae_samples, num, vae_cfg.data),
               "latent_diffusion": score(ldm_samples, num, ldm_cfg.data),
               "num_samples": num, "vae_steps": int(vae_state.step),
               "ldm_steps": int(ldm_state.step), "minutes": (time.time() - start) / 60}
    print(json.dumps(results, indent=2))
    if args.quick:
        return
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    rows = ["| sampler (same VAE decoder) | FD (digits features) | KID | classifier score | "
            "precision | recall |", "|---|---|---|---|---|---|"]
    for name, label in (("vae_prior", "VAE prior N(0, I)"),
                        ("latent_diffusion", "latent diffusion, DDIM-100")):
        r = results[name]
        rows.append(f"| {label} | {r['fd_digits']:.2f} | {r['kid']:.3f} | "
                    f"{r['classifier_score']:.2f} | {r['precision']:.2f} | {r['recall']:.2f} |")
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    grid = np.concatenate([np.asarray(vae_samples(40, 999)), np.asarray(ldm_samples(40, 999))])
    plotting.save_image_grid(grid, os.path.join(HERE, "samples.png"), ncols=20)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
