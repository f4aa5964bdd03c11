"""What the GPU suite measures: its rows (config variant + shape), and the table it prints.

Shared by `gpu_suite.py` (JAX) and `torch_peers.py` (PyTorch), so both time the same shapes;
imports neither jax nor torch. Configs are loaded by path, as `--config=configs/lm.py:tiny`
does, so a renamed config file is a one-line change in `CONFIGS`.
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"lm": "configs/lm.py", "diffusion": "configs/diffusion.py", "vae": "configs/vae.py",
           "gan": "configs/gan.py"}

# --smoke: the same rows at shapes that compile and run in seconds on a CPU.
GPT_SMOKE = {"model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
             "train.batch_size": 2, "optimizer.grad_accum_steps": 1, "model.attention_impl": ""}
UNET_SMOKE = {"model.ch": 16, "model.ch_mult": (1,), "model.num_res_blocks": 1,
              "model.attn_resolutions": (32,), "model.num_groups": 8, "train.batch_size": 2}
IMAGE_SMOKE = {"train.batch_size": 8}


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: `CONFIGS[family]:variant` with `overrides` on top."""

    name: str
    family: str
    variant: str
    overrides: dict[str, Any]
    smoke: dict[str, Any]


# In priority order: with a time budget, the rows that do not fit are the last ones.
ROWS = (
    # GPT-2 124M at block 1024 as one micro-batch of 32 (the variant's recipe accumulates 5 x 96).
    Row("gpt2_124m", "lm", "gpt2_small",
        {"train.batch_size": 32, "optimizer.grad_accum_steps": 1, "model.attention_impl": "cudnn"},
        GPT_SMOKE),
    # bf16 as nanoGPT trains on a GPU; its dropout 0.2 takes the attention with dropout.
    Row("shakespeare_char", "lm", "shakespeare_char", {"model.dtype": "bfloat16"}, GPT_SMOKE),
    Row("ddpm_cifar10_bf16", "diffusion", "cifar10", {"model.dtype": "bfloat16"}, UNET_SMOKE),
    Row("ddpm_cifar10_fp32", "diffusion", "cifar10", {"model.dtype": "float32"}, UNET_SMOKE),
    Row("vae_digits", "vae", "digits", {}, IMAGE_SMOKE),
    Row("gan_digits", "gan", "digits", {}, IMAGE_SMOKE),
    Row("gpt2_124m_xla_attn", "lm", "gpt2_small",
        {"train.batch_size": 32, "optimizer.grad_accum_steps": 1, "model.attention_impl": "xla"},
        GPT_SMOKE),
)
ROWS_BY_NAME = {row.name: row for row in ROWS}


