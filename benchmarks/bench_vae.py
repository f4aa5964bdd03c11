"""VAE throughput: compile time, training steps/s and images/s, sampling images/s, peak memory.

    python benchmarks/bench_vae.py --variant=digits --steps=500
    python benchmarks/bench_vae.py --variant=mnist --steps=200

Batches are random uint8 images of the variant's shape, so the figures are the jitted train
step and sampler alone. Prints one Markdown table row with the machine and the date.
"""

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax import methods  # noqa: E402
from benchmarks.common import (  # noqa: E402
    apply_overrides,
    load_average,
    machine,
    peak_memory_mb,
    random_image_batches,
    timed,
    today,
)
from configs import vae  # noqa: E402

SHAPES = {"digits": (8, 8, 1), "digits_2d": (8, 8, 1), "mnist": (28, 28, 1),
          "mnist_conv": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
HEADER = ("| variant | machine | date | load | batch | compile (s) | train steps/s | train img/s "
          "| sample img/s | peak MiB |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    """Time the train step and the prior sampler for one variant; print a Markdown row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="digits", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=0, help="0: the variant's batch size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--header", action="store_true")
    args = p.parse_args()

    config = vae.get_config(args.variant)
    if args.batch_size:
        config.train.batch_size = args.batch_size
    apply_overrides(config, args.set)
    shape, b = SHAPES[args.variant], int(config.train.batch_size)
    method = methods.create(config, {"image_shape": list(shape), "num_classes": 10})
    batches = random_image_batches(shape, b, 4)
    state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batches[0])
    step = jax.jit(method.train_step, donate_argnums=0)
    (state, _), compile_s = timed(step, state, batches[0])
    t_total = 0.0
    for i in range(args.steps):
        (state, _), dt = timed(step, state, batches[i % 4])
        t_total += dt
    steps_per_s = args.steps / t_total
    num = 256
    method.sample(state, jax.random.PRNGKey(1), num)  # compile
    _, sample_s = timed(method.sample, state, jax.random.PRNGKey(2), num)
    if args.header:
        print(HEADER)
    print(f"| {args.variant} | {machine()} | {today()} | {load_average()} | {b} | "
          f"{compile_s:.2f} | {steps_per_s:.1f} | {steps_per_s * b:.0f} | "
          f"{num / sample_s:.0f} | {peak_memory_mb():.0f} |")


if __name__ == "__main__":
    main()
