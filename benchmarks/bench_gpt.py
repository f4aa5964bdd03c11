"""GPT throughput: compile time, train ms/iteration, tokens/s, MFU, KV-cache sampling, memory.

    python benchmarks/bench_gpt.py --variant=shakespeare_char_cpu --steps=300 --header
    python benchmarks/bench_gpt.py --variant=gpt2_small --steps=3 --batch_size=1 \
        --set optimizer.grad_accum_steps=1

Batches are random token windows (vocabulary 65, tiny Shakespeare's characters, unless
--vocab_size), so the figures are the jitted train step and sampler alone. The step is the one
`train.py` runs: `jax.jit(method.train_step, donate_argnums=0)`. ms/iteration is the median of
the timed steps (each blocked on), after `--warmup` untimed ones; the compile is timed apart.
MFU uses 6N + 12 L T D FLOPs per token against `--peak_tflops` (or the device table in
`aigc_jax.methods.lm`); a CPU has no table entry, so it is printed only when the flag is given.
Also printed: the step's XLA scratch memory and the minor page faults per timed step (on Linux,
glibc maps a block above 32 MiB afresh on every malloc, so a step whose scratch is larger
page-faults on all of it each time; `optimizer.grad_accum_steps` shrinks the scratch).
Prints one Markdown table row with the machine, the date and the 1-minute load average.
"""

import argparse
import os
import resource
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax import parallel  # noqa: E402
from aigc_jax.methods.lm import method as lm  # noqa: E402
from aigc_jax.methods.lm.sampling import generate  # noqa: E402
from aigc_jax.models.gpt import GPT, config_from, flops_per_token, non_embedding_params  # noqa: E402
from benchmarks.common import (  # noqa: E402
    apply_overrides,
    compile_train_step,
    load_average,
    machine,
    peak_memory_mb,
    timed,
    today,
    token_batches,
)
from configs import lm as gpt  # noqa: E402

HEADER = ("| variant | machine | date | load before/after | batch x block (micro-batches) | "
          "params | compile (s) | train ms/iter | tokens/s | MFU | step scratch MiB | "
          "page faults/step | sample tok/s (KV cache) | peak MiB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def char_info(vocab_size: int) -> dict:
    """A data info dict of a character vocabulary of `vocab_size` symbols."""
    chars = "".join(chr(32 + i) for i in range(vocab_size))
    return {"kind": "text", "vocab_size": vocab_size,
            "tokenizer": {"kind": "char", "chars": chars, "vocab_size": vocab_size}}


def default_vocab(config) -> int:
    """Tiny Shakespeare's 65 characters for a char tokenizer, else GPT-2's 50257."""
    return 65 if config.data.tokenizer == "char" else 50257


def main() -> None:
    """Time the train step and the KV-cache sampler for one variant; print a Markdown row."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="shakespeare_char_cpu", choices=gpt.VARIANTS)
    p.add_argument("--steps", type=int, default=200, help="timed train steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps after the compile")
    p.add_argument("--batch_size", type=int, default=0, help="0: the variant's batch size")
    p.add_argument("--vocab_size", type=int, default=0, help="0: 65 (char) or 50257 (spm)")
    p.add_argument("--peak_tflops", type=float, default=0.0,
                   help="peak FLOP/s (in TFLOP/s) for MFU; 0: the device table, if any")
    p.add_argument("--sample_num", type=int, default=4, help="samples drawn in parallel")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--header", action="store_true")
    args = p.parse_args()

    config = gpt.get_config(args.variant)
    if args.batch_size:
        config.train.batch_size = args.batch_size
    apply_overrides(config, args.set)
    if args.peak_tflops:
        config.peak_flops = args.peak_tflops * 1e12
    vocab = args.vocab_size or default_vocab(config)
    b, t = int(config.train.batch_size), int(config.model.block_size)
    method = lm.create(config, char_info(vocab))
    gcfg = config_from(config.model, vocab)
    load_before = load_average()

    batches = token_batches(b, t, vocab, 8)
    state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batches[0])
    n_params = non_embedding_params(state.params)
    compiled, compile_s = compile_train_step(method, state, batches[0])
    for i in range(args.warmup):
        state, _ = jax.block_until_ready(compiled(state, batches[i % 8]))
    times = []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(args.steps):
        (state, _), dt = timed(compiled, state, batches[i % 8])
        times.append(dt)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / args.steps
    scratch_mib = compiled.memory_analysis().temp_size_in_bytes / 2**20
    ms = 1e3 * float(np.median(times))
    tput = parallel.throughput(1e3 / ms, b * t, flops_per_token(gcfg, n_params) * b * t,
                               parallel.peak_flops(config))
    mfu = f"{100 * tput['mfu']:.1f}%" if "mfu" in tput else "n/a (no peak)"

    # KV-cache sampling: a one-token prompt and block_size - 1 new tokens, all from the cache.
    sc = lm.SamplerConfig(max_new_tokens=t - 1, temperature=1.0, top_k=200)
    prompt = jnp.zeros((args.sample_num, 1), jnp.int32)
    model = GPT(gcfg)
    jax.block_until_ready(generate(model, state.params, prompt, jax.random.PRNGKey(1), sc, vocab))
    _, sample_s = timed(generate, model, state.params, prompt, jax.random.PRNGKey(2), sc, vocab)
    sample_tps = args.sample_num * (t - 1) / sample_s

    if args.header:
        print(HEADER)
    print(f"| {args.variant} | {machine()} | {today()} | {load_before}/{load_average()} | "
          f"{b} x {t} ({config.optimizer.grad_accum_steps}) | {n_params / 1e6:.2f}M | "
          f"{compile_s:.2f} | {ms:.1f} | {tput['tokens_per_sec']:.0f} | {mfu} | "
          f"{scratch_mib:.0f} | {faults:.0f} | {sample_tps:.0f} | {peak_memory_mb():.0f} |")


if __name__ == "__main__":
    main()