def load_config(spec: str):
    """The ConfigDict of `configs/<file>.py:<variant>` (path relative to the repo root)."""
    path, _, variant = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(
        "bench_config_" + os.path.basename(path)[:-3], os.path.join(REPO, path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def row_config(row: Row, smoke: bool = False, extra: dict[str, Any] | None = None):
    """The row's config: its variant, then its overrides (or its smoke shapes), then `extra`."""
    config = load_config(f"{CONFIGS[row.family]}:{row.variant}")
    changes = {**row.overrides, **(row.smoke if smoke else {}), **(extra or {})}
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def select(only: str) -> list[Row]:
    """The rows named in a comma-separated list (all when empty); unknown names are an error."""
    if not only:
        return list(ROWS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known rows: {', '.join(ROWS_BY_NAME)}")
    return [ROWS_BY_NAME[n] for n in names]


COLUMNS = (("row", "name"), ("shape", "shape"), ("dtype", "dtype"), ("params", "params"),
           ("compile (s)", "compile_s"), ("step (ms)", "step_ms"), ("throughput", "throughput"),
           ("TFLOP/s", "tflops"), ("MFU", "mfu"), ("peak MiB", "peak_mib"), ("note", "note"))


def _cell(result: dict, key: str) -> str:
    value = result.get(key)
    if value is None:
        return "n/a"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if key == "throughput":
        number = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
        return f"{number} {result['unit']}/s"
    if key == "mfu":
        return f"{100 * value:.1f}%"
    if key in ("compile_s", "tflops"):
        return f"{value:.1f}" if value >= 1 else f"{value:.3g}"
    if key in ("step_ms", "peak_mib"):
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def markdown_table(results: list[dict]) -> str:
    """One Markdown table of result rows; a failed row shows its error in the note column."""
    lines = ["| " + " | ".join(title for title, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for r in results:
        if "error" in r:
            cells = [r["name"]] + ["-"] * (len(COLUMNS) - 2) + [r["error"]]
        else:
            cells = [_cell(r, key) for _, key in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(jax_results: list[dict], torch_results: list[dict]) -> str:
    """JAX beside PyTorch per row: step times, their ratio, and MFU of both computed with the
    JAX row's FLOPs per step (the same work), compile times and peak memory."""
    peers = {r["name"]: r for r in torch_results}
    titles = ("row", "JAX step (ms)", "PyTorch step (ms)", "PyTorch / JAX time", "JAX MFU",
              "PyTorch MFU", "JAX compile (s)", "PyTorch compile (s)", "JAX peak MiB",
              "PyTorch peak MiB", "note")
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for j in jax_results:
        t = peers.get(j["name"], {"error": "no PyTorch peer"})
        if "error" in j or "error" in t:
            step = "-" if "error" in j else _cell(j, "step_ms")
            cells = [j["name"], step] + ["-"] * 8 + [j.get("error") or t["error"]]
        else:
            mfu_t = None if j.get("mfu") is None else j["mfu"] * j["step_ms"] / t["step_ms"]
            cells = [j["name"], _cell(j, "step_ms"), _cell(t, "step_ms"),
                     f"{t['step_ms'] / j['step_ms']:.2f}", _cell(j, "mfu"),
                     _cell({"mfu": mfu_t}, "mfu"), _cell(j, "compile_s"), _cell(t, "compile_s"),
                     _cell(j, "peak_mib"), _cell(t, "peak_mib"), t.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


RESULT_PREFIX = "RESULT "


def run_rows(script: str, rows: list[Row], child_args: list[str], budget_s: float,
             measure: Callable[[Row], dict] | None = None) -> list[dict]:
    """Every row's result dict, in order, within `budget_s` seconds in all. Each row runs in a
    child process `python script --row=NAME *child_args` (its own device memory peak and no
    state left by earlier rows; a crash or a hang costs only that row), or in this process
    through `measure(row)` when given. Rows past the budget are reported as skipped; each
    result also goes to stderr as it comes, so a log keeps what a killed run had measured."""
    deadline, results = time.monotonic() + budget_s, []
    for row in rows:
        left = deadline - time.monotonic()
        if left < 5:
            result = {"name": row.name, "error": "skipped: the time budget is spent"}
        elif measure is not None:
            try:
                result = measure(row)
            except Exception as e:  # one failing row must not lose the others' figures
                result = {"name": row.name, "error": f"{type(e).__name__}: {e}"[:300]}
        else:
            result = _run_child([sys.executable, script, f"--row={row.name}", *child_args],
                                row.name, left)
        results.append(result)
        print(RESULT_PREFIX + json.dumps(result), file=sys.stderr, flush=True)
    return results


def _run_child(cmd: list[str], name: str, timeout: float) -> dict:
    """The result line a child printed, or why there is none."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out at {timeout:.0f} s (budget)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len(RESULT_PREFIX):])
    return {"name": name, "error": f"exit status {proc.returncode} (see the log)"}


def main() -> None:
    """`python benchmarks/suite_rows.py JAX.json TORCH.json`: the side-by-side table."""
    results = []
    for path in sys.argv[1:3]:
        if not os.path.exists(path):
            print(f"no side-by-side table: {path} was not written (see its log)")
            return
        with open(path) as f:
            results.append(json.load(f)["rows"])
    print(comparison_table(*results))


if __name__ == "__main__":
    main()
