"""The same recipe in PyTorch, on the batches aigc_jax draws: is a loss gap ours or the recipe's?

    pip install torch --index-url https://download.pytorch.org/whl/cpu   # not an aigc_jax dep
    python experiments/gpt_shakespeare/torch_reference.py --data=/tmp/gpt_torch_0.npz \
        --init=torch --seed=0

Written for this comparison from nanoGPT's published recipe (its model layout and its CPU
command line), not copied from it: pre-LayerNorm GPT without biases, 4 layers x 4 heads x 128
dims, block 64, tied embeddings, N(0, 0.02) init with residual projections scaled by
1/sqrt(2 L), exact GELU, torch's scaled_dot_product_attention; AdamW (0.9, 0.99), weight decay
0.1 on tensors with >= 2 dims, lr 1e-3 with nanoGPT's warmup (it + 1) / 101 for 100
iterations then cosine to 1e-4 at 2,000, clipping at 1.0, float32. `GPT` and `Block` take
the shape (and biases, dropout) as arguments with this recipe's as defaults, so
`benchmarks/torch_peers.py` times the same model at GPT-2's and shakespeare_char's shapes.

`--data` comes from `export_batches.py`: iteration i trains on aigc_jax's batch i. `--init=aigc`
starts from aigc_jax's initial weights for that seed (so any difference is the training math);
`--init=torch` draws torch's own (seeded with 1337 + seed, nanoGPT's convention). With
`--init=aigc` it first checks the two models agree: the largest |logit difference| on batch 0.
Prints one JSON line: the loss on the whole validation split (the windows aigc_jax's
`--mode=eval` scores) and ten draws of nanoGPT's estimator (the mean over 20 random batches of
12 validation windows), to show how far that estimator moves for one fixed model.
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_LAYER, N_HEAD, N_EMBD, BLOCK = 4, 4, 128, 64


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)); dropout as nanoGPT's (attention, residuals)."""

    def __init__(self, n_embd: int = N_EMBD, n_head: int = N_HEAD, n_layer: int = N_LAYER,
                 bias: bool = False, dropout: float = 0.0):
        super().__init__()
        self.n_embd, self.n_head, self.dropout = n_embd, n_head, dropout
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5, bias=bias)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.attn_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5, bias=bias)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        heads = [z.view(b, t, self.n_head, -1).transpose(1, 2)
                 for z in self.c_attn(self.ln_1(x)).split(d, dim=-1)]
        y = F.scaled_dot_product_attention(*heads, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.attn_proj(y.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)))))


class GPT(nn.Module):
    """tokens [B, T] -> logits [B, T, V]; the shape defaults to the CPU recipe's."""

    def __init__(self, vocab_size: int, n_layer: int = N_LAYER, n_head: int = N_HEAD,
                 n_embd: int = N_EMBD, block_size: int = BLOCK, bias: bool = False,
                 dropout: float = 0.0):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, n_layer, bias, dropout)
                                    for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5, bias=bias)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def load_aigc(self, data) -> None:
        """Copy aigc_jax's initial parameters (flax kernels are [in, out]: transposed here)."""
        def get(path):
            return torch.from_numpy(np.asarray(data["param:" + path]))
        with torch.no_grad():
            self.wte.weight.copy_(get("wte/embedding"))
            self.wpe.weight.copy_(get("wpe/embedding"))
            self.ln_f.weight.copy_(get("ln_f/scale"))
            for i, blk in enumerate(self.blocks):
                h = f"h_{i}/"
                blk.ln_1.weight.copy_(get(h + "ln_1/scale"))
                blk.ln_2.weight.copy_(get(h + "ln_2/scale"))
                blk.c_attn.weight.copy_(get(h + "attn/c_attn/kernel").T)
                blk.attn_proj.weight.copy_(get(h + "attn/c_proj/kernel").T)
                blk.c_fc.weight.copy_(get(h + "mlp/c_fc/kernel").T)
                blk.mlp_proj.weight.copy_(get(h + "mlp/c_proj/kernel").T)


def learning_rate(it: int, peak=1e-3, floor=1e-4, warmup=100, total=2000) -> float:
    """nanoGPT's schedule: linear warmup (it + 1) / (warmup + 1), then cosine to `floor`."""
    if it < warmup:
        return peak * (it + 1) / (warmup + 1)
    ratio = (it - warmup) / (total - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (peak - floor)


def main() -> None:
    """Train 2,000 iterations on the exported batches; print the validation losses."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help=".npz from export_batches.py")
    p.add_argument("--init", choices=("aigc", "torch"), default="torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="0: all exported batches (2,000)")
    args = p.parse_args()

    torch.manual_seed(1337 + args.seed)
    data = np.load(args.data)
    vocab = int(data["vocab_size"])
    model = GPT(vocab)
    if args.init == "aigc":
        model.load_aigc(data)
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [q for q in params if q.dim() >= 2], "weight_decay": 0.1},
                             {"params": [q for q in params if q.dim() < 2], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    batches = torch.from_numpy(data["batches"].astype(np.int64))[:args.steps or None]
    logit_diff = None
    if args.init == "aigc":  # the same function as aigc_jax's model, before any training?
        with torch.no_grad():
            logits0 = model(batches[0, :, :-1]).numpy()
        logit_diff = float(np.abs(logits0 - data["initial_logits"]).max())

    def loss_of(tokens: torch.Tensor) -> torch.Tensor:
        logits = model(tokens[:, :-1])
        return F.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))

    start, loss = time.perf_counter(), None
    for it in range(len(batches)):
        for group in opt.param_groups:
            group["lr"] = learning_rate(it)
        loss = loss_of(batches[it])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    ms_per_iter = 1e3 * (time.perf_counter() - start) / max(len(batches), 1)

    model.eval()
    windows = torch.from_numpy(data["val_windows"].astype(np.int64))
    stream = torch.from_numpy(data["val_stream"].astype(np.int64))
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        whole = sum(loss_of(windows[i:i + 128]).item() * len(windows[i:i + 128])
                    for i in range(0, len(windows), 128)) / len(windows)
        estimates = []
        for _ in range(10):
            starts = [torch.randint(len(stream) - BLOCK, (12,), generator=gen) for _ in range(20)]
            estimates.append(float(np.mean([
                loss_of(torch.stack([stream[s:s + BLOCK + 1] for s in ix])).item()
                for ix in starts])))
    print(json.dumps({
        "data": args.data, "init": args.init, "seed": args.seed, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "steps": len(batches),
        "initial_logits_max_abs_diff_vs_aigc_jax": logit_diff,
        "final_train_loss": round(loss.item(), 4) if len(batches) else None,
        "val_loss_whole_split": round(whole, 4),
        "nanogpt_estimator_20x12": [round(e, 4) for e in estimates],
        "ms_per_iter": round(ms_per_iter, 1)}))


if __name__ == "__main__":
    main()
