"""GAN throughput: compile time, steady-state train iterations/s and images/s, generation img/s.

    python benchmarks/bench_gan.py --variant=digits --steps=300 --header
    python benchmarks/bench_gan.py --variant=cifar10 --steps=10
    python benchmarks/bench_gan.py --family=stylegan2 --variant=mnist32 --steps=64

One train "step" is a whole GAN iteration (n_critic D updates and one G update; StyleGAN2's
lazy R1 / path-length branches run on their steps, so time a multiple of 16 steps); "train img/s"
counts the real images it consumes (train.batch_size). Batches are random uint8 images of the
variant's shape, so the figures are the jitted programs alone. Compile time is
`jit(...).lower(...).compile()`, measured apart from running. Prints one Markdown table row.
"""

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax import methods  # noqa: E402
from aigc_jax.models.layers.resample import resolve_impl  # noqa: E402
from benchmarks.common import (  # noqa: E402
    apply_overrides,
    compile_train_step,
    load_average,
    machine,
    peak_memory_mb,
    random_image_batches,
    timed,
    today,
)
from configs import gan, stylegan2  # noqa: E402

CONFIGS = {"gan": gan, "stylegan2": stylegan2}

SHAPES = {"digits": (8, 8, 1), "digits_cond": (8, 8, 1), "mnist": (28, 28, 1),
          "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "cifar10_sngan": (32, 32, 3),
          "celeba64": (64, 64, 3), "mnist32": (32, 32, 1), "captioned_digits": (32, 32, 3),
          "ffhq256": (256, 256, 3), "tiny": (8, 8, 1)}
HEADER = ("| variant | machine | date | load | batch | n_critic | arch, 4x4 convs "
          "| compile train (s) | train it/s | train img/s | compile sample (s) | sample img/s "
          "| peak MiB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    """Time one variant's train iteration and generator; print a Markdown row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="gan", choices=sorted(CONFIGS))
    p.add_argument("--variant", default="digits", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=200, help="timed iterations after one warm-up")
    p.add_argument("--sample_num", type=int, default=256, help="images per generation call")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--header", action="store_true")
    args = p.parse_args()

    config = CONFIGS[args.family].get_config(args.variant)
    apply_overrides(config, args.set)
    shape, b = SHAPES[args.variant], int(config.train.batch_size)
    method = methods.create(config, {"image_shape": list(shape), "num_classes": 10})
    batches = random_image_batches(shape, b, 2)
    state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batches[0])
    step, compile_train = compile_train_step(method, state, batches[0])
    (state, _), _ = timed(step, state, batches[0])  # warm-up run
    t0 = time.perf_counter()
    for i in range(args.steps):  # dispatch is asynchronous: block once at the end
        state, metrics = step(state, batches[i % 2])
    jax.block_until_ready((state, metrics))
    its = args.steps / (time.perf_counter() - t0)

    key, n = jax.random.PRNGKey(1), args.sample_num
    t0 = time.perf_counter()
    sample = method.sample.lower(state, key, n).compile()
    compile_sample = time.perf_counter() - t0
    timed(sample, state, key)  # warm-up run
    reps = 5
    _, sample_s = timed(lambda: [sample(state, key) for _ in range(reps)])
    arch = config.model.get("arch", args.family)
    conv = f"{arch} {resolve_impl(config.model.conv_impl)}" if arch == "dcgan" else arch
    if args.header:
        print(HEADER)
    print(f"| {args.variant} | {machine()} | {today()} | {load_average()} | {b} | "
          f"{int(config.get('n_critic', 1))} | {conv} | {compile_train:.1f} | "
          f"{its:.2f} | {its * b:.0f} | {compile_sample:.1f} | {reps * n / sample_s:.0f} | "
          f"{peak_memory_mb():.0f} |")


if __name__ == "__main__":
    main()
