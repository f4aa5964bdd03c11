"""DALL-E in miniature: the reranking table (full-prompt accuracy at N = 1, 8, 32 candidates
per held-out prompt) and a sample grid with prompts, from a trained prior.

    python experiments/dalle_digits/run.py --prior=runs/dalle --vq=runs/vq_captioned \
        --clip=runs/clip_digits

Runs the prior's `--mode=eval` (bits per image token, the reranking table, FD, CLIP score;
eval/<step>.json in the prior's workdir), times sampling with reranking, and writes
experiments/dalle_digits/{results.json, results.md, samples.png}.
"""

import json
import os
import platform
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from aigc_jax import train  # noqa: E402
from configs import dalle as dalle_configs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_string("prior", "runs/dalle", "a trained configs/dalle.py:captioned_digits run")
flags.DEFINE_string("vq", "runs/vq_captioned", "its VQ component (autoencoder run)")
flags.DEFINE_string("clip", "runs/clip_digits", "its CLIP component (contrastive run)")
flags.DEFINE_integer("num_prompts", 200, "held-out test prompts in the reranking table")
flags.DEFINE_integer("grid_columns", 8, "best candidates shown per prompt (of --candidates)")
flags.DEFINE_integer("candidates", 32, "candidates per grid prompt, reranked by CLIP")
flags.DEFINE_float("guidance_scale", 0.0, "classifier-free guidance w (sampler.guidance_scale)")
flags.DEFINE_bool("heldout_templates", True, "score held-out phrasings only (False: the test "
                  "split captioned with every template, the training phrasings included)")
flags.DEFINE_string("out", HERE, "where results and the grid go")
FLAGS = flags.FLAGS

# Held-out phrasings (templates 5 and 10 never appear in training) and two training ones.
GRID_PROMPTS = ("center: a large red 3", "top left: a small green 7",
                "bottom right: a large blue 0", "right: a small yellow 5",
                "two digits: a large 2 left of a small 8",
                "two digits: a small 4 above a large 1",
                "a large magenta 6 in the center", "a cyan 9")


def config_for(prior: str, vq: str, clip: str):
    """configs/dalle.py:captioned_digits pointed at the three runs."""
    c = dalle_configs.get_config("captioned_digits")
    c.components.autoencoder.workdir = vq
    c.components.text_encoder.workdir = clip
    c.components.image_encoder.workdir = clip
    c.eval.num_prompts = FLAGS.num_prompts
    c.sampler.guidance_scale = FLAGS.guidance_scale
    c.data.hold_out_templates = FLAGS.heldout_templates
    return c


def tokenizer_eval(vq: str) -> dict:
    """The VQ run's newest `--mode=eval` record: PSNR and the attribute checker on its
    reconstructions of test images (the ceiling for what the prior's samples can show)."""
    eval_dir = os.path.join(vq, "eval")
    steps = sorted(int(f[:-5]) for f in os.listdir(eval_dir) if f[:-5].isdigit()) \
        if os.path.isdir(eval_dir) else []
    if not steps:
        return {}
    with open(os.path.join(eval_dir, f"{steps[-1]}.json")) as f:
        record = json.load(f)
    keep = ("psnr", "codebook_usage", "perplexity")
    return {"step": steps[-1], **{k: v for k, v in record.items()
                                  if k in keep or k.startswith("checker_")}}


