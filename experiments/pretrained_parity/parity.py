"""GPT-2 parity with PyTorch `transformers`, both ways (run by hand; not in CI).

    python experiments/pretrained_parity/parity.py --torch_python=/work/venvs/torch/bin/python

Run with this repo's interpreter (jax); `--torch_python` is a second interpreter with torch,
transformers and tokenizers (and no jax), which runs the PyTorch stages of this same file:

1. torch: a byte-level BPE tokenizer trained on tiny Shakespeare (tokenizers' ByteLevelBPE,
   saved as vocab.json + merges.txt) and a random-initialised GPT2LMHeadModel with this
   tokenizer's vocabulary, saved with save_pretrained; its logits on fixed inputs.
2. jax: import that directory with aigc_jax.pretrained, compare our logits (max |diff|), and
   fine-tune it for a few steps (configs/lm.py:finetune_shakespeare, --config.init_from.hf),
   export the run with `python -m aigc_jax.export --format=hf` and record its logits.
3. torch: GPT2LMHeadModel.from_pretrained(export) and its AutoTokenizer; compare logits with
   ours, and the tokenizer's ids with ours.

Writes results.json beside this file (and prints it). The weights are scaled up from
transformers' N(0, 0.02) to N(0, 0.2), with random LayerNorm gains and biases, so the tanh
GELU, LayerNorm epsilon and every bias matter to the logits (the exact-GELU line shows how
far a wrong option lands).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHAPE = dict(n_layer=4, n_head=4, n_embd=128, n_positions=128)
VOCAB = 1024
SEQ = 96


def torch_build(work: str, data: str) -> None:
    """Stage 1 (torch interpreter): tokenizer, random GPT-2, save_pretrained, logits."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = os.path.join(work, "hf_random")
    os.makedirs(hf, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train([data], vocab_size=VOCAB, min_frequency=2, special_tokens=["<|endoftext|>"],
              show_progress=False)
    bpe.save_model(hf)  # vocab.json + merges.txt, as GPT-2 ships them
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=bpe.get_vocab_size(), initializer_range=0.2,
                     layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0, **SHAPE)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    model.save_pretrained(hf)
    tokens = torch.randint(0, cfg.vocab_size, (4, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(tokens).logits.numpy()
    np.savez(os.path.join(work, "torch_random.npz"), tokens=tokens.numpy(), logits=logits)


def run_logits(run: str, tokens: np.ndarray) -> tuple[np.ndarray, object, int]:
    """Our logits for `tokens` from the newest checkpoint of `run`, its tokenizer, its step."""
    import jax.numpy as jnp

    from aigc_jax import components, parallel
    from aigc_jax.data import tokenizers
    from aigc_jax.models.gpt import GPT, config_from

    config, info = components.read_run(run, "parity")
    step = components.resolve_step(run, 0, "parity")
    weights = components.restore_weights(run, step, "ema", parallel.create_mesh(), "parity")
    model = GPT(config_from(config.model, int(info["vocab_size"])))
    logits = np.asarray(model.apply(weights, jnp.asarray(tokens)))
    return logits, tokenizers.from_info(info["tokenizer"]), step


def train_and_export(run: str, out: str, flags: list[str]) -> dict:
    """Train a run with our CLI, export it with `aigc_jax.export --format=hf`."""
    subprocess.run([sys.executable, "-m", "aigc_jax.main", f"--workdir={run}", *flags,
                    "--config.train.tensorboard=False"], cwd=REPO, check=True)
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    loss = [r["loss"] for r in rows if r["split"] == "train"]
    subprocess.run([sys.executable, "-m", "aigc_jax.export", f"--workdir={run}", "--format=hf",
                    f"--out={out}"], cwd=REPO, check=True, capture_output=True)
    return {"train_loss_first_last": [loss[0], loss[-1]]}


def jax_stage(work: str, data: str) -> dict:
    """Stage 2 (this repo's interpreter): import, compare, fine-tune, export; and a char-level
    run of ours (no biases, exact GELU) exported the same way."""
    import jax.numpy as jnp

    from aigc_jax import pretrained
    from aigc_jax.models.gpt import GPT, GPTConfig

    hf = os.path.join(work, "hf_random")
    ref = np.load(os.path.join(work, "torch_random.npz"))
    params, arch = pretrained.load_gpt2(hf, SHAPE["n_positions"], arch_vocab(hf))
    import datetime

    import jax

    out = {"date": datetime.date.today().isoformat(), "machine": "2-core CPU (shared)",
           "jax": jax.__version__, "shape": SHAPE, "vocab_size": arch["vocab_size"]}
    for gelu in ("tanh", "exact"):
        cfg = GPTConfig(vocab_size=arch["vocab_size"], block_size=SHAPE["n_positions"],
                        n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], n_embd=SHAPE["n_embd"],
                        bias=True, ln_epsilon=arch["ln_epsilon"], gelu=gelu)
        ours = np.asarray(GPT(cfg).apply(params, jnp.asarray(ref["tokens"])))
        key = "import_max_abs_logit_diff" if gelu == arch["gelu"] else \
            "import_max_abs_logit_diff_with_exact_gelu"
        out[key] = float(np.abs(ours - ref["logits"]).max())
    out["logit_max_abs"] = float(np.abs(ref["logits"]).max())

    text = open(data, encoding="utf-8").read()[:2000]
    runs = {
        "finetuned": ["--config=configs/lm.py:finetune_shakespeare",
                      f"--config.init_from.hf={hf}", "--config.model.block_size=64",
                      "--config.train.batch_size=8", "--config.optimizer.grad_accum_steps=1",
                      "--config.optimizer.learning_rate=3e-4", "--config.train.num_steps=10",
                      "--config.train.eval_every=10", "--config.train.sample_every=0",
                      "--config.train.checkpoint_every=10"],
        "char": ["--config=configs/lm.py:tiny", "--config.train.num_steps=60"],
    }
    for name, flags in runs.items():
        run = os.path.join(work, f"run_{name}")
        result = train_and_export(run, os.path.join(work, f"hf_export_{name}"),
                                  [*flags, f"--config.data.path={data}"])
        vocab = json.load(open(os.path.join(run, "data_info.json")))["vocab_size"]
        tokens = np.random.default_rng(2).integers(0, vocab, (4, 16))
        logits, tok, step = run_logits(run, tokens)
        np.savez(os.path.join(work, f"jax_{name}.npz"), tokens=tokens, logits=logits,
                 ids=tok.encode(text))
        out[name] = {**result, "step": step}
    return out


def arch_vocab(directory: str) -> int:
    with open(os.path.join(directory, "config.json")) as f:
        return json.load(f)["vocab_size"]


def torch_check(work: str, data: str) -> None:
    """Stage 3 (torch interpreter): load our exports in transformers, compare with ours."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    text = open(data, encoding="utf-8").read()[:2000]
    import transformers

    result = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    for name in ("finetuned", "char"):
        export_dir = os.path.join(work, f"hf_export_{name}")
        ours = np.load(os.path.join(work, f"jax_{name}.npz"))
        model = GPT2LMHeadModel.from_pretrained(export_dir).eval()
        with torch.no_grad():
            logits = model(torch.as_tensor(ours["tokens"])).logits.numpy()
        tok = AutoTokenizer.from_pretrained(export_dir)
        ids = tok(text)["input_ids"]
        result[name] = {"export_max_abs_logit_diff": float(np.abs(logits - ours["logits"]).max()),
                        "export_tokenizer_class": type(tok).__name__,
                        "export_tokenizer_ids_equal": bool(list(ids) == ours["ids"].tolist()),
                        "tokenizer_num_ids": len(ids)}
    # The original vocab.json + merges.txt, read by transformers' own GPT-2 tokenizer.
    original = AutoTokenizer.from_pretrained(os.path.join(work, "hf_random"))
    ours = np.load(os.path.join(work, "jax_finetuned.npz"))
    result["import_tokenizer_ids_equal"] = bool(
        list(original(text)["input_ids"]) == ours["ids"].tolist())
    with open(os.path.join(work, "torch_check.json"), "w") as f:
        json.dump(result, f)


def main() -> None:
    """Run the three stages (or one, with --stage, in the torch interpreter)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", default="/work/venvs/torch/bin/python")
    parser.add_argument("--data", default="/work/shared/data/tinyshakespeare/input.txt")
    parser.add_argument("--stage", default="", choices=["", "torch_build", "torch_check"])
    parser.add_argument("--work", default="")
    args = parser.parse_args()
    if args.stage:
        {"torch_build": torch_build, "torch_check": torch_check}[args.stage](args.work, args.data)
        return
    work = args.work or tempfile.mkdtemp(prefix="pretrained_parity_")
    me = [args.torch_python, os.path.abspath(__file__), f"--work={work}", f"--data={args.data}"]
    subprocess.run([*me, "--stage=torch_build"], check=True)
    result = jax_stage(work, args.data)
    subprocess.run([*me, "--stage=torch_check"], check=True)
    with open(os.path.join(work, "torch_check.json")) as f:
        checks = json.load(f)
    result["import_tokenizer_ids_equal"] = checks.pop("import_tokenizer_ids_equal")
    result.update(checks.pop("versions"))
    for name, check in checks.items():
        result[name].update(check)
    result["pass"] = bool(result["import_max_abs_logit_diff"] <= 1e-4
                          and result["import_tokenizer_ids_equal"]
                          and all(result[n]["export_max_abs_logit_diff"] <= 1e-4
                                  and result[n]["export_tokenizer_ids_equal"] for n in checks))
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main()
