"""CLIP / SigLIP configs (method "contrastive"). Variants: captioned_digits,
captioned_digits_resnet, captioned_mnist, coco, tiny.

    python -m aigc_jax.main --config=configs/contrastive.py:captioned_digits \
        --workdir=runs/clip_digits
    python -m aigc_jax.main --config=configs/contrastive.py:captioned_digits \
        --workdir=runs/clip_digits --mode=eval   # zero-shot, retrieval, linear probe

`captioned_digits` trains on this repo's offline captioned digits on a CPU; `captioned_mnist`
draws the glyphs from MNIST IDX files at data.path; `coco` is a GPU recipe on tfds
coco_captions (downloaded by tfds on your machine). Keys of the family are under `clip.*`.
"""

import ml_collections

from aigc_jax.config_base import base_config

VARIANTS = ("captioned_digits", "captioned_digits_resnet", "captioned_mnist", "coco", "tiny")


def get_config(variant: str = "captioned_digits") -> ml_collections.ConfigDict:
    """The contrastive config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown contrastive variant {variant!r}; known variants: "
                         f"{', '.join(VARIANTS)}")
    c = base_config("contrastive")
    c.data.name = "captioned_digits"
    c.data.image_size = 32  # captioned digits: 32 or 64
    c.data.glyphs = "digits"  # digits (sklearn) | mnist (IDX files at data.path)
    c.data.two_digit_fraction = 0.3
    c.data.hold_out_templates = True  # train on some templates, test on the others
    c.data.heldout_templates = (5, 10)
    c.data.num_train_examples = 50_000
    c.data.num_test_examples = 1000
    c.data.max_caption_tokens = 32  # caption files / coco: token budget (with <sot>, <eot>)
    c.data.min_word_count = 1  # caption files / coco: vocabulary = training words seen this often
    c.data.max_vocab = 0  # caption files / coco: keep the most frequent words (0: all)

    c.clip = ml_collections.ConfigDict()
    c.clip.loss = "infonce"  # infonce | siglip
    c.clip.duplicate_captions = "positive"  # identical captions in a batch: positive | negative
    c.clip.init_logit_scale = 0.0  # 0: the loss's default (log(1/0.07) InfoNCE, log 10 SigLIP)
    c.clip.max_logit_scale = 100.0  # exp(t) is clamped here (CLIP)
    c.clip.embed_dim = 128
    c.clip.image_tower = "vit"  # vit | resnet
    c.clip.patch_size = 4
    c.clip.vision_width = 128
    c.clip.vision_layers = 4
    c.clip.vision_heads = 4
    c.clip.resnet_widths = (32, 64, 128)
    c.clip.text_width = 128
    c.clip.text_layers = 4
    c.clip.text_heads = 4
    c.clip.dtype = "float32"
    # Hard-negative captions (NegCLIP): each group lists interchangeable words; every caption
    # also enters the image -> text loss with its group words swapped, as a text no image
    # matches. () turns it off.
    c.clip.hard_negative_groups = ()
    c.clip.hard_negative_copies = 1  # swapped copies of each caption (<= group size - 1 distinct)
    # Zero-shot evaluation: prompt ensembles, each template filled with every value of the
    # attributes it names besides the one being classified (averaged, normalised).
    c.clip.zero_shot_digit_templates = ("a {digit}", "the digit {digit}", "a white {digit}",
                                        "a large white {digit} in the center")
    c.clip.eval_examples = 1000  # test examples for retrieval and zero-shot attributes
    c.clip.probe_examples = 5000  # train examples for the linear probe

    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-5
    c.optimizer.b2 = 0.98  # CLIP's Adam beta2 for stability
    c.optimizer.eps = 1e-6
    c.optimizer.weight_decay = 0.1
    c.optimizer.grad_clip = 1.0
    c.train.ema_decay = 0.0  # CLIP keeps no EMA
    c.train.batch_size = 256
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.sample_every = 0
    c.eval.batch_size = 250
    c.eval.num_batches = 0

    if variant == "captioned_digits":
        # About 20 minutes on a shared 2-core CPU (BENCHMARKS.md, CLIP).
        c.clip.vision_width, c.clip.vision_layers = 64, 2
        c.clip.text_width, c.clip.text_layers = 64, 2
        c.clip.embed_dim = 64
        c.train.batch_size = 128
        c.train.num_steps = 1000
        c.train.checkpoint_every = 250
        c.train.eval_every = 250
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 50
    elif variant == "captioned_digits_resnet":
        # captioned_digits with the small ResNet image tower (its features carry digit shape:
        # linear probe 97% on plain digits vs the ViT's 69%) and one digit-swapped hard-negative
        # copy of every caption (most in-batch negatives already differ in colour, size or
        # place, so the digit word alone gets little gradient). See experiments/clip_digits.
        c.clip.image_tower = "resnet"
        c.clip.resnet_widths = (16, 32, 64)
        c.clip.vision_width, c.clip.vision_layers = 64, 2  # the vit option, as captioned_digits
        c.clip.text_width, c.clip.text_layers = 64, 2
        c.clip.embed_dim = 64
        c.clip.hard_negative_groups = ("0 1 2 3 4 5 6 7 8 9",)
        c.clip.hard_negative_copies = 1  # 9 (every other digit) measured no better
        c.train.batch_size = 128
        c.train.num_steps = 1000
        c.train.checkpoint_every = 250
        c.train.eval_every = 250
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 50
    elif variant == "captioned_mnist":
        c.data.glyphs = "mnist"
        c.data.path = "/path/to/mnist"  # folder with train-images-idx3-ubyte[.gz] etc.
        c.train.num_steps = 5000
    elif variant == "coco":
        c.data.name = "coco_captions"
        c.data.image_size = 224
        c.data.max_caption_tokens = 64
        c.data.min_word_count = 5
        c.clip.patch_size = 16
        c.clip.vision_width, c.clip.vision_layers, c.clip.vision_heads = 768, 12, 12
        c.clip.text_width, c.clip.text_layers, c.clip.text_heads = 512, 12, 8
        c.clip.embed_dim = 512
        c.clip.dtype = "bfloat16"
        c.clip.duplicate_captions = "negative"
        c.optimizer.learning_rate = 5e-4
        c.optimizer.warmup_steps = 2000
        c.optimizer.weight_decay = 0.2
        c.train.batch_size = 1024
        c.train.num_steps = 50_000
        c.train.log_every = 100
        c.train.eval_every = 5000
        c.train.checkpoint_every = 2500
        c.eval.batch_size = 500
    elif variant == "tiny":
        # Seconds on a CPU: tests and demos.
        c.data.num_train_examples = 512
        c.data.num_test_examples = 64
        c.clip.embed_dim = 16
        c.clip.patch_size = 8
        c.clip.vision_width, c.clip.vision_layers, c.clip.vision_heads = 32, 1, 2
        c.clip.resnet_widths = (8, 16)
        c.clip.text_width, c.clip.text_layers, c.clip.text_heads = 32, 1, 2
        c.clip.eval_examples = 64
        c.clip.probe_examples = 128
        c.train.batch_size = 16
        c.train.num_steps = 6
        c.train.log_every = 3
        c.train.eval_every = 6
        c.train.checkpoint_every = 6
        c.optimizer.warmup_steps = 2
        c.eval.batch_size = 32
    return c
