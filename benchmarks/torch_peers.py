"""PyTorch peers of the GPU suite: the same rows' shapes and recipes with torch.compile.

    python benchmarks/torch_peers.py --json=/tmp/torch.json      # one GPU, beside gpu_suite.py
    python benchmarks/torch_peers.py --smoke                     # any CPU: tiny shapes
    python benchmarks/suite_rows.py /tmp/jax.json /tmp/torch.json   # the side-by-side table

Not an aigc_jax dependency: needs torch, and diffusers for the DDPM rows (pure Python; on a
machine with no network bring its wheel, `pip download diffusers --no-deps`, see
BENCHMARKS.md). Without diffusers the DDPM rows say so and the GPT rows still run.

- GPT rows: `experiments/gpt_shakespeare/torch_reference.py`'s model (nanoGPT's layout) at the
  row's shape from the same config (`suite_rows.row_config`): the model and its loss compiled
  with `torch.compile`, AdamW (fused on CUDA), clipping 1.0, weight decay on matrices, bf16
  autocast where the row is bfloat16 (as nanoGPT on a GPU), attention through
  `F.scaled_dot_product_attention` (flash / cuDNN kernels, dropout included).
- DDPM rows: diffusers' `UNet2DModel` with the config of Ho et al.'s CIFAR-10 model as
  `google/ddpm-cifar10-32` ships it (built from `config.model`: 35.7M parameters), the eps
  loss at uniform timesteps of the linear schedule, Adam 2e-4, clipping 1.0, EMA 0.9999.
- fp32 rows allow TF32 matmuls and convolutions, XLA's default for float32 on Ampere and
  later GPUs.
Compile is the first step's time (torch compiles lazily); the step is the mean of steps filling
`--min_seconds` after two warm-ups, with `torch.cuda.synchronize()` around them; peak MiB is
`torch.cuda.max_memory_allocated()` (a CPU: peak RSS). Each row runs in a child process.
`--smoke` (tiny shapes, in this process) compiles with the `aot_eager` backend (dynamo and
AOTAutograd without inductor's code generation), so a CPU dry run takes seconds, not minutes.
"""

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import resource
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import suite_rows  # noqa: E402

PEERS = ("gpt2_124m", "shakespeare_char", "ddpm_cifar10_bf16", "ddpm_cifar10_fp32")


@dataclasses.dataclass
class Peer:
    """A row's PyTorch train step and what it consumes per step."""

    step: object  # batch -> loss
    batches: list
    units: int  # tokens or images per step
    unit: str
    shape: str
    params: int


MISSING_DIFFUSERS = ("diffusers is not installed: no DDPM peer (carry its wheel: "
                     "pip download diffusers --no-deps; see BENCHMARKS.md)")


def torch_reference():
    """experiments/gpt_shakespeare/torch_reference.py as a module (experiments/ is no package)."""
    path = os.path.join(suite_rows.REPO, "experiments", "gpt_shakespeare", "torch_reference.py")
    if "torch_reference" not in sys.modules:  # dynamo re-imports the model's module by name
        spec = importlib.util.spec_from_file_location("torch_reference", path)
        sys.modules["torch_reference"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["torch_reference"])
    return sys.modules["torch_reference"]


def gpt_setup(config, device: str, backend: str):
    """The Peer of a GPT row."""
    m = config.model
    vocab = 65 if config.data.tokenizer == "char" else 50257
    multiple = max(int(m.get("vocab_multiple", 1)), 1)
    vocab = -(-vocab // multiple) * multiple  # as aigc_jax's config_from pads it
    model = torch_reference().GPT(vocab, int(m.n_layer), int(m.n_head), int(m.n_embd),
                                  int(m.block_size), bool(m.bias), float(m.dropout)).to(device)
    params = list(model.parameters())
    o = config.optimizer
    opt = torch.optim.AdamW(
        [{"params": [q for q in params if q.dim() >= 2], "weight_decay": float(o.weight_decay)},
         {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}],
        lr=float(o.learning_rate), betas=(float(o.b1), float(o.b2)), fused=device == "cuda")

    def loss_of(tokens):
        logits = model(tokens[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, vocab), tokens[:, 1:].reshape(-1))

    b, t = int(config.train.batch_size), int(m.block_size)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (b, t + 1), generator=gen).to(device) for _ in range(4)]
    step = _train_step(torch.compile(loss_of, backend=backend), params, opt,
                       float(o.grad_clip), None, str(m.dtype), device)
    return Peer(step, batches, b * t, "tok", f"{b} x {t}", sum(q.numel() for q in params))


