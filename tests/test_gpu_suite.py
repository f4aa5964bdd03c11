"""The GPU benchmark suite: its CPU smoke run end to end, and the table and budget logic."""

import json
import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, REPO)
from benchmarks import suite_rows  # noqa: E402


def test_smoke_run_measures_rows_in_child_processes(tmp_path):
    out = tmp_path / "jax.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "gpu_suite.py"), "--smoke",
           "--isolate", "--only=gpt2_124m,vae_digits", "--peak_tflops=1",
           "--min_seconds=0.05", f"--json={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["name"] for r in rows] == ["gpt2_124m", "vae_digits"]
    gpt, vae = rows
    assert "error" not in gpt and "error" not in vae, rows
    # the smoke shapes, not the paper's: 2 windows of 32 tokens, GPT-2's padded vocabulary
    assert gpt["shape"] == "2 x 32" and gpt["unit"] == "tok" and gpt["dtype"] == "bfloat16"
    assert abs(gpt["throughput"] - 64 / (gpt["step_ms"] / 1e3)) < 1e-6 * gpt["throughput"]
    assert vae["shape"] == "8 x 8x8x1" and vae["unit"] == "img"
    for r in rows:
        assert r["compile_s"] > 0 and r["step_ms"] > 0 and r["flops_per_step"] > 0
        assert abs(r["mfu"] - r["flops_per_step"] / (r["step_ms"] / 1e3) / 1e12) < 1e-9
    assert "| gpt2_124m | 2 x 32 | bfloat16 |" in proc.stdout
    assert "| vae_digits | 8 x 8x8x1 | float32 |" in proc.stdout


def test_run_rows_keeps_going_past_a_failure_and_skips_past_the_budget():
    rows = suite_rows.select("vae_digits,gan_digits")

    def measure(row):
        if row.name == "vae_digits":
            raise RuntimeError("no cuDNN")
        return {"name": row.name, "step_ms": 1.0}

    results = suite_rows.run_rows("unused.py", rows, [], 60.0, measure)
    assert results == [{"name": "vae_digits", "error": "RuntimeError: no cuDNN"},
                       {"name": "gan_digits", "step_ms": 1.0}]
    skipped = suite_rows.run_rows("unused.py", rows, [], 0.0, measure)
    assert [r["error"] for r in skipped] == ["skipped: the time budget is spent"] * 2


def test_row_config_applies_overrides_then_smoke_shapes():
    row = suite_rows.ROWS_BY_NAME["gpt2_124m"]
    full = suite_rows.row_config(row)
    assert (full.model.n_layer, full.model.block_size, full.train.batch_size) == (12, 1024, 32)
    assert full.model.attention_impl == "cudnn" and full.optimizer.grad_accum_steps == 1
    smoke = suite_rows.row_config(row, smoke=True)
    assert (smoke.model.n_layer, smoke.model.block_size) == (2, 32)
    assert smoke.model.attention_impl == ""  # XLA: no cuDNN on a CPU
    ddpm = suite_rows.row_config(suite_rows.ROWS_BY_NAME["ddpm_cifar10_bf16"])
    assert (ddpm.model.ch, ddpm.train.batch_size, ddpm.model.dtype) == (128, 128, "bfloat16")


def test_comparison_table_ratio_and_mfu_from_the_same_flops():
    jax_rows = [{"name": "gpt2_124m", "step_ms": 10.0, "mfu": 0.5, "compile_s": 20.0,
                 "peak_mib": 1000.0},
                {"name": "vae_digits", "step_ms": 1.0, "mfu": None, "compile_s": 1.0,
                 "peak_mib": 10.0}]
    torch_rows = [{"name": "gpt2_124m", "step_ms": 20.0, "compile_s": 40.0, "peak_mib": 900.0,
                   "note": "torch.compile"}]
    lines = suite_rows.comparison_table(jax_rows, torch_rows).splitlines()
    assert lines[2] == ("| gpt2_124m | 10.0 | 20.0 | 2.00 | 50.0% | 25.0% | 20.0 | 40.0 | "
                        "1,000 | 900 | torch.compile |")
    assert lines[3].startswith("| vae_digits | 1.0 | - |") and "no PyTorch peer" in lines[3]