def labelled_grid(rows: list[np.ndarray], labels: list[str], path: str, scale: int = 3) -> str:
    """uint8 images, one row [K, H, W, 3] per prompt, with the prompt written left of it."""
    h, w = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    pad, text_w = 2, 260
    k = max(len(r) for r in rows)
    canvas = Image.new("RGB", (text_w + k * (w + pad), len(rows) * (h + pad)), (40, 40, 40))
    draw = ImageDraw.Draw(canvas)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        y = i * (h + pad)
        draw.text((4, y + h // 2 - 6), label, fill=(230, 230, 230))
        for j, img in enumerate(row):
            tile = Image.fromarray(img).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (text_w + j * (w + pad), y))
    canvas.save(path)
    return path


def main(_):
    config = config_for(FLAGS.prior, FLAGS.vq, FLAGS.clip)
    t0 = time.perf_counter()
    results = train.evaluate(config, FLAGS.prior)
    eval_s = time.perf_counter() - t0
    run, state = train.load_trained(config_for(FLAGS.prior, FLAGS.vq, FLAGS.clip), FLAGS.prior)
    rng = jax.random.PRNGKey(7)
    run.method.sample(state, rng, FLAGS.candidates, prompt=GRID_PROMPTS[0],
                      frozen=run.frozen)  # compile
    rows, t0 = [], time.perf_counter()
    for i, prompt in enumerate(GRID_PROMPTS):
        images = run.method.sample(state, jax.random.fold_in(rng, i), FLAGS.candidates,
                                   prompt=prompt, frozen=run.frozen)
        rows.append(np.asarray(images)[:FLAGS.grid_columns])
    sample_s = time.perf_counter() - t0
    os.makedirs(FLAGS.out, exist_ok=True)
    labelled_grid(rows, list(GRID_PROMPTS), os.path.join(FLAGS.out, "samples.png"))
    with open(os.path.join(FLAGS.prior, "metrics.jsonl")) as f:
        train_rows = [json.loads(line) for line in f]
    speed = [r for r in train_rows if r.get("split") == "train" and "steps_per_sec" in r]
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, jax {jax.__version__}",
        "load": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "guidance_scale": FLAGS.guidance_scale,
        "heldout_templates_only": FLAGS.heldout_templates,
        "prior_step": int(results.get("step", jax.device_get(state.step))),
        "eval_seconds": round(eval_s, 1),
        "images_per_sec_with_reranking": round(len(GRID_PROMPTS) * FLAGS.candidates / sample_s,
                                               2),
        "train_tokens_per_sec_last_log": (speed[-1].get("tokens_per_sec") if speed else None),
        "tokenizer_eval": tokenizer_eval(FLAGS.vq),
        "grid_prompts": list(GRID_PROMPTS),
        **{k: v for k, v in results.items() if k != "provenance"},
    }
    with open(os.path.join(FLAGS.out, "results.json"), "w") as f:
        json.dump(record, f, indent=2, default=float)
    ns = [int(n) for n in config.eval.rerank_candidates]
    lines = ["| N candidates (best by CLIP) | full prompt | digit | colour | size | position | "
             "relation | CLIP score | FD (CLIP features) |", "|" + "---|" * 9]
    for n in ns:
        cells = [f"{results.get(f'{a}_accuracy_n{n}', float('nan')):.3f}"
                 for a in ("digit", "colour", "size", "position", "relation")]
        lines.append(f"| {n} | {results[f'full_prompt_accuracy_n{n}']:.3f} | "
                     + " | ".join(cells) + f" | {results[f'clip_score_n{n}']:.1f} | "
                     f"{results[f'fd_clip_n{n}']:.3f} |")
    lines += ["", f"Mean over all {ns[-1]} unreranked candidates: full prompt "
              f"{results['mean_candidate_full_prompt_accuracy']:.3f}. Real test images: full "
              f"prompt {results['real_full_prompt_accuracy']:.3f}, CLIP score "
              f"{results['clip_score_real']:.1f}. Prior: {results['image_bits_per_token']:.3f} "
              f"bits per image token (log2 K = {results['log2_codebook_size']:.0f}), "
              f"{results['text_loss']:.3f} nats per text token."]
    tok = record["tokenizer_eval"]
    if tok:
        lines += ["", f"Tokenizer (VQ step {tok['step']}) reconstructions of test images: "
                  f"PSNR {tok['psnr']:.1f} dB, checker digit "
                  f"{tok['checker_digit_accuracy_recon']:.3f} and all attributes "
                  f"{tok['checker_all_accuracy_recon']:.3f} (real images: "
                  f"{tok['checker_all_accuracy_real']:.3f})."]
    with open(os.path.join(FLAGS.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
