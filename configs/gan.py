"""GAN configs. Variants: digits (offline default), digits_cond, mnist, fashion_mnist, cifar10
(DCGAN), cifar10_sngan (ResNet SNGAN, hinge), celeba64, mnist32 (DCGAN on the MNIST IDX files,
28x28 padded to 32, the 9k/1k split of configs/stylegan2.py:mnist32), tiny (seconds on a CPU).
Pick one with `--config=configs/gan.py:<variant>`."""

import ml_collections

from aigc_jax.config_base import base_config

VARIANTS = ("digits", "digits_cond", "mnist", "fashion_mnist", "cifar10", "cifar10_sngan",
            "celeba64", "mnist32", "tiny")


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
    """The GAN config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown gan variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    c = base_config("gan")
    c.loss = "non_saturating"  # non_saturating | hinge | wgan_gp | least_squares
    c.gp_weight = 0.0  # WGAN-GP penalty weight (lambda; Gulrajani et al. use 10)
    c.r1_gamma = 0.0  # R1 penalty: D loss += gamma / 2 * E_real ||grad D||^2
    c.n_critic = 1  # D steps per G step; train.batch_size holds n_critic chunks of real images
    # Divergence alarm: fires when d_loss was "pinned" (|d_loss - previous| <= tol *
    # max(1, |previous|)) on at least `fraction` of the last `patience` steps (0: off).
    c.divergence_patience = 1000
    c.divergence_fraction = 0.8
    c.divergence_tol = 1e-4
    c.fixed_noise_seed = 0  # key of the fixed latents behind every sample grid

    c.model.arch = "dcgan"  # dcgan | sngan (32x32 ResNet)
    c.model.latent_dim = 100
    c.model.g_channels = 64  # DCGAN ngf / SNGAN G width
    c.model.d_channels = 64  # DCGAN ndf / SNGAN D width
    c.model.d_norm = "batch"  # batch (Radford et al.) | spectral (Miyato et al.) | none
    c.model.num_classes = 0  # > 0: label embedding in G, projection D (must match the data)
    c.model.embed_dim = 50  # DCGAN G label-embedding size
    c.model.min_side = 4  # DCGAN: halve the side while it is even and above this (paper: 4)
    c.model.conv_impl = "auto"  # DCGAN 4x4 stride-2 layers: auto (matmul on CPU) | lax | matmul

    # Radford et al.: Adam, learning rate 2e-4, beta1 0.5. TTUR: 0 means optimizer.learning_rate.
    c.optimizer.learning_rate = 2e-4
    c.optimizer.g_learning_rate = 0.0
    c.optimizer.d_learning_rate = 0.0
    c.optimizer.b1 = 0.5
    c.optimizer.b2 = 0.999

    c.train.ema_decay = 0.999  # EMA of G's weights, used for samples and evaluation

    c.eval.extractor = "inception"  # digits | mnist | inception (aigc_jax.evaluation)
    c.eval.fid_num_samples = 10_000
    c.eval.fid_batch_size = 500
    c.eval.cache_dir = ""

    if variant in ("digits", "digits_cond", "tiny"):
        # sklearn's 8x8 digits: a few minutes on 2 CPU cores.
        c.data.name = "digits"
        c.model.latent_dim = 32
        c.model.min_side = 2  # 8 -> 4 -> 2: two stride-2 stages in G and D
        c.model.g_channels = 64
        c.model.d_channels = 32
        c.model.num_classes = 10 if variant == "digits_cond" else 0
        c.train.batch_size = 64
        c.train.num_steps = 3000
        c.train.log_every = 100
        c.train.eval_every = 1000
        c.train.checkpoint_every = 1000
        c.train.sample_every = 500
        c.train.ema_decay = 0.99
        c.divergence_patience = 200
        c.eval.batch_size = 99  # 297 test images = 3 full batches
        c.eval.extractor = "digits"
        c.eval.fid_num_samples = 1500
    elif variant in ("mnist", "fashion_mnist"):
        # DCGAN at 28x28 (7 -> 14 -> 28), Radford et al.'s optimiser, batch 128.
        c.data.name = variant
        c.train.batch_size = 128
        c.train.num_steps = 20_000
        c.train.log_every = 200
        c.train.eval_every = 5000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 1000
        c.eval.batch_size = 500
        c.eval.extractor = "mnist"
    elif variant == "mnist32":
        # DCGAN at 32x32 (4 -> 8 -> 16 -> 32) on the MNIST IDX files, the data and split of
        # configs/stylegan2.py:mnist32 (its equal-wall-time baseline); Radford et al.'s Adam.
        c.data.name = "idx"
        c.data.path = "/work/shared/data/mnist"
        c.data.source_split, c.data.holdout_fraction = "test", 0.1  # 9,000 / 1,000
        c.data.pad = 2  # 28 -> 32
        c.train.batch_size = 64
        c.train.num_steps = 20_000
        c.train.log_every = 200
        c.train.eval_every = 0
        c.train.checkpoint_every = 1000
        c.train.sample_every = 1000
        c.eval.batch_size = 500
        c.eval.extractor = "mnist"
        c.eval.fid_num_samples = 1000
    elif variant == "cifar10":
        # DCGAN (Radford et al.) on 32x32: Adam 2e-4, beta1 0.5, batch 64, z of 100 dims.
        c.data.name = "cifar10"
        c.train.batch_size = 64
        c.train.num_steps = 100_000
        c.train.log_every = 500
        c.train.eval_every = 10_000
        c.train.checkpoint_every = 10_000
        c.train.sample_every = 5000
        c.eval.batch_size = 500
    elif variant == "cifar10_sngan":
        # Miyato et al. (2018), ResNet, setting C: hinge loss, Adam 2e-4, beta1 0, beta2 0.9,
        # n_dis 5, batch 64 per D step (so 5 x 64 real images per iteration), 50k G updates.
        c.data.name = "cifar10"
        c.loss = "hinge"
        c.n_critic = 5
        c.model.arch = "sngan"
        c.model.latent_dim = 128
        c.model.g_channels = 256
        c.model.d_channels = 128
        c.model.d_norm = "spectral"
        c.optimizer.b1 = 0.0
        c.optimizer.b2 = 0.9
        c.train.batch_size = 64 * 5
        c.train.num_steps = 50_000
        c.train.ema_decay = 0.9999
        c.train.log_every = 500
        c.train.eval_every = 10_000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 5000
        c.eval.batch_size = 500
    elif variant == "celeba64":
        # DCGAN at 64x64 on CelebA (108 centre crop, resized), batch 128 as in Radford et al.
        c.data.name = "celeb_a"
        c.data.crop = 108
        c.data.image_size = 64
        c.train.batch_size = 128
        c.train.num_steps = 50_000
        c.train.log_every = 500
        c.train.eval_every = 10_000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 2500
        c.eval.batch_size = 500
    if variant == "tiny":
        # The digits DCGAN with small widths and one stride-2 stage: seconds on a CPU (tests).
        c.model.g_channels = 32
        c.model.d_channels = 32
        c.model.min_side = 4  # one stride-2 stage: the fastest program to compile
        c.train.num_steps = 200
        c.train.log_every = 50
        c.train.eval_every = 200
        c.train.checkpoint_every = 100
        c.train.sample_every = 200
        c.train.tensorboard = False
        c.train.async_checkpoint = False
        c.num_samples = 16
    return c
