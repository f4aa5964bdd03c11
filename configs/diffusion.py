"""Diffusion (DDPM, improved DDPM, DDIM) configs: `--config=configs/diffusion.py:<variant>`.

Variants: digits (offline CPU default), digits_cond (class-conditional, guidance),
digits_latent (in the latent space of a digits VAE run: a two-stage recipe), mnist,
mnist_idx (MNIST IDX files at --config.data.path), fashion_mnist, cifar10 (Ho et al.'s
35.7M-parameter model and recipe), celeba64, tiny and tiny_latent (seconds on a CPU: tests).
bfloat16 compute: --config.model.dtype=bfloat16.
"""

import ml_collections

from aigc_jax.config_base import base_config, component

VARIANTS = ("digits", "digits_cond", "digits_latent", "mnist", "mnist_idx", "fashion_mnist",
            "cifar10", "celeba64", "tiny", "tiny_latent")


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
    """The diffusion config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown diffusion variant {variant!r}; known variants: "
                         f"{', '.join(VARIANTS)}")
    c = base_config("diffusion")
    c.diffusion = ml_collections.ConfigDict()  # the family's own keys (DESIGN.md)
    c.diffusion.objective = "eps"  # eps | x0 | v | hybrid
    c.diffusion.loss_weighting = "none"  # none | snr | min_snr | truncated_snr
    c.diffusion.min_snr_gamma = 5.0
    c.diffusion.hybrid_lambda = 0.001  # weight of L_vlb in the hybrid objective
    c.diffusion.label_dropout = 0.0  # class-conditional: share of labels set to the null class
    c.diffusion.text = "none"  # none | frozen (components.text_encoder) | joint (trained here)
    c.diffusion.prompt_dropout = 0.0  # text: share of captions set to the empty prompt
    c.diffusion.schedule = "linear"  # linear | cosine | scaled_linear (LDM's)
    c.diffusion.num_timesteps = 1000
    c.diffusion.beta_start = 1e-4  # linear; scaled by 1000 / num_timesteps
    c.diffusion.beta_end = 0.02
    c.diffusion.cosine_s = 0.008
    c.diffusion.max_beta = 0.999
    c.diffusion.zero_terminal_snr = False  # rescale to SNR 0 at T - 1 (Lin et al.); v or x0
    c.diffusion.variance = "auto"  # auto (learned for hybrid, else fixed_small) | fixed_small |
    #                                fixed_large | learned

    c.model.arch = "unet"  # unet (images, spatial latents) | mlp (vector latents)
    c.model.mlp_width = 256  # mlp: residual MLP width and number of blocks
    c.model.mlp_blocks = 3
    c.model.ch = 128
    c.model.ch_mult = (1, 2, 2, 2)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.model.dropout = 0.1
    c.model.num_classes = 0  # > 0: class-conditional with a null class for guidance
    c.model.num_groups = 32
    c.model.transformer_depth = 1  # text: SpatialTransformer blocks at each attention site
    c.model.transformer_heads = 4
    c.model.transformer_position = "none"  # none | sincos: 2D position embedding of the tokens
    c.model.text_width = 128  # diffusion.text=joint: the text transformer trained with the UNet
    c.model.text_layers = 2
    c.model.text_heads = 4
    c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)

    c.sampler = ml_collections.ConfigDict()
    c.sampler.name = "ddpm"  # ddpm | ddim
    c.sampler.num_steps = 0  # 0: all num_timesteps; else an evenly spaced sub-sequence
    c.sampler.eta = 0.0  # DDIM noise: 0 deterministic, 1 = DDPM's posterior variance
    c.sampler.guidance_scale = 0.0  # classifier-free guidance w: (1 + w) cond - w uncond
    c.sampler.clip_x0 = True  # clip the predicted x0 to [-1, 1] at each step

    c.train.ema_decay = 0.9999
    c.optimizer.learning_rate = 2e-4
    c.optimizer.warmup_steps = 5000
    c.optimizer.grad_clip = 1.0

    c.eval.vlb_timesteps = 20  # periodic eval: stratified timesteps of the VLB estimate
    c.eval.vlb_chunk = 10  # --mode=eval full VLB: timesteps per forward batch
    c.eval.vlb_max_timesteps = 0  # --mode=eval VLB: K < T gives a stratified K-point estimate
    c.eval.final_batch_size = 100
    c.eval.extractor = "inception"  # digits | mnist | inception (sample quality, --mode=eval)
    c.eval.fid_num_samples = 50_000  # --mode=eval sample-quality N (0: off)
    c.eval.fid_batch_size = 250
    c.eval.cache_dir = ""  # reference statistics cache ("": ~/.cache/aigc_jax/reference)
    c.eval.guidance_scales = ()  # text: --mode=eval sweep (empty: sampler.guidance_scale)
    c.eval.num_prompts = 200  # text: held-out test prompts sampled in --mode=eval
    c.eval.sample_batch = 250  # text: images per compiled sampling call in --mode=eval
    c.prompts = ()  # text: default prompts of sample grids (--prompt / --prompts_file override)

    # Latent diffusion: set this to a trained run that exports the Autoencoder role (e.g. a
    # VAE run); the model then learns its latents and samples are decoded by it.
    c.components.autoencoder = component()
    # Text conditioning (configs/ldm.py): a CLIP run's text tower (diffusion.text=frozen) and,
    # for FD and CLIP score in --mode=eval, its image tower (the same workdir).
    c.components.text_encoder = component()
    c.components.image_encoder = component()

    if variant in ("digits", "digits_cond", "tiny"):
        # sklearn's 8x8 digits resized to 16x16; a 0.6M-parameter UNet (16, 32, 64 channels
        # at 16, 8, 4 pixels) trains on 2 CPU cores to recognisable digits in a few minutes.
        c.data.name = "digits"
        c.data.image_size = 16
        c.model.ch = 16
        c.model.ch_mult = (1, 2, 4)
        c.model.num_res_blocks = 1
        c.model.attn_resolutions = ()
        c.model.dropout = 0.0
        c.model.num_groups = 8
        c.sampler.name = "ddim"  # 100 DDIM steps keep the CPU sample grid to seconds
        c.sampler.num_steps = 100
        c.optimizer.learning_rate = 1e-3
        c.optimizer.schedule = "cosine"
        c.optimizer.warmup_steps = 100
        c.optimizer.min_lr = 1e-4
        c.train.batch_size = 32
        c.train.num_steps = 2000
        c.train.log_every = 100
        c.train.eval_every = 1000
        c.train.checkpoint_every = 1000
        c.train.sample_every = 1000
        c.train.ema_decay = 0.995
        c.eval.batch_size = 100  # 300 test images = 3 full batches
        c.eval.final_batch_size = 100
        c.eval.vlb_timesteps = 10
        c.eval.vlb_chunk = 20
        c.eval.extractor = "digits"
        c.eval.fid_num_samples = 2000
        c.eval.fid_batch_size = 500
        if variant == "digits_cond":
            c.model.num_classes = 10
            c.diffusion.label_dropout = 0.1
            c.sampler.guidance_scale = 1.0
    elif variant in ("mnist", "mnist_idx", "fashion_mnist"):
        # 28x28 grayscale: three levels (28, 14, 7), attention at 14.
        c.data.name = {"mnist_idx": "idx"}.get(variant, variant)
        c.model.ch = 64
        c.model.ch_mult = (1, 2, 2)
        c.model.attn_resolutions = (14,)
        c.train.batch_size = 128
        c.train.num_steps = 60_000
        c.optimizer.warmup_steps = 1000
        c.train.log_every = 500
        c.train.eval_every = 10_000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 10_000
        c.train.ema_decay = 0.9995
        c.eval.batch_size = 500
        c.eval.extractor = "mnist"
        c.eval.fid_num_samples = 10_000
    elif variant == "cifar10":
        # Ho et al. (2020): 35.7M parameters, Adam 2e-4 with 5000 warmup steps, clip 1.0,
        # batch 128, EMA 0.9999, random flips, 800k steps, T = 1000 linear, dropout 0.1.
        c.data.name = "cifar10"
        c.data.random_flip = True
        c.train.batch_size = 128
        c.train.num_steps = 800_000
        c.train.log_every = 1000
        c.train.eval_every = 50_000
        c.train.checkpoint_every = 10_000
        c.train.sample_every = 50_000
        c.eval.batch_size = 500
    elif variant == "celeba64":
        # CelebA at 64x64 (140-pixel centre crop), DDPM's recipe with four levels 64..8.
        c.data.name = "celeb_a"
        c.data.crop = 140
        c.data.image_size = 64
        c.data.random_flip = True
        c.model.ch_mult = (1, 2, 2, 4)
        c.train.batch_size = 64
        c.train.num_steps = 500_000
        c.train.log_every = 1000
        c.train.eval_every = 50_000
        c.train.checkpoint_every = 10_000
        c.train.sample_every = 25_000
        c.eval.batch_size = 200
    if variant == "tiny":
        # digits at their native 8x8, an 8-channel one-level UNet and T = 50: one level keeps
        # the train, sample and eval compiles short on a CPU (tests, smoke runs).
        c.data.image_size = 0
        c.model.ch, c.model.ch_mult, c.model.num_groups = 8, (1,), 4
        c.diffusion.num_timesteps = 50
        c.sampler.num_steps = 10
        c.optimizer.learning_rate, c.optimizer.warmup_steps = 3e-3, 10
        c.train.num_steps, c.train.batch_size = 200, 32
        c.train.log_every = 50
        c.train.eval_every = c.train.sample_every = 0
        c.train.checkpoint_every = 200
        c.train.ema_decay = 0.9
        c.train.tensorboard = False
        c.eval.vlb_timesteps, c.eval.vlb_chunk = 5, 25
        c.eval.fid_num_samples = 0
        c.num_samples = 16
    elif variant in ("digits_latent", "tiny_latent"):
        # Two stages: diffusion in the 8-d latent space of a digits VAE run
        # (--config.components.autoencoder.workdir=runs/vae_digits), a residual-MLP denoiser,
        # the VAE's data (8x8 digits, dynamically binarized); samples are decoded by the VAE.
        tiny = variant == "tiny_latent"
        c.data.name = "digits"
        c.data.binarize = "dynamic"
        c.model.arch = "mlp"
        c.model.mlp_width = 32 if tiny else 256
        c.model.mlp_blocks = 1 if tiny else 3
        c.model.dropout = 0.0
        c.diffusion.num_timesteps = 50 if tiny else 1000
        c.sampler.name = "ddim"
        c.sampler.num_steps = 10 if tiny else 100
        c.sampler.clip_x0 = False  # latents are not in [-1, 1]
        c.optimizer.learning_rate = 1e-3
        c.optimizer.schedule = "cosine"
        c.optimizer.warmup_steps = 10 if tiny else 100
        c.optimizer.min_lr = 1e-4
        c.train.batch_size = 32 if tiny else 100
        c.train.num_steps = 20 if tiny else 6000
        c.train.log_every = 10 if tiny else 250
        c.train.eval_every = 0 if tiny else 2000
        c.train.checkpoint_every = 10 if tiny else 2000
        c.train.sample_every = 0 if tiny else 2000
        c.train.ema_decay = 0.9 if tiny else 0.995
        c.train.tensorboard = not tiny
        c.eval.batch_size = 100
        c.eval.vlb_timesteps = 0  # the VLB in bits/dim is a pixel-space quantity
        c.eval.extractor = "digits"
        c.eval.fid_num_samples = 0 if tiny else 1500
        c.eval.fid_batch_size = 500
        c.num_samples = 16 if tiny else 64
    return c
