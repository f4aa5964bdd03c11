"""CLIP on captioned digits: the `--mode=eval` numbers of a trained run, a zero-shot confusion
matrix on the plain digits test split, and retrieval examples from the captioned test split.

    C=configs/contrastive.py:captioned_digits
    python -m aigc_jax.main --config=$C --workdir=runs/clip_digits
    python -m aigc_jax.main --config=$C --workdir=runs/clip_digits --mode=eval
    python experiments/clip_digits/run.py --workdir=runs/clip_digits

Writes experiments/clip_digits/{results.json, figure.png} from the newest eval/<step>.json and
the run's checkpoint.
"""

import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from aigc_jax import train  # noqa: E402
from aigc_jax.data.words import WordTokenizer  # noqa: E402
from aigc_jax.methods.contrastive.method import clip_config  # noqa: E402
from aigc_jax.methods.contrastive.zero_shot import Encoders  # noqa: E402
from aigc_jax.models.clip import CLIP  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_string("workdir", "runs/clip_digits", "a trained, evaluated captioned_digits run")
flags.DEFINE_integer("num_queries", 6, "test images shown with their top-3 captions")
FLAGS = flags.FLAGS


def main(_):
    with open(os.path.join(FLAGS.workdir, "config.json")) as f:
        config = ml_collections.ConfigDict(json.load(f))
    evals = sorted(glob.glob(os.path.join(FLAGS.workdir, "eval", "*.json")),
                   key=lambda p: int(os.path.basename(p)[:-5]))
    if not evals:
        raise SystemExit(f"no eval/<step>.json in {FLAGS.workdir}: run --mode=eval first")
    with open(evals[-1]) as f:
        results = json.load(f)
    confusion = np.asarray(results.pop("zero_shot_digit_plain_confusion"))
    run, state = train.load_trained(config, FLAGS.workdir)
    tok = WordTokenizer.from_info(run.info["tokenizer"])
    enc = Encoders(CLIP(clip_config(config, run.info)), state.ema_params, tok)
    test = run.test_dataset()
    batch = test.examples(np.arange(int(config.clip.eval_examples)))
    captions = [tok.decode(t) for t in batch["tokens"]]
    sim = enc.images(batch["image"][:FLAGS.num_queries]) @ enc.tokens(batch["tokens"]).T

    fig = plt.figure(figsize=(16, 5.2))
    ax = fig.add_axes([0.03, 0.1, 0.27, 0.8])
    ax.imshow(confusion, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if confusion[i, j]:
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("zero-shot prediction")
    ax.set_ylabel("true digit")
    ax.set_title(f"plain digits test split: {results['zero_shot_digit_plain']:.1%}", fontsize=10)
    for q in range(FLAGS.num_queries):
        col, row = q % 3, q // 3
        a = fig.add_axes([0.33 + col * 0.225, 0.55 - row * 0.45, 0.06, 0.35])
        a.imshow(batch["image"][q])
        a.axis("off")
        top = np.argsort(-sim[q])[:3]
        lines = [("* " if captions[t] == captions[q] else "  ") + captions[t] for t in top]
        fig.text(0.395 + col * 0.225, 0.72 - row * 0.45, "\n".join(lines), fontsize=6.5,
                 va="center", family="monospace")
        fig.text(0.33 + col * 0.225, 0.93 - row * 0.45, "true: " + captions[q], fontsize=6.5)
    fig.suptitle(f"CLIP on captioned digits (step {results['step']}): zero-shot confusion and "
                 "image->text retrieval on held-out templates (* = the image's own caption)",
                 fontsize=10)
    fig.savefig(os.path.join(HERE, "figure.png"), dpi=130)
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump({"workdir": FLAGS.workdir, "jax": jax.__version__, **results}, f, indent=2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    app.run(main)
