"""DALL-E prior configs (method "dalle"). Variants: captioned_digits, captioned_mnist, tiny.

The whole recipe on a CPU (README, "DALL-E in miniature"): a VQ tokenizer, a CLIP reranker,
then the prior over [caption tokens ; 8x8 codes]:

    python -m aigc_jax.main --config=configs/autoencoder.py:captioned_digits_vq \
        --workdir=runs/vq_captioned
    python -m aigc_jax.main --config=configs/contrastive.py:captioned_digits \
        --workdir=runs/clip_digits
    python -m aigc_jax.main --config=configs/dalle.py:captioned_digits --workdir=runs/dalle \
        --config.components.autoencoder.workdir=runs/vq_captioned \
        --config.components.text_encoder.workdir=runs/clip_digits \
        --config.components.image_encoder.workdir=runs/clip_digits
    python -m aigc_jax.main --config=configs/dalle.py:captioned_digits --workdir=runs/dalle \
        --mode=eval                                    # bits/token, reranking table, FD
    python -m aigc_jax.main --config=configs/dalle.py:captioned_digits --workdir=runs/dalle \
        --mode=sample --num_samples=16 --prompt="a large red 3 in the center"

Model keys are the GPT family's (`model.*`, configs/lm.py; block_size follows from the
layout); the family's own keys are under `dalle.*`.
"""

import ml_collections

from aigc_jax.config_base import base_config, component

VARIANTS = ("captioned_digits", "captioned_mnist", "tiny")


def get_config(variant: str = "captioned_digits") -> ml_collections.ConfigDict:
    """The DALL-E prior config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown dalle variant {variant!r}; known variants: "
                         f"{', '.join(VARIANTS)}")
    c = base_config("dalle")
    c.prompt = "a large red 3 in the center"  # --mode=sample's default prompt
    c.num_samples = 16
    c.peak_flops = 0.0

    c.data.name = "captioned_digits"
    c.data.image_size = 32
    c.data.glyphs = "digits"  # digits (sklearn) | mnist (IDX files at data.path)
    c.data.two_digit_fraction = 0.3
    c.data.hold_out_templates = True  # train on some templates, evaluate on the others
    c.data.heldout_templates = (5, 10)
    c.data.num_train_examples = 50_000
    c.data.num_test_examples = 1000

    c.components.autoencoder = component()  # a VQ/FSQ run: the image tokenizer
    c.components.text_encoder = component()  # the CLIP run (contrastive): reranking
    c.components.image_encoder = component()  # the same CLIP run

    m = c.model  # the GPT's keys (models/gpt.py)
    m.n_layer, m.n_head, m.n_embd = 4, 4, 128
    m.block_size = 0  # set by the layout: text tokens + image codes - 1
    m.dropout = 0.0
    m.bias = False
    m.ln_epsilon = 1e-5
    m.gelu = "exact"
    m.position = "learned"  # one learned embedding per slot of the fixed layout
    m.rope_base = 10000.0
    m.dtype = "float32"
    m.vocab_multiple = 1
    m.attention_impl = ""

    c.dalle = ml_collections.ConfigDict()
    c.dalle.text_weight = 1.0  # DALL-E's 1:7 text:image cross-entropy weights
    c.dalle.image_weight = 7.0
    c.dalle.prompt_dropout = 0.1  # captions replaced by the empty prompt (guidance needs > 0)

    c.sampler = ml_collections.ConfigDict()
    c.sampler.temperature = 1.0
    c.sampler.top_k = 0  # 0: off
    c.sampler.top_p = 1.0  # 1: off
    c.sampler.guidance_scale = 0.0  # w: (1 + w) logits(prompt) - w logits(empty); 0: off

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-4
    c.optimizer.b2 = 0.99
    c.optimizer.weight_decay = 0.1
    c.optimizer.grad_clip = 1.0
    c.train.ema_decay = 0.0  # as the GPT family: eval and samples use the raw weights
    c.train.batch_size = 32
    c.train.num_steps = 2000  # ~25 minutes on a shared 2-core CPU
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.train.checkpoint_every = 500
    c.train.sample_every = 0
    c.eval.batch_size = 100
    c.eval.num_batches = 2
    c.eval.rerank_candidates = (1, 8, 32)  # N candidates per prompt, best by CLIP
    c.eval.num_prompts = 200  # held-out test prompts in the reranking evaluation
    c.eval.sample_batch = 512  # sequences per compiled sampling call

    if variant == "captioned_mnist":
        c.data.glyphs = "mnist"
        c.data.path = "/path/to/mnist"  # folder with train-images-idx3-ubyte[.gz] etc.
        c.train.num_steps = 10_000
    elif variant == "tiny":
        # Seconds on a CPU: tests and demos (with tiny VQ and CLIP runs as components).
        c.data.num_train_examples = 256
        c.data.num_test_examples = 32
        m.n_layer, m.n_head, m.n_embd = 2, 2, 32
        c.train.batch_size = 8
        c.train.num_steps = 6
        c.train.log_every = 3
        c.train.eval_every = 0
        c.train.checkpoint_every = 6
        c.train.tensorboard = False
        c.optimizer.warmup_steps = 2
        c.eval.batch_size = 16
        c.eval.num_batches = 1
        c.eval.rerank_candidates = (1, 2, 4)
        c.eval.num_prompts = 4
        c.eval.sample_batch = 16
    return c
