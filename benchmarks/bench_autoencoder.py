"""Autoencoder throughput: compile time, training steps/s and images/s, encode and decode
images/s (the component's functions), peak memory.

    python benchmarks/bench_autoencoder.py --variant=mnist_kl_f4 --steps=20 --header
    python benchmarks/bench_autoencoder.py --variant=mnist_vq_f4 --steps=20

Batches are random uint8 images of the variant's shape, so the figures are the jitted train
step and the encoder/decoder alone. Prints one Markdown table row with the machine and date.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax import methods  # noqa: E402
from aigc_jax.methods.autoencoder import method as ae  # noqa: E402
from benchmarks.common import (  # noqa: E402
    apply_overrides,
    load_average,
    machine,
    peak_memory_mb,
    random_image_batches,
    timed,
    today,
)
from configs import autoencoder  # noqa: E402

SHAPES = {"digits": (16, 16, 1), "digits_vq": (16, 16, 1), "mnist_kl_f4": (32, 32, 1),
          "mnist_vq_f4": (32, 32, 1), "celeba64": (64, 64, 3), "imagenet_kl_f4": (256, 256, 3),
          "imagenet_kl_f8": (256, 256, 3), "tiny": (8, 8, 1)}
HEADER = ("| variant | machine | date | load | batch | compile (s) | train steps/s | train img/s "
          "| encode img/s | decode img/s | peak MiB |\n" + "|---" * 11 + "|")


def main() -> None:
    """Time the train step, encode and decode for one variant; print a Markdown row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="digits", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch_size", type=int, default=0, help="0: the variant's batch size")
    p.add_argument("--eval_batch", type=int, default=100, help="images per encode/decode call")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--header", action="store_true")
    args = p.parse_args()

    config = autoencoder.get_config(args.variant)
    if args.batch_size:
        config.train.batch_size = args.batch_size
    apply_overrides(config, args.set)
    shape, b = SHAPES[args.variant], int(config.train.batch_size)
    info = {"image_shape": list(shape), "num_classes": 10}
    method = methods.create(config, info)
    batches = random_image_batches(shape, b, 4)
    state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batches[0])
    step = jax.jit(method.train_step, donate_argnums=0)
    (state, _), compile_s = timed(step, state, batches[0])
    t_total = 0.0
    for i in range(args.steps):
        (state, _), dt = timed(step, state, batches[i % 4])
        t_total += dt
    steps_per_s = args.steps / t_total

    ctx = ae.make_context(config, info)
    weights = state.ema_params
    images = jnp.asarray(random_image_batches(shape, args.eval_batch, 1)[0]["image"])
    encode = jax.jit(lambda w, x: ae.reconstruct(ctx, w, x)[1])
    decode = jax.jit(lambda w, z: ae.decode_latents(ctx, w, z)[0])
    z, _ = timed(encode, weights, images)  # compile
    _, enc_s = timed(encode, weights, images)
    timed(decode, weights, z)
    _, dec_s = timed(decode, weights, z)
    if args.header:
        print(HEADER)
    n = args.eval_batch
    print(f"| {args.variant} | {machine()} | {today()} | {load_average()} | {b} | "
          f"{compile_s:.1f} | {steps_per_s:.2f} | {steps_per_s * b:.0f} | {n / enc_s:.0f} | "
          f"{n / dec_s:.0f} | {peak_memory_mb():.0f} |")


if __name__ == "__main__":
    main()
