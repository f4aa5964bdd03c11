"""Text-conditioned latent diffusion (Rombach et al., 2022; Stable Diffusion in miniature).

The diffusion family (`method: diffusion`, configs/diffusion.py's keys) in the latent space of
a frozen KL autoencoder, conditioned on a frozen CLIP text tower's per-token states through
cross-attention, sampled with DDIM and classifier-free guidance. Variants: captioned_digits
(offline CPU default), captioned_digits_pixel (the same model on pixels: the latent-vs-pixel
comparison), captioned_mnist (MNIST glyphs from IDX files at data.path), coco_f8 (the GPU
recipe: tfds coco_captions at 256 px, a KL-f8 autoencoder), tiny (seconds: tests).

    python -m aigc_jax.main --config=configs/autoencoder.py:captioned_digits_kl --workdir=runs/ae
    python -m aigc_jax.main --config=configs/autoencoder.py:captioned_digits_kl --workdir=runs/ae \
        --mode=eval                                         # writes the latent scale factor
    python -m aigc_jax.main --config=configs/contrastive.py:captioned_digits --workdir=runs/clip
    python -m aigc_jax.main --config=configs/ldm.py:captioned_digits --workdir=runs/ldm \
        --config.components.autoencoder.workdir=runs/ae \
        --config.components.text_encoder.workdir=runs/clip \
        --config.components.image_encoder.workdir=runs/clip
    python -m aigc_jax.main --config=configs/ldm.py:captioned_digits --workdir=runs/ldm \
        --mode=sample --prompt="top left: a large red 7" --config.sampler.guidance_scale=3
    python -m aigc_jax.main --config=configs/ldm.py:captioned_digits --workdir=runs/ldm \
        --mode=eval --config.eval.guidance_scales=0,1,3

`sampler.guidance_scale` is w in (1 + w) eps(x, prompt) - w eps(x, ""): 0 is the plain
conditional model, -1 the unconditional one (Stable Diffusion's scale s is 1 + w).
`--config.diffusion.text=joint` trains a text transformer with the UNet instead of using CLIP.
"""

import importlib.util
import os

import ml_collections

VARIANTS = ("captioned_digits", "captioned_digits_pixel", "captioned_mnist", "coco_f8", "tiny")

# Held-out-template prompts (templates 5 and 10 of aigc_jax/data/captions.py) for sample grids.
PROMPTS = ("top left: a large red 7", "center: a small blue 3",
           "bottom right: a large green 0", "two digits: a large 2 left of a small 5")


