"""Input pipeline throughput (issue 23): JPEG decode + augmentation by grain workers, token
windows from a memmapped file, and whole training loops on the in-memory and grain paths.

    python benchmarks/bench_input.py images --workers=0,1,2 --steps=40
    python benchmarks/bench_input.py tokens --mb=512 --steps=2000
    python benchmarks/bench_input.py loop --config=configs/vae.py:tiny --steps=3000
    python benchmarks/bench_input.py loop --config=configs/vae.py:tiny --steps=3000 --code=OLD

`images` writes a folder of 256x256 JPEGs (smooth random images, quality 90) and times the
lazy folder source (decode, centre crop and resize to 64, random flip) through
`pipeline.grain_batches`, excluding the workers' start. `tokens` writes random uint16 tokens
and times `TokenFileDataset.train_batch` at nanoGPT's GPT-2 shape (12 x 1024). `loop` runs
`train.train_and_evaluate` and reports the loop's own steps/s and data_wait_ms (the mean of
its logged rows after the first); `--code=DIR` imports aigc_jax from another checkout (the
code before this change) to compare the default in-memory path. Prints Markdown rows.
"""

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(code: str) -> None:
    sys.path.insert(0, REPO)
    if code:
        sys.path.insert(0, os.path.abspath(code))


def _jpeg_folder(folder: str, n: int) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = os.path.join(folder, f"c{i % 10}", f"{i:05d}.jpg")
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        small = rng.integers(0, 256, (16, 16, 3), np.uint8)  # upsampled: JPEG-like content
        Image.fromarray(small).resize((256, 256), Image.BICUBIC).save(path, quality=90)
    return folder


def bench_images(args) -> None:
    import ml_collections

    from aigc_jax.data import images, pipeline
    from benchmarks.common import load_average, machine, today

    folder = _jpeg_folder(args.folder or tempfile.mkdtemp(prefix="jpegs_"), args.num_images)
    cfg = ml_collections.ConfigDict({
        "name": "folder", "path": folder, "image_size": 64, "crop": 0, "pad": 0,
        "random_flip": True, "binarize": "none", "holdout_fraction": 0.0,
        "source_split": "train", "tfds_data_dir": "", "pipeline": "grain", "bad_images": "stop"})
    ds = images.create_image_dataset(cfg, "train", 0)
    print("| source | machine | date | load | batch | workers | images/s |")
    print("|---|---|---|---|---|---|---|")
    for workers in [int(w) for w in args.workers.split(",")]:
        if workers < 0:  # the loop's own thread, no grain: the "memory" pipeline's way
            it = pipeline.memory_batches(ds, 0, args.steps + 1, args.batch_size)
        else:
            it = pipeline.grain_batches(ds, 0, args.steps + 1, args.batch_size,
                                        num_workers=workers, buffer=4)
        next(it)  # workers started, first batch out
        t0 = time.perf_counter()
        n = sum(len(b["image"]) for b in it)
        rate = n / (time.perf_counter() - t0)
        name = "in the loop's thread" if workers < 0 else (
            f"{workers} processes" if workers else "grain, reader threads only")
        print(f"| JPEG 256->64 + flip | {machine()} | {today()} | {load_average()} | "
              f"{args.batch_size} | {name} | {rate:.0f} |", flush=True)
        getattr(it, "close", lambda: None)()


def bench_tokens(args) -> None:
    import numpy as np

    from aigc_jax.data import pipeline, token_files
    from benchmarks.common import load_average, machine, today

    path = os.path.join(args.folder or tempfile.mkdtemp(prefix="tokens_"), "train.bin")
    n = args.mb * (1 << 20) // 2
    if not os.path.exists(path) or os.path.getsize(path) != 2 * n:
        rng = np.random.default_rng(0)
        with open(path, "wb") as f:
            for _ in range(0, n, 1 << 24):
                f.write(rng.integers(0, 50257, min(1 << 24, n), np.uint16).tobytes())
    ds = token_files.TokenFileDataset(path, np.uint16, None, 1024, 0,
                                      {"kind": "byte", "vocab_size": 50257}, "bench")
    print("| source | machine | date | load | file | batch | path | tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("memory", "grain"):
        it = (pipeline.memory_batches(ds, 0, args.steps, 12) if name == "memory" else
              pipeline.grain_batches(ds, 0, args.steps, 12, buffer=4))
        next(it)
        t0 = time.perf_counter()
        tokens = sum(b["tokens"].size for b in it)
        rate = tokens / (time.perf_counter() - t0)
        print(f"| memmap uint16 | {machine()} | {today()} | {load_average()} | {args.mb} MiB | "
              f"12 x 1025 | {name} | {rate:,.0f} |", flush=True)


def bench_loop(args) -> None:
    import importlib.util

    from aigc_jax import train
    from benchmarks.common import apply_overrides, load_average, machine, today

    path, _, variant = args.config.partition(":")
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant)
    config.train.num_steps, config.train.log_every = args.steps, args.log_every
    config.train.eval_every = config.train.sample_every = 0
    config.train.checkpoint_every = args.steps
    config.train.tensorboard = False
    apply_overrides(config, args.set)
    workdir = tempfile.mkdtemp(prefix="bench_loop_")
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if "steps_per_sec" in r][1:]
    rate = sum(r["steps_per_sec"] for r in rows) / len(rows)
    waits = [r["data_wait_ms"] for r in rows if "data_wait_ms" in r]
    wait = f"{sum(waits) / len(waits):.2f}" if waits else "not logged"
    pipe = config.data.get("pipeline", "memory (code before issue 23)")
    print(f"| {args.config} {' '.join(args.set)} | {machine()} | {today()} | {load_average()} | "
          f"{pipe} | {args.steps} | {rate:.1f} | {wait} |", flush=True)


def main() -> None:
    """Run one benchmark and print its Markdown rows."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("images", "tokens", "loop"))
    p.add_argument("--workers", default="-1,0,1,2", help="images: -1 = in the loop's thread")
    p.add_argument("--num_images", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--mb", type=int, default=512)
    p.add_argument("--folder", default="", help="reuse a folder of images / tokens")
    p.add_argument("--config", default="configs/vae.py:tiny")
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--set", nargs="*", default=[], help="config overrides key=value")
    p.add_argument("--code", default="", help="loop: import aigc_jax from this checkout")
    args = p.parse_args()
    _setup(args.code)
    {"images": bench_images, "tokens": bench_tokens, "loop": bench_loop}[args.what](args)


if __name__ == "__main__":
    main()
