"""Trains the digit classifier used as an offline feature extractor and writes its weights.

    python -m aigc_jax.evaluation.train_classifier --dataset=digits \
        --out=aigc_jax/evaluation/weights/digits_classifier.msgpack
    python -m aigc_jax.evaluation.train_classifier --dataset=idx \
        --data_path=/work/shared/data/mnist \
        --out=aigc_jax/evaluation/weights/mnist_classifier.msgpack

Writes OUT (flax msgpack, {"params": ...}) and OUT with .json: architecture, measured test
accuracy, data protocol and the exact command.
"""

from __future__ import annotations

import json
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags

from aigc_jax.data.images import create_image_dataset
from aigc_jax.errors import UserError
from aigc_jax.evaluation import weights_io
from aigc_jax.evaluation.classifier import Classifier, model_from_info, preprocess

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags; defined only when run as a script so importers get no flags."""
    flags.DEFINE_enum("dataset", "digits", ["digits", "idx"], "digits (8x8) or idx (MNIST files).")
    flags.DEFINE_string("data_path", "", "Folder of IDX files for --dataset=idx.")
    flags.DEFINE_string("source_split", "test", "IDX split to carve train/test from (idx only).")
    flags.DEFINE_float("holdout_fraction", 0.1, "Held-out test fraction of --source_split (idx).")
    flags.DEFINE_string("out", None, "Output .msgpack path; the .json goes beside it.")
    flags.DEFINE_integer("steps", 3000, "Training steps.")
    flags.DEFINE_integer("batch_size", 128, "Batch size.")
    flags.DEFINE_float("learning_rate", 2e-3, "Peak Adam learning rate (cosine decay).")
    flags.DEFINE_integer("max_shift", 1, "Random translation augmentation, in input pixels.")
    flags.DEFINE_integer("seed", 0, "Seed for initialisation, batches and augmentation.")


def data_config(dataset: str, data_path: str, source_split: str,
                holdout_fraction: float) -> ml_collections.ConfigDict:
    """The `config.data` the classifier trains and tests on."""
    if dataset == "digits":
        return ml_collections.ConfigDict({"name": "digits"})
    if not data_path:
        raise UserError("--dataset=idx needs --data_path=FOLDER of MNIST-format IDX files.")
    return ml_collections.ConfigDict({"name": "idx", "path": data_path,
                                      "holdout_fraction": holdout_fraction,
                                      "source_split": source_split})


def _shift(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Random integer translations with zero fill (the background is black)."""
    if max_shift == 0:
        return images
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def accuracy(model: Classifier, variables: dict, images: np.ndarray, labels: np.ndarray,
             input_size: int) -> float:
    """Top-1 accuracy of `model` on uint8 images."""
    fn = jax.jit(lambda v, x: model.apply(v, preprocess(x, input_size))[1].argmax(-1))
    preds = np.concatenate([np.asarray(fn(variables, images[s:s + 512]))
                            for s in range(0, len(images), 512)])
    return float((preds == labels).mean())


def train(cfg: ml_collections.ConfigDict, steps: int, batch_size: int, learning_rate: float,
          max_shift: int, seed: int) -> tuple[dict, dict]:
    """Trains on the train split; returns (variables, info with the test accuracy)."""
    train_ds = create_image_dataset(cfg, "train", seed)
    test_ds = create_image_dataset(cfg, "test", seed)
    input_size = train_ds.image_shape[0]
    info = {"model": {"widths": [32, 64, 128], "feature_dim": 128,
                      "num_classes": int(train_ds.num_classes), "input_size": input_size}}
    model = model_from_info(info)
    params = model.init(jax.random.key(seed), jnp.zeros((1, input_size, input_size, 1)))["params"]
    tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def step_fn(params, opt_state, images, labels, key):
        def loss_fn(p):
            _, logits = model.apply({"params": p}, preprocess(images, input_size), train=True,
                                    rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    start = time.time()
    for step in range(steps):
        batch = train_ds.train_batch(step, batch_size)
        images = _shift(batch["image"], rng, max_shift)
        params, opt_state, loss = step_fn(params, opt_state, images, batch["label"],
                                          jax.random.fold_in(jax.random.key(seed), step))
        if step % 500 == 0 or step == steps - 1:
            print(f"step {step} loss {float(loss):.4f} ({time.time() - start:.0f}s)", flush=True)
    variables = {"params": jax.tree.map(np.asarray, params)}
    info.update(
        test_accuracy=accuracy(model, variables, test_ds.images, test_ds.labels, input_size),
        train_accuracy=accuracy(model, variables, train_ds.images, train_ds.labels, input_size),
        num_train=int(train_ds.num_examples), num_test=int(test_ds.num_examples),
        data=cfg.to_dict(), steps=steps, batch_size=batch_size, learning_rate=learning_rate,
        max_shift=max_shift, seed=seed, train_seconds=round(time.time() - start, 1),
        num_params=int(sum(x.size for x in jax.tree.leaves(params))))
    return variables, info


def main(argv: list[str]) -> None:
    del argv
    try:
        if not FLAGS.out or not FLAGS.out.endswith(".msgpack"):
            raise UserError(f"--out={FLAGS.out!r} must be a path ending in .msgpack.")
        cfg = data_config(FLAGS.dataset, FLAGS.data_path, FLAGS.source_split,
                          FLAGS.holdout_fraction)
        variables, info = train(cfg, FLAGS.steps, FLAGS.batch_size, FLAGS.learning_rate,
                                FLAGS.max_shift, FLAGS.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.dataset == "idx":
        info["split_note"] = (
            f"train/test are a deterministic {1 - FLAGS.holdout_fraction:.0%}/"
            f"{FLAGS.holdout_fraction:.0%} split of the IDX '{FLAGS.source_split}' files "
            "(aigc_jax.data.images holdout, fixed seed), not the official MNIST train/test split.")
    info["command"] = "python -m aigc_jax.evaluation.train_classifier " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    info["jax_version"] = jax.__version__
    weights_io.save_variables(FLAGS.out, variables)
    with open(FLAGS.out[:-len(".msgpack")] + ".json", "w") as f:
        json.dump(info, f, indent=2)
    print(json.dumps({k: info[k] for k in ("test_accuracy", "train_accuracy", "num_test")}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
