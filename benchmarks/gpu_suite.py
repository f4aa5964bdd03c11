"""GPU suite: each family's train step at its paper shape, in one table (compile time, step
time, tokens or images/s, MFU, peak device memory).

    python benchmarks/gpu_suite.py                    # one GPU: every row, <= 8 min on an H200
    python benchmarks/gpu_suite.py --smoke            # any CPU: the same rows, tiny, seconds
    python benchmarks/gpu_suite.py --only=gpt2_124m,ddpm_cifar10_bf16 --json=/tmp/jax.json

Rows (`suite_rows.ROWS`): GPT-2 124M (block 1024, bf16, cuDNN attention through
`jax.nn.dot_product_attention`, and again with XLA's attention), nanoGPT's shakespeare_char
recipe (6 x 384, block 256, batch 64, bf16 as nanoGPT on a GPU), the DDPM CIFAR-10 UNet (35.7M,
batch 128) in bf16 and fp32, and the digits VAE and GAN. Batches are random tokens or images
of the row's shape, put on the device beforehand, so the figures are the method's train step
alone, jitted with the state donated as the loop does (`common.compile_train_step`; the loop
adds its non-finite guard and shardings, one device here).

- compile: `lower(...).compile()` of that step, timed apart from running it.
- step: one blocked step sizes the run, then steps fill `--min_seconds`, dispatched back to
  back as the loop does, timed as a whole (mean).
- MFU: FLOPs per step / step time / peak. GPT rows use 6N + 12 L T D per token (nanoGPT,
  PaLM); the others XLA's cost analysis of the step (all dots and convolutions, forward and
  backward, plus elementwise work). Peak: `--peak_tflops`, else the device table of
  `aigc_jax.parallel` (H200: 989 TFLOP/s, bf16 dense, datasheet; fp32 rows against it too);
  none for CPUs.
- peak MiB: `device.memory_stats()["peak_bytes_in_use"]` where the backend has it (GPU, TPU);
  on a CPU the process's peak RSS.
Each row runs in a child process (its own memory peak; a failing row costs only itself) within
`--budget_s` in all; `--smoke` runs them in this process unless `--isolate`. `--json` writes
the rows for `suite_rows.py`'s side-by-side table with `torch_peers.py`.
"""

import argparse
import json
import os
import sys
import traceback

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax import methods, parallel  # noqa: E402
from benchmarks import (  # noqa: E402
    bench_diffusion,
    bench_gan,
    bench_gpt,
    bench_vae,
    common,
    suite_rows,
)

IMAGE_SHAPES = {"diffusion": bench_diffusion.SHAPES, "vae": bench_vae.SHAPES,
                "gan": bench_gan.SHAPES}


def measure(row: suite_rows.Row, smoke: bool, peak_tflops: float, min_seconds: float) -> dict:
    """Compile and time one row's train step; its result as a dict of plain values."""
    config = suite_rows.row_config(row, smoke)
    b = int(config.train.batch_size)
    if row.family == "lm":
        vocab, t = bench_gpt.default_vocab(config), int(config.model.block_size)
        info, batches = bench_gpt.char_info(vocab), common.token_batches(b, t, vocab, 4)
        shape, units, unit = f"{b} x {t}", b * t, "tok"
        impl = str(config.model.attention_impl) or "xla"
        note = "attention: " + ("einsum + dropout" if config.model.dropout > 0 else impl)
    else:
        image_shape = IMAGE_SHAPES[row.family][row.variant]
        info = {"kind": "image", "image_shape": list(image_shape), "num_classes": 10}
        batches = common.random_image_batches(image_shape, b, 4)
        shape, units, unit = f"{b} x {'x'.join(map(str, image_shape))}", b, "img"
        note = ""
    method = methods.create(config, info)
    batches = jax.device_put(batches)
    state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batches[0])
    # the LM states its own (6N + 12 L T D per token); the others get XLA's count
    flops = method.flops_per_step or common.train_step_flops(method, state, batches[0])
    compiled, compile_s = common.compile_train_step(method, state, batches[0])
    state, step_s, steps = common.steady_step_seconds(compiled, state, batches, min_seconds)
    peak = peak_tflops * 1e12 or parallel.peak_flops(config)
    return {
        "name": row.name, "config": f"{suite_rows.CONFIGS[row.family]}:{row.variant}",
        "shape": shape, "dtype": str(config.model.get("dtype", "float32")),
        "params": sum(int(p.size) for p in jax.tree.leaves(state.params)),
        "compile_s": compile_s, "step_ms": 1e3 * step_s, "steps_timed": steps,
        "throughput": units / step_s, "unit": unit, "flops_per_step": flops,
        "tflops": flops / step_s / 1e12, "mfu": flops / step_s / peak if peak else None,
        "peak_mib": common.peak_memory_mb(), "note": note, "machine": common.machine(),
        "jax": jax.__version__,
    }


def main() -> None:
    """Run the rows (each in a child process unless --smoke) and print one Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes, in-process: seconds")
    p.add_argument("--only", default="", help="comma-separated row names (default: all)")
    p.add_argument("--budget_s", type=float, default=450.0, help="seconds for all rows")
    p.add_argument("--min_seconds", type=float, default=0.0,
                   help="timed seconds per row (0: 3 on accelerators, 0.2 with --smoke)")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="peak TFLOP/s for MFU (0: the device table; none for CPUs)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each row in a child process (default: yes, except with --smoke)")
    p.add_argument("--json", default="", help="also write the rows here")
    p.add_argument("--row", default="", help=argparse.SUPPRESS)  # child: one row, JSON out
    args = p.parse_args()
    min_seconds = args.min_seconds or (0.2 if args.smoke else 3.0)

    def run(row: suite_rows.Row) -> dict:
        return measure(row, args.smoke, args.peak_tflops, min_seconds)

    if args.row:
        try:
            result = run(suite_rows.ROWS_BY_NAME[args.row])
        except Exception as e:  # reported in the table; the traceback goes to the log
            traceback.print_exc()
            result = {"name": args.row, "error": f"{type(e).__name__}: {e}"[:300]}
        print(suite_rows.RESULT_PREFIX + json.dumps(result), flush=True)
        return

    load_before = common.load_average()
    child_args = [f"--peak_tflops={args.peak_tflops}", f"--min_seconds={min_seconds}"]
    child_args += ["--smoke"] if args.smoke else []
    isolate = not args.smoke if args.isolate is None else args.isolate
    results = suite_rows.run_rows(__file__, suite_rows.select(args.only), child_args,
                                  args.budget_s, None if isolate else run)
    ok = [r for r in results if "error" not in r]
    where = ok[0]["machine"] if ok else "(no row ran)"
    meta = {"machine": where, "jax": jax.__version__, "date": common.today(),
            "load_before": load_before, "load_after": common.load_average(),
            "smoke": args.smoke}
    print(f"GPU suite (JAX {meta['jax']}) on {where}, {meta['date']}, load "
          f"{load_before}/{meta['load_after']}{', SMOKE (tiny shapes)' if args.smoke else ''}")
    print(suite_rows.markdown_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
