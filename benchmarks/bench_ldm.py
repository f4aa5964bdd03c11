"""Text-conditioned latent diffusion throughput: train steps/s and DDIM images/s with guidance.

    python benchmarks/bench_ldm.py --variant=captioned_digits --header
    python benchmarks/bench_ldm.py --variant=captioned_digits --autoencoder=runs/ae
    python benchmarks/bench_ldm.py --variant=captioned_digits_pixel --min_seconds=30

The run is built as the training loop builds it (`train.Run`: the frozen autoencoder
component, the captioned data, the loop's jitted step with the frozen weights as an argument).
Without --autoencoder the component is a stand-in: the variant's first-stage config
(configs/autoencoder.py:captioned_digits_kl) at its initial weights, which costs the same per
step as a trained one. The text encoder is the jointly trained one (diffusion.text=joint) unless
--clip names a CLIP run for the frozen tower. Sampling is DDIM-`--sample_steps` at guidance
`--guidance` (two UNet calls per step). Prints one Markdown row with machine, date and load.
"""

import argparse
import os
import sys
import tempfile

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax import parallel, train  # noqa: E402
from aigc_jax.models.layers import count_params  # noqa: E402
from benchmarks.common import (  # noqa: E402
    apply_overrides,
    load_average,
    machine,
    peak_memory_mb,
    steady_step_seconds,
    timed,
    today,
)
from configs import autoencoder as autoencoder_configs  # noqa: E402
from configs import ldm as ldm_configs  # noqa: E402

VARIANTS = ("captioned_digits", "captioned_digits_pixel", "tiny")
HEADER = ("| variant | machine | date | load | space | text | params (UNet + text) | batch "
          "| compile train (s) | train steps/s | train img/s | sampler | compile sample (s) "
          "| sample img/s | peak MiB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def stand_in_autoencoder(workdir: str) -> None:
    """configs/autoencoder.py:captioned_digits_kl at its initial weights, saved as step 0."""
    run = train.Run(autoencoder_configs.get_config("captioned_digits_kl"), workdir)
    try:
        state = run.init_state()
        train.write_config(run.config, workdir)
        run.ckpt.save(state, run.checkpoint_meta(0), force=True)
        run.ckpt.wait()
    finally:
        run.ckpt.close()


def main() -> None:
    """Time the LDM train step and guided DDIM sampling for one variant; print a Markdown row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="captioned_digits", choices=VARIANTS)
    p.add_argument("--autoencoder", default="", help="a trained first-stage run (default: a "
                   "stand-in at initial weights; latent variants only)")
    p.add_argument("--clip", default="", help="a CLIP run: its frozen text tower (default: "
                   "diffusion.text=joint)")
    p.add_argument("--min_seconds", type=float, default=20.0, help="time train steps this long")
    p.add_argument("--sample_batch", type=int, default=0, help="images per sampler call "
                   "(0: eval.sample_batch)")
    p.add_argument("--sample_steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set model.ch=32")
    p.add_argument("--header", action="store_true")
    args = p.parse_args()

    config = ldm_configs.get_config(args.variant)
    config.sampler.num_steps, config.sampler.guidance_scale = args.sample_steps, args.guidance
    config.train.tensorboard = False
    if args.clip:
        config.components.text_encoder.workdir = args.clip
    else:
        config.diffusion.text = "joint"
    apply_overrides(config, args.set)
    with tempfile.TemporaryDirectory() as tmp:
        latent = args.variant != "captioned_digits_pixel"
        if latent:
            ae = args.autoencoder or os.path.join(tmp, "ae")
            if not args.autoencoder:
                stand_in_autoencoder(ae)
            config.components.autoencoder.workdir = ae
        run = train.Run(config, os.path.join(tmp, "ldm"))
        try:
            state = run.init_state()
            step = run.jit_train_step()
            b = int(config.train.batch_size)
            batches = [parallel.shard_batch(run.mesh, run.train_ds.train_batch(s, b, 0, 1))
                       for s in range(4)]
            (state, _), compile_train = timed(step, state, batches[0], run.frozen)
            _, seconds, _ = steady_step_seconds(
                lambda s, x: step(s, x, run.frozen), state, batches, args.min_seconds)
            state = run.init_state()  # the donated state is gone; sampling needs one
            n = args.sample_batch or int(config.eval.sample_batch)
            prompts = list(config.prompts)
            per_prompt = max(1, n // len(prompts))
            n = per_prompt * len(prompts)
            sample = lambda rng: run.method.sample(  # noqa: E731
                state, rng, per_prompt, frozen=run.frozen, prompts=prompts)["images"]
            _, compile_and_run = timed(sample, jax.random.PRNGKey(1))
            _, sample_run = timed(sample, jax.random.PRNGKey(2))
        finally:
            run.ckpt.close()
    if args.header:
        print(HEADER)
    text = "CLIP (frozen)" if args.clip else "joint"
    print(f"| {args.variant} | {machine()} | {today()} | {load_average()} | "
          f"{'latent' if latent else 'pixel'} | {text} | {count_params(state.params) / 1e6:.2f}M "
          f"| {b} | {compile_train - seconds:.1f} | {1 / seconds:.3g} | {b / seconds:.3g} | "
          f"DDIM-{args.sample_steps}, w={args.guidance:g}, batch {n} | "
          f"{compile_and_run - sample_run:.1f} | {n / sample_run:.3g} | "
          f"{peak_memory_mb():.0f} |")


if __name__ == "__main__":
    main()
