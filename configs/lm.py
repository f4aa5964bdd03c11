"""GPT configs (method "lm"). Variants: shakespeare_char_cpu, shakespeare_char, gpt2_small,
finetune_shakespeare, tiny.

    python -m aigc_jax.main --config=configs/lm.py:shakespeare_char_cpu --workdir=runs/gpt \
        --config.data.path=input.txt          # or --config.data.name=tiny_shakespeare (tfds)

The Shakespeare variants are nanoGPT's `config/train_shakespeare_char.py` (its README's CPU
recipe for `_cpu`); `gpt2_small` is GPT-2's 124M shape. `finetune_shakespeare` is nanoGPT's
`config/finetune_shakespeare.py`: released GPT-2 weights (`--config.init_from.hf=DIR`, a
transformers directory) fine-tuned on tiny Shakespeare with GPT-2's tokenizer.
"""

import ml_collections

from aigc_jax.config_base import base_config

VARIANTS = ("shakespeare_char_cpu", "shakespeare_char", "gpt2_small", "finetune_shakespeare",
            "tiny")


def get_config(variant: str = "shakespeare_char_cpu") -> ml_collections.ConfigDict:
    """The GPT config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown gpt variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    c = base_config("lm")
    c.prompt = "\n"  # default prompt of --mode=sample and of the periodic samples
    c.num_samples = 4
    c.peak_flops = 0.0  # FLOP/s of all devices for MFU (0: table by device kind)

    c.data.name = "text"  # text (a local file at data.path) | tiny_shakespeare | lm1b
    c.data.val_fraction = 0.1  # text files: the last 10% is the validation split (nanoGPT)
    c.data.tokenizer = "char"  # char | byte | sentencepiece | gpt2
    c.data.tokenizer_path = ""  # gpt2: tokenizer.json or vocab.json + merges.txt ("": init_from.hf)
    c.data.spm_vocab_size = 32000
    c.data.spm_cache_dir = ""  # "": spm_cache/ beside data.path, else ~/.cache/aigc_jax/spm
    c.data.spm_max_corpus_chars = 10_000_000  # SentencePiece trains on this prefix (lm1b example)
    c.data.max_examples = 0  # tfds sources: read only the first N examples (0: all)

    c.model.n_layer = 4
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 64
    c.model.dropout = 0.0
    c.model.bias = False
    c.model.ln_epsilon = 1e-5  # LayerNorm epsilon
    c.model.gelu = "exact"  # exact | tanh (GPT-2's approximation, set by init_from.hf)
    c.model.position = "learned"  # learned | rope
    c.model.rope_base = 10000.0
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
    c.model.vocab_multiple = 1  # pad the embedding to a multiple (64: GPT-2's 50257 -> 50304)
    c.model.attention_impl = ""  # "": jax's default (XLA, GPUs too) | xla | cudnn (GPU)

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-4
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.99
    c.optimizer.weight_decay = 0.1
    c.optimizer.grad_clip = 1.0

    c.train.ema_decay = 0.0  # nanoGPT keeps no EMA; eval and samples use the raw weights
    c.sampler = ml_collections.ConfigDict()
    c.sampler.max_new_tokens = 500
    c.sampler.temperature = 0.8  # 0: greedy
    c.sampler.top_k = 200  # 0: off
    c.sampler.top_p = 1.0  # 1: off
    c.sampler.no_repeat_ngram_size = 0  # 0: off

    if variant == "shakespeare_char_cpu":
        # nanoGPT README, "I only have a macbook": --device=cpu --compile=False --eval_iters=20
        # --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
        # --lr_decay_iters=2000 --dropout=0.0
        c.train.batch_size = 12
        # The same gradient as one batch of 12 (the mean over the same 12 windows), computed as
        # two scanned micro-batches of 6: XLA:CPU's step scratch for 12 rows is 45 MiB, above
        # glibc's 32 MiB mmap cap, so each step maps it afresh and page-faults on all of it
        # (~11,900 faults, ~22 ms a step on a 2-core CPU); 6 rows need 25 MiB, which malloc
        # reuses (BENCHMARKS.md, GPT).
        c.optimizer.grad_accum_steps = 2
        c.train.num_steps = 2000
        c.train.log_every = 100
        c.train.eval_every = 250
        c.train.checkpoint_every = 1000
        c.train.sample_every = 2000
        c.eval.batch_size = 12
        c.eval.num_batches = 20  # eval_iters
    elif variant == "shakespeare_char":
        c.model.n_layer, c.model.n_head, c.model.n_embd = 6, 6, 384
        c.model.block_size = 256
        c.model.dropout = 0.2
        c.train.batch_size = 64
        c.train.num_steps = 5000
        c.train.log_every = 100
        c.train.eval_every = 250
        c.train.checkpoint_every = 1000
        c.train.sample_every = 5000
        c.eval.batch_size = 64
        c.eval.num_batches = 200  # eval_iters
    elif variant == "gpt2_small":
        # GPT-2 124M (nanoGPT's train_gpt2.py): 12 x 768, block 1024, ~0.5M tokens per step.
        c.data.name = "lm1b"
        c.data.tokenizer = "sentencepiece"
        c.data.spm_vocab_size = 50257  # GPT-2's vocabulary size, padded to 50304 below
        c.model.vocab_multiple = 64
        c.model.n_layer, c.model.n_head, c.model.n_embd = 12, 12, 768
        c.model.block_size = 1024
        c.model.bias = True
        c.model.dtype = "bfloat16"
        c.optimizer.learning_rate = 6e-4
        c.optimizer.min_lr = 6e-5
        c.optimizer.warmup_steps = 2000
        c.optimizer.b2 = 0.95
        c.optimizer.grad_accum_steps = 5  # 480 = 5 micro-batches of 96 (12 per GPU on 8)
        c.train.batch_size = 480
        c.train.num_steps = 600_000
        c.train.log_every = 10
        c.train.eval_every = 1000
        c.train.checkpoint_every = 1000
        c.train.sample_every = 5000
        c.eval.batch_size = 96
        c.eval.num_batches = 25
        c.sampler.max_new_tokens = 256
    elif variant == "finetune_shakespeare":
        # nanoGPT's config/finetune_shakespeare.py: GPT-2 (there gpt2-xl) on tiny Shakespeare
        # tokenized with GPT-2's BPE, 20 iterations of 32 x 1024 tokens at a constant 3e-5,
        # evaluating every 5. The model's shape comes from init_from.hf's config.json.
        c.data.tokenizer = "gpt2"
        c.model.block_size = 1024
        c.model.bias = True
        c.model.gelu = "tanh"
        c.optimizer.learning_rate = 3e-5
        c.optimizer.schedule = "constant"
        c.optimizer.warmup_steps = 0
        c.optimizer.b2 = 0.95  # nanoGPT train.py's default
        c.optimizer.grad_accum_steps = 32  # nanoGPT: batch 1 x 32 accumulation steps
        c.train.batch_size = 32
        c.train.num_steps = 20
        c.train.log_every = 1
        c.train.eval_every = 5
        c.train.checkpoint_every = 20
        c.train.sample_every = 20
        c.eval.batch_size = 8
        c.eval.num_batches = 5  # eval_iters 40 windows
        c.sampler.max_new_tokens = 200
    elif variant == "tiny":
        # Seconds on a CPU: tests and demos.
        c.model.n_layer, c.model.n_head, c.model.n_embd = 2, 2, 32
        c.model.block_size = 16
        c.train.batch_size = 8
        c.train.num_steps = 60
        c.train.log_every = 20
        c.train.eval_every = 30
        c.train.checkpoint_every = 30
        c.train.sample_every = 0
        c.optimizer.warmup_steps = 5
        c.eval.batch_size = 8
        c.eval.num_batches = 4
        c.sampler.max_new_tokens = 24
    return c