def unet2d(model_cfg, image_size: int):
    """diffusers' UNet2DModel as Ho et al.'s CIFAR-10 model (google/ddpm-cifar10-32's config)."""
    from diffusers import UNet2DModel

    channels = [int(model_cfg.ch) * int(mult) for mult in model_cfg.ch_mult]
    attn = [image_size // 2**i in tuple(model_cfg.attn_resolutions) for i in range(len(channels))]
    return UNet2DModel(
        sample_size=image_size, in_channels=3, out_channels=3,
        layers_per_block=int(model_cfg.num_res_blocks), block_out_channels=channels,
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        norm_num_groups=int(model_cfg.num_groups), norm_eps=1e-6, downsample_padding=0,
        flip_sin_to_cos=False, freq_shift=1, attention_head_dim=None,
        dropout=float(model_cfg.dropout))


def ddpm_setup(config, device: str, backend: str):
    """The Peer of a DDPM CIFAR-10 row."""
    unet = unet2d(config.model, 32).to(device)
    d = config.diffusion
    steps = int(d.num_timesteps)
    scale = 1000 / steps
    betas = torch.linspace(float(d.beta_start) * scale, float(d.beta_end) * scale, steps,
                           dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0).float().to(device)
    params = list(unet.parameters())
    o = config.optimizer
    opt = torch.optim.Adam(params, lr=float(o.learning_rate), betas=(float(o.b1), float(o.b2)),
                           eps=float(o.eps), fused=device == "cuda")
    ema = [q.detach().clone() for q in params]

    def loss_of(x0):
        t = torch.randint(0, steps, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return F.mse_loss(unet(x_t, t).sample.float(), eps)

    b = int(config.train.batch_size)
    gen = torch.Generator().manual_seed(0)
    # uint8 images scaled to [-1, 1], as aigc_jax's step does with its batches
    batches = [(torch.randint(0, 256, (b, 3, 32, 32), generator=gen).float() / 127.5 - 1)
               .to(device) for _ in range(4)]
    step = _train_step(torch.compile(loss_of, backend=backend), params, opt, float(o.grad_clip),
                       (ema, float(config.train.ema_decay)), str(config.model.dtype), device)
    return Peer(step, batches, b, "img", f"{b} x 32x32x3", sum(q.numel() for q in params))


def _train_step(loss_fn, params, opt, clip: float, ema, dtype: str, device: str):
    """One optimizer step of loss_fn(batch): autocast for bfloat16, clipping, optional EMA."""
    bf16 = dtype == "bfloat16"

    def step(batch):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(ema[0], params, 1.0 - ema[1])
        return loss

    return step


def measure(row: suite_rows.Row, smoke: bool, min_seconds: float, backend: str) -> dict:
    """Compile (first step) and time one row's PyTorch train step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_float32_matmul_precision("high")  # TF32 matmuls; cuDNN convs use TF32 already
    torch.manual_seed(0)
    config = suite_rows.row_config(row, smoke)
    if row.family == "diffusion":
        if importlib.util.find_spec("diffusers") is None:
            print(MISSING_DIFFUSERS, file=sys.stderr)
            return {"name": row.name, "error": MISSING_DIFFUSERS}
        peer = ddpm_setup(config, device, backend)
    else:
        peer = gpt_setup(config, device, backend)
    step, batches = peer.step, peer.batches

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step(batches[0])
    sync()
    compile_s = time.perf_counter() - t0
    for i in range(2):
        step(batches[i % len(batches)])
    sync()
    t0 = time.perf_counter()
    step(batches[0])
    sync()
    n = int(min(2000, max(5, min_seconds / max(time.perf_counter() - t0, 1e-6))))
    t0 = time.perf_counter()
    for i in range(n):
        step(batches[i % len(batches)])
    sync()
    step_s = (time.perf_counter() - t0) / n
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        where = f"cuda {torch.cuda.get_device_name()} x1"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        where = f"cpu {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    return {"name": row.name, "shape": peer.shape, "dtype": str(config.model.dtype),
            "params": peer.params, "compile_s": compile_s, "step_ms": 1e3 * step_s,
            "steps_timed": n, "throughput": peer.units / step_s, "unit": peer.unit,
            "peak_mib": peak, "note": f"torch.compile ({backend})", "machine": where,
            "torch": torch.__version__}


def main() -> None:
    """Run the peer rows (each in a child process unless --smoke) and print one table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes, in-process")
    p.add_argument("--only", default=",".join(PEERS), help="comma-separated row names")
    p.add_argument("--budget_s", type=float, default=300.0, help="seconds for all rows")
    p.add_argument("--min_seconds", type=float, default=0.0,
                   help="timed seconds per row (0: 3 on a GPU, 0.2 with --smoke)")
    p.add_argument("--backend", default="",
                   help="torch.compile backend (default: inductor; aot_eager with --smoke)")
    p.add_argument("--json", default="", help="also write the rows here")
    p.add_argument("--row", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    min_seconds = args.min_seconds or (0.2 if args.smoke else 3.0)
    backend = args.backend or ("aot_eager" if args.smoke else "inductor")

    def run(row: suite_rows.Row) -> dict:
        return measure(row, args.smoke, min_seconds, backend)

    if args.row:
        try:
            result = run(suite_rows.ROWS_BY_NAME[args.row])
        except Exception as e:
            traceback.print_exc()
            result = {"name": args.row, "error": f"{type(e).__name__}: {e}"[:300]}
        print(suite_rows.RESULT_PREFIX + json.dumps(result), flush=True)
        return
    if importlib.util.find_spec("diffusers") is None:
        print(MISSING_DIFFUSERS)
    rows = [r for r in suite_rows.select(args.only) if r.name in PEERS]
    child_args = [f"--min_seconds={min_seconds}", f"--backend={backend}"]
    child_args += ["--smoke"] if args.smoke else []
    results = suite_rows.run_rows(__file__, rows, child_args, args.budget_s,
                                  run if args.smoke else None)
    ok = [r for r in results if "error" not in r]
    print(f"PyTorch peers (torch {torch.__version__}) on "
          f"{ok[0]['machine'] if ok else '(no row ran)'}{', SMOKE' if args.smoke else ''}")
    print(suite_rows.markdown_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {"torch": torch.__version__, "smoke": args.smoke},
                       "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
