"""Diffusion throughput: train compile time, steps/s and images/s, DDIM sampling images/s.

    python benchmarks/bench_diffusion.py --variant=digits --steps=50 --header
    python benchmarks/bench_diffusion.py --variant=cifar10 --steps=2 --batch_size=8 --sample_batch=4

Batches are random uint8 images of the variant's shape (no dataset needed), so the numbers are
the jitted train step and the compiled sampler alone; compile times are reported separately.
Prints one Markdown table row with the machine, the date and the 1-minute load average.
"""

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax import methods  # noqa: E402
from aigc_jax.models.layers import count_params  # noqa: E402
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
from configs import diffusion as ddpm  # noqa: E402

SHAPES = {"digits": (16, 16, 1), "digits_cond": (16, 16, 1), "mnist": (28, 28, 1),
          "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3), "celeba64": (64, 64, 3)}
HEADER = ("| variant | machine | date | load | dtype | params | batch | compile train (s) "
          "| train steps/s | train img/s | sampler | compile sample (s) | sample img/s "
          "| peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    """Time the train step and the sampler for one variant; print a Markdown row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="digits", choices=sorted(SHAPES))
    p.add_argument("--steps", type=int, default=50, help="timed train steps after compiling")
    p.add_argument("--batch_size", type=int, default=0, help="0: the variant's batch size")
    p.add_argument("--sample_batch", type=int, default=0, help="0: same as the batch size")
    p.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"))
    p.add_argument("--sample_steps", type=int, default=50, help="0: all T timesteps")
    p.add_argument("--dtype", default="", help="float32 | bfloat16 (default: the variant's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set model.ch=16")
    p.add_argument("--header", action="store_true")
    args = p.parse_args()

    config = ddpm.get_config(args.variant)
    if args.batch_size:
        config.train.batch_size = args.batch_size
    if args.dtype:
        config.model.dtype = args.dtype
    config.sampler.name, config.sampler.num_steps = args.sampler, args.sample_steps
    apply_overrides(config, args.set)
    shape, b = SHAPES[args.variant], int(config.train.batch_size)
    method = methods.create(config, {"kind": "image", "image_shape": list(shape),
                                     "num_classes": 10})
    batches = random_image_batches(shape, b, 4)
    state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batches[0])
    compiled, compile_train = compile_train_step(method, state, batches[0])
    (state, _), _ = timed(compiled, state, batches[0])  # warm-up
    t_total = 0.0
    for i in range(args.steps):
        (state, _), dt = timed(compiled, state, batches[i % 4])
        t_total += dt
    steps_per_s = args.steps / t_total

    n = args.sample_batch or b
    _, compile_and_run = timed(method.sample, state, jax.random.PRNGKey(1), n)
    _, run = timed(method.sample, state, jax.random.PRNGKey(2), n)
    steps_name = args.sample_steps or config.diffusion.num_timesteps
    if args.header:
        print(HEADER)
    print(f"| {args.variant} | {machine()} | {today()} | {load_average()} | "
          f"{config.model.dtype} | {count_params(state.params) / 1e6:.2f}M | {b} | "
          f"{compile_train:.1f} | {steps_per_s:.3g} | {steps_per_s * b:.3g} | "
          f"{args.sampler.upper()}-{steps_name}, batch {n} | {compile_and_run - run:.1f} | "
          f"{n / run:.3g} | {peak_memory_mb():.0f} |")


if __name__ == "__main__":
    main()
