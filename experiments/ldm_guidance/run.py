"""The guidance-scale trade-off (Ho & Salimans, 2021, Fig. 4 in miniature) and a prompt grid.

    python experiments/ldm_guidance/run.py --workdir=runs/ldm [--scales=0,1,3] [--prompts=64] \
        [--clip=runs/clip] [--out=experiments/ldm_guidance] [--all_templates]

For a trained `configs/ldm.py:captioned_digits` run (its components are read from its own
config.json): `train.evaluate` with `eval.guidance_scales` = --scales on the first --prompts
held-out test prompts writes the run's `eval/<step>.json`; this script copies the numbers to
results.json here, plots full-prompt / digit accuracy and FD (CLIP features) against the scale
(guidance.png), and draws grid.png: rows are held-out-template prompts, columns seeds, at the
best scale by full-prompt accuracy. `--clip` names a CLIP run for FD and CLIP score when the
LDM run has none as components (a jointly trained text encoder); `--out` another folder for
the outputs; `--all_templates` draws the test prompts from every template (the training ones
too), to tell a model that has not learned an attribute from one that does not generalise it.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from aigc_jax import plotting, run_config, train  # noqa: E402

GRID_PROMPTS = ("top left: a large red 7", "center: a small blue 3",
                "bottom right: a large green 0", "top: a large yellow 4",
                "two digits: a large 2 left of a small 5", "two digits: a small 8 above a small 1")


def main() -> None:
    """Evaluate at each scale, then write results.json, guidance.png and grid.png here."""
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--scales", default="0,1,3")
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--clip", default="", help="a CLIP run for FD and CLIP score")
    p.add_argument("--out", default=HERE, help="folder for results.json and the figures")
    p.add_argument("--all_templates", action="store_true", help="test prompts from all 11 "
                   "templates, not only the held-out ones (template generalisation vs learning)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    scales = tuple(float(w) for w in args.scales.split(","))
    saved = run_config.load_saved(args.workdir)
    config = ml_collections.ConfigDict(saved)
    config.eval.guidance_scales = scales
    config.eval.num_prompts = args.prompts
    config.data.hold_out_templates = not args.all_templates
    if args.clip:
        config.components.text_encoder.workdir = args.clip
        config.components.image_encoder.workdir = args.clip
    t0 = time.time()
    res = train.evaluate(config, args.workdir)
    keep = {k: v for k, v in res.items() if k != "prompts"}
    keep["eval_seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(keep, f, indent=2, default=float)

    key = [f"w{w:g}" for w in scales]
    has_fd = f"fd_clip_{key[0]}" in res  # FD needs a CLIP run (components or --clip)
    fig, ax = plt.subplots(1, 2 if has_fd else 1, figsize=(9 if has_fd else 5, 3.5),
                           squeeze=False)
    ax = ax[0]
    for name in ("full_prompt", "digit", "colour", "size", "position"):
        ax[0].plot(scales, [res[f"{name}_accuracy_{k}"] for k in key], "o-", label=name)
    ax[0].set(xlabel="guidance scale w", ylabel="accuracy (held-out prompts)", ylim=(0, 1))
    ax[0].legend()
    if has_fd:
        ax[1].plot(scales, [res[f"fd_clip_{k}"] for k in key], "o-")
        ax[1].set(xlabel="guidance scale w", ylabel="FD (CLIP image features)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "guidance.png"), dpi=120)

    best = scales[int(np.argmax([res[f"full_prompt_accuracy_{k}"] for k in key]))]
    config.sampler.guidance_scale = best
    run, state = train.load_trained(config, args.workdir)
    out = run.method.sample(state, jax.random.PRNGKey(0), args.seeds, frozen=run.frozen,
                            prompts=list(GRID_PROMPTS))
    plotting.save_image_grid(np.asarray(out["images"]), os.path.join(args.out, "grid.png"),
                             ncols=args.seeds)
    with open(os.path.join(args.out, "grid.txt"), "w") as f:
        f.write(f"guidance scale {best:g}; rows:\n" + "\n".join(GRID_PROMPTS) + "\n")
    print(json.dumps({k: v for k, v in keep.items() if "accuracy" in k or "fd" in k}, indent=1))


if __name__ == "__main__":
    main()