def _diffusion_config() -> ml_collections.ConfigDict:
    """configs/diffusion.py's `digits` config: the family's keys and CPU-sized defaults."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "diffusion.py")
    spec = importlib.util.spec_from_file_location("configs_diffusion_for_ldm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("digits")


def get_config(variant: str = "captioned_digits") -> ml_collections.ConfigDict:
    """The text-conditioned latent diffusion config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ldm variant {variant!r}; known variants: "
                         f"{', '.join(VARIANTS)}")
    c = _diffusion_config()
    c.data.name = "captioned_digits"
    c.data.image_size = 32
    c.data.glyphs = "digits"
    c.data.two_digit_fraction = 0.3
    c.data.hold_out_templates = True  # train on 9 templates, evaluate on the held-out 2
    c.data.heldout_templates = (5, 10)
    c.data.num_train_examples = 50_000
    c.data.num_test_examples = 1000
    c.prompts = PROMPTS
    c.num_samples = 8  # per prompt

    c.diffusion.text = "frozen"  # the CLIP run's text tower (components.text_encoder)
    c.diffusion.prompt_dropout = 0.1
    c.diffusion.schedule = "scaled_linear"  # LDM / Stable Diffusion: 0.00085..0.012, T = 1000
    c.diffusion.beta_start, c.diffusion.beta_end = 0.00085, 0.012
    c.diffusion.num_timesteps = 1000

    m = c.model  # an 8x8x4 latent -> 8, 4: spatial transformers at both
    m.ch, m.ch_mult, m.num_res_blocks = 64, (1, 2), 1
    m.attn_resolutions = (8, 4)
    m.transformer_depth, m.transformer_heads = 1, 4
    m.num_groups = 32
    m.dropout = 0.0
    m.text_width, m.text_layers, m.text_heads = 64, 2, 4  # diffusion.text=joint

    c.sampler.name = "ddim"
    c.sampler.num_steps = 50
    c.sampler.eta = 0.0
    c.sampler.guidance_scale = 2.0
    c.sampler.clip_x0 = False  # latents are not in [-1, 1]

    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-4
    c.optimizer.grad_clip = 1.0
    c.train.batch_size = 32
    c.train.num_steps = 2000  # ~8 min at 4.2 steps/s on a quiet 2-core CPU (README)
    c.train.log_every = 100
    c.train.eval_every = 1000
    c.train.checkpoint_every = 500
    c.train.sample_every = 1000
    c.train.ema_decay = 0.999
    c.eval.batch_size = 100
    c.eval.num_batches = 2
    c.eval.vlb_timesteps = 0  # bits/dim is a pixel-space number; the text eval is the metric
    c.eval.fid_num_samples = 0
    c.eval.extractor = "digits"
    c.eval.guidance_scales = (0.0, 1.0, 3.0)
    c.eval.num_prompts = 200
    c.eval.sample_batch = 200

    if variant == "captioned_digits_pixel":
        # The same UNet on 32x32x3 pixels (one more level): LDM's latent-vs-pixel comparison.
        m.ch_mult = (1, 2, 2)
        m.attn_resolutions = (16, 8)
        c.diffusion.schedule = "linear"
        c.diffusion.beta_start, c.diffusion.beta_end = 1e-4, 0.02
        c.sampler.clip_x0 = True
        # --mode=eval's bits/dim: a stratified 20-timestep estimate on 200 test images, not all
        # 1,000 timesteps on the whole split (unfinished after 18 min on a 2-core CPU).
        c.eval.vlb_max_timesteps = 20
        c.eval.final_max_examples = 200
    elif variant == "captioned_mnist":
        c.data.glyphs = "mnist"
        c.data.path = "/path/to/mnist"  # folder with train-images-idx3-ubyte[.gz] etc.
        c.train.num_steps = 20_000
    elif variant == "coco_f8":
        # LDM's text-to-image model scaled to a pod: 256 px COCO captions, KL-f8 latents
        # (32x32x4: configs/autoencoder.py:imagenet_kl_f8 or SD's imported VAE), UNet ch 320,
        # mult 1-2-4-4, 2 blocks, transformers at 32, 16, 8 with 8 heads, the CLIP text tower
        # of configs/contrastive.py:coco, bf16, batch 256, lr 1e-4 (SD's), EMA 0.9999.
        c.data.name = "coco_captions"
        c.data.image_size = 256
        c.data.random_flip = True
        m.ch, m.ch_mult, m.num_res_blocks = 320, (1, 2, 4, 4), 2
        m.attn_resolutions = (32, 16, 8)
        m.transformer_heads = 8
        m.dtype = "bfloat16"
        c.optimizer.learning_rate = 1e-4
        c.optimizer.schedule = "constant"
        c.optimizer.warmup_steps = 10_000
        c.train.batch_size = 256
        c.train.num_steps = 500_000
        c.train.log_every = 500
        c.train.eval_every = 50_000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 10_000
        c.train.ema_decay = 0.9999
        c.eval.guidance_scales = (0.0, 2.0, 4.0, 6.5)
        c.prompts = ("a photo of a cat", "a red bus on a street")
    elif variant == "tiny":
        # Seconds on a CPU: with tiny autoencoder and CLIP runs as components (tests).
        c.data.num_train_examples, c.data.num_test_examples = 256, 32
        m.ch, m.ch_mult = 8, (1, 2)
        m.attn_resolutions = (4, 2)
        m.transformer_heads = 2
        m.num_groups = 4
        m.text_width, m.text_layers, m.text_heads = 16, 1, 2
        c.diffusion.num_timesteps = 50
        c.sampler.num_steps = 5
        c.num_samples = 2
        c.optimizer.warmup_steps = 2
        c.train.batch_size = 8
        c.train.num_steps = 6
        c.train.log_every = 3
        c.train.eval_every = c.train.sample_every = 0
        c.train.checkpoint_every = 6
        c.train.ema_decay = 0.9
        c.train.tensorboard = False
        c.eval.batch_size = 16
        c.eval.num_batches = 1
        c.eval.guidance_scales = (0.0, 2.0)
        c.eval.num_prompts = 8
        c.eval.sample_batch = 8
    return c
