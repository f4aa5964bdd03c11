"""First-stage autoencoders for latent models: LDM's KL autoencoder, VQ-VAE/VQGAN and FSQ.

Variants: digits (16x16, KL, offline CPU default), digits_vq, captioned_digits_vq (DALL-E's
tokenizer), captioned_digits_kl (latent diffusion's, configs/ldm.py), mnist_kl_f4 / mnist_vq_f4
(MNIST IDX files at --config.data.path, 28x28 padded to 32, 9k/1k split of the IDX test
files), celeba64 (KL-f4 on tfds celeb_a at 64x64), imagenet_kl_f4 / imagenet_kl_f8 (the
paper's recipes, for GPUs), tiny (seconds on CPU, tests).

    python -m aigc_jax.main --config=configs/autoencoder.py:mnist_kl_f4 --workdir=runs/ae \\
        --config.data.path=/path/to/mnist
"""

import ml_collections

from aigc_jax.config_base import base_config, captioned_images

VARIANTS = ("digits", "digits_vq", "captioned_digits_vq", "captioned_digits_kl", "mnist_kl_f4",
            "mnist_vq_f4", "celeba64", "imagenet_kl_f4", "imagenet_kl_f8", "tiny")


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
    """The autoencoder config for `variant` (one of VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown autoencoder variant {variant!r}; expected one of {VARIANTS}")
    c = base_config("autoencoder")
    c.data.name = "digits"
    c.data.image_size = 16

    m = c.model
    m.ch = 32
    m.ch_mult = (1, 2)  # f = 2^(len - 1)
    m.num_res_blocks = 1
    m.z_channels = 4
    m.embed_dim = 0  # latent channels after quant_conv (0: z_channels)
    m.attn_resolutions = ()  # extra attention levels besides the mid-block
    m.dropout = 0.0
    m.num_groups = 32
    m.dtype = "float32"

    a = c.autoencoder = ml_collections.ConfigDict()
    a.regularizer = "kl"  # kl | vq | fsq
    a.kl_weight = 1e-6  # LDM's default
    a.reconstruction = "l1"  # l1 | l2
    a.logvar_init = 0.0  # LDM's learnable scalar log-variance of the reconstruction term
    a.perceptual = ""  # an LPIPS-style loss name (losses.PERCEPTUAL); none ships offline
    a.perceptual_weight = 1.0
    a.codebook_size = 512
    a.beta = 0.25  # commitment
    a.codebook_weight = 1.0
    a.codebook_ema = True  # EMA codebook (decay, Laplace smoothing) instead of a learned one
    a.ema_decay = 0.99
    a.ema_eps = 1e-5
    a.dead_steps = 50  # restart codes unused for this many steps (0: never)
    a.fsq_levels = (8, 5, 5, 5)  # FSQ: 1000 codes
    a.disc_weight = 0.0  # PatchGAN weight (0: no discriminator)
    a.disc_start = 0
    a.disc_factor = 1.0
    a.disc_loss = "hinge"
    a.disc_ndf = 64
    a.disc_layers = 3
    a.disc_learning_rate = 0.0  # 0: optimizer.learning_rate

    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.train.batch_size = 64
    c.train.num_steps = 2000
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.sample_every = 0
    c.train.ema_decay = 0.0  # LDM keeps no weight EMA for its autoencoders
    c.eval.batch_size = 100
    c.eval.extractor = "digits"  # rFD features ('' turns rFD off)
    c.eval.fid_batch_size = 500
    c.eval.latent_stats_examples = 0  # train images for the latent mean/std (0: all)

    if variant == "digits_vq":
        a.regularizer = "vq"
        a.codebook_size = 64
        m.embed_dim = 16
    elif variant == "captioned_digits_vq":
        # The DALL-E prior's tokenizer (configs/dalle.py): 32x32 RGB captioned digits -> 8x8
        # codes (f = 4) from a 256-code EMA codebook; ~15 minutes on a shared 2-core CPU. L2,
        # not L1: with L1 the mostly black canvas pulled the ink towards the background (faint
        # glyphs the attribute checker could not read); the widths double at each level so the
        # 8x8 bottleneck has 64 channels at the cost of a 16-channel 32x32 level.
        captioned_images(c.data)
        a.regularizer = "vq"
        a.reconstruction = "l2"
        a.codebook_size = 256
        m.ch, m.ch_mult, m.z_channels = 16, (1, 2, 4), 16
        m.num_groups = 8
        c.train.batch_size = 32
        c.train.num_steps = 2000
        c.train.log_every = 50
        c.train.eval_every = 500
        c.train.checkpoint_every = 500
        c.eval.extractor = ""  # the digits features are for 8x8 gray images
        c.eval.latent_stats_examples = 1000  # each captioned image is rendered on demand
    elif variant == "captioned_digits_kl":
        # Latent diffusion's first stage (configs/ldm.py): 32x32 RGB captioned digits -> 8x8x4
        # KL latents (f = 4, LDM's KL-f4 shape); ~8 minutes on a shared 2-core CPU. L2 and
        # widths (1, 2, 4), as in the VQ variant: the earlier L1 / (1, 2, 2) / 800-step first
        # stage reconstructed faint blobs (19.7 dB PSNR) that no diffusion model on top could
        # turn into readable digits; this one reaches ~35 dB (experiments/ldm_guidance).
        captioned_images(c.data)
        a.reconstruction = "l2"
        m.ch, m.ch_mult, m.z_channels = 16, (1, 2, 4), 4
        m.num_groups = 8
        c.train.batch_size = 32
        c.train.num_steps = 2000
        c.train.log_every = 50
        c.train.eval_every = 1000
        c.train.checkpoint_every = 400
        c.eval.extractor = ""  # the digits features are for 8x8 gray images
        c.eval.latent_stats_examples = 5000
    elif variant in ("mnist_kl_f4", "mnist_vq_f4"):
        c.data.name = "idx"
        c.data.path = "/work/shared/data/mnist"
        c.data.source_split, c.data.holdout_fraction = "test", 0.1  # 9,000 / 1,000
        c.data.image_size = 0
        c.data.pad = 2  # 28 -> 32, so f = 4 gives 8x8 latents
        m.ch = 16  # sized for ~20 minutes on a shared 2-core CPU
        m.ch_mult = (1, 2, 2)
        m.num_groups = 8
        c.train.batch_size = 32
        c.train.num_steps = 1500
        c.train.log_every = 50
        c.train.eval_every = 500
        c.train.checkpoint_every = 500
        c.eval.extractor = "mnist"
        if variant == "mnist_kl_f4":
            m.z_channels = 3  # LDM's KL-f4 latent: 8x8x3
        else:
            a.regularizer = "vq"
            a.codebook_size = 512
            m.z_channels = 16
    elif variant == "celeba64":
        c.data.name = "celeb_a"
        c.data.image_size, c.data.crop = 64, 140
        c.data.random_flip = True
        m.ch, m.ch_mult, m.num_res_blocks, m.z_channels = 64, (1, 2, 4), 2, 3
        c.train.batch_size = 64
        c.train.num_steps = 100_000
        c.train.log_every = 500
        c.train.eval_every = 10_000
        c.train.checkpoint_every = 5000
        c.optimizer.learning_rate = 2e-4
        c.optimizer.b1, c.optimizer.b2 = 0.5, 0.9
        a.disc_weight, a.disc_start = 0.5, 50_001
        c.eval.extractor = ""  # set "inception" with weights for rFID
    elif variant in ("imagenet_kl_f4", "imagenet_kl_f8"):
        # Rombach et al. (2022), configs/autoencoder/autoencoder_kl_*: ch 128, 2 res blocks,
        # KL weight 1e-6, disc_start 50001, disc_weight 0.5, Adam(4.5e-6 x batch, 0.5, 0.9),
        # 256x256 crops. (LPIPS, weight 1, is not available offline; see losses.PERCEPTUAL.)
        c.data.name = "imagenet2012"
        c.data.image_size = 256
        m.ch, m.num_res_blocks = 128, 2
        if variant == "imagenet_kl_f4":
            m.ch_mult, m.z_channels = (1, 2, 4), 3
        else:
            m.ch_mult, m.z_channels = (1, 2, 4, 4), 4
        a.disc_weight, a.disc_start = 0.5, 50_001
        a.disc_layers = 3
        c.train.batch_size = 96  # 8 GPUs x 12 in LDM's KL-f8 logs
        c.train.num_steps = 300_000
        c.train.log_every = 1000
        c.train.eval_every = 20_000
        c.train.checkpoint_every = 5000
        c.optimizer.schedule = "constant"
        c.optimizer.warmup_steps = 0
        c.optimizer.learning_rate = 4.5e-6 * c.train.batch_size
        c.optimizer.b1, c.optimizer.b2 = 0.5, 0.9
        c.eval.batch_size = 50
        c.eval.extractor = "inception"
        c.eval.latent_stats_examples = 10_000
    elif variant == "tiny":
        m.ch, m.ch_mult, m.z_channels = 8, (1, 2), 2
        m.num_groups = 4
        a.disc_ndf, a.disc_layers = 8, 1
        a.codebook_size = 16
        c.optimizer.warmup_steps = 0
        c.train.batch_size = 16
        c.train.num_steps = 4
        c.train.log_every = 2
        c.train.eval_every = 0
        c.train.checkpoint_every = 4
        c.train.tensorboard = False
        c.eval.batch_size = 50
        c.eval.fid_batch_size = 100
        c.eval.latent_stats_examples = 200
    return c
