"""StyleGAN2 configs (Karras et al., 2020, config F). Variants: mnist32 (MNIST IDX files at
--config.data.path, 28x28 padded to 32, the 9k/1k split of configs/autoencoder.py, sized for
~15 minutes on a 2-core CPU; it mode-collapses there, see experiments/stylegan2_mnist/),
captioned_digits (32x32 RGB, unconditional), celeba64 and ffhq256 (paper-shaped, for GPUs),
tiny (seconds on CPU, tests).

    python -m aigc_jax.main --config=configs/stylegan2.py:mnist32 --workdir=runs/sg2 \\
        --config.data.path=/path/to/mnist
    ... --mode=sample --config.sampler.truncation_psi=0.7
"""

import ml_collections

from aigc_jax.config_base import base_config, captioned_images

VARIANTS = ("mnist32", "captioned_digits", "celeba64", "ffhq256", "tiny")


def get_config(variant: str = "mnist32") -> ml_collections.ConfigDict:
    """The StyleGAN2 config for `variant` (one of VARIANTS)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown stylegan2 variant {variant!r}; expected one of {VARIANTS}")
    c = base_config("stylegan2")
    c.loss = "non_saturating"  # the paper's logistic loss (aigc_jax/methods/gan/losses.py)
    c.fixed_noise_seed = 0  # latents and noise of the sample grids and figures

    m = c.model
    m.z_dim = 512
    m.w_dim = 512
    m.mapping_layers = 8
    m.mapping_lr_mul = 0.01
    m.channel_base = 16384  # feature maps at resolution r: min(channel_base // r, channel_max)
    m.channel_max = 512
    m.mbstd_group_size = 4
    m.mbstd_num_features = 1
    m.use_noise = True  # per-pixel noise inputs with learned strengths (stochastic detail)
    m.conv_impl = "auto"  # 3x3 convs: auto (im2col matmuls on CPU, lax elsewhere) | lax | matmul

    s = c.stylegan = ml_collections.ConfigDict()
    s.r1_gamma = 10.0  # D loss += gamma / 2 * E_real ||grad D||^2 (lazy, times r1_interval)
    s.r1_interval = 16
    s.pl_weight = 2.0
    s.pl_interval = 4
    s.pl_batch_shrink = 2
    s.pl_decay = 0.01
    s.style_mixing_prob = 0.9
    s.w_avg_beta = 0.995  # tracked average w for truncation
    s.ema_kimg = 10.0  # EMA half-life of G's weights in thousands of images
    s.ema_rampup = 0.0  # > 0: half-life at most rampup x images seen (ADA); 0: off (paper)

    # Sampling (config.sampler.* may change after training: --config.sampler.truncation_psi=0.7).
    c.sampler = ml_collections.ConfigDict()
    c.sampler.truncation_psi = 1.0  # samples, eval and figures; psi > 1 extrapolates
    c.sampler.truncation_sweep = (1.0, 0.7, 0.5, 0.0)  # columns of the truncation figure
    c.sampler.mix_seeds = (0, 1)  # the two-seed mix figure: layers < crossover from the first
    c.sampler.crossover = 4

    # Adam (0, 0.99), eps 1e-8; lr and betas are corrected for the lazy regularisers.
    c.optimizer.learning_rate = 0.002
    c.optimizer.b1 = 0.0
    c.optimizer.b2 = 0.99
    c.train.ema_decay = 0.0  # unused: stylegan.ema_kimg sets the EMA decay

    c.eval.extractor = "inception"  # digits | mnist | inception (PPL: digits | mnist)
    c.eval.fid_num_samples = 10_000
    c.eval.fid_batch_size = 500
    c.eval.cache_dir = ""
    c.eval.ppl_num_samples = 10_000  # perceptual path length in W (0: off)
    c.eval.ppl_batch_size = 100
    c.eval.ppl_epsilon = 1e-4

    if variant in ("mnist32", "captioned_digits"):
        # CPU-sized: 32x32, 64 feature maps at most, 128-d w and a 4-layer mapping network (the
        # paper's 8 layers stay in the GPU variants); 2.9 it/s alone on 2 CPU cores with the
        # im2col convs (BENCHMARKS.md; 1.7 with XLA's; twice the widths ran at 0.6 with XLA's).
        m.z_dim, m.w_dim, m.mapping_layers = 128, 128, 4
        m.channel_base, m.channel_max = 512, 64  # 4, 8: 64; 16: 32; 32: 16
        s.r1_gamma = 0.1  # ADA's heuristic 2e-4 * 32^2 / 32 = 0.0064, rounded up for stability
        s.ema_kimg, s.ema_rampup = 2.0, 0.05
        c.eval.ppl_num_samples = 1000
        c.train.batch_size = 32
        c.train.num_steps = 2000
        c.train.log_every = 50
        c.train.eval_every = 500
        c.train.checkpoint_every = 250
        c.train.sample_every = 250
        c.eval.batch_size = 500
        c.eval.fid_num_samples = 1000
        if variant == "mnist32":
            c.data.name = "idx"
            c.data.path = "/work/shared/data/mnist"
            c.data.source_split, c.data.holdout_fraction = "test", 0.1  # 9,000 / 1,000
            c.data.pad = 2  # 28 -> 32
            c.eval.extractor = "mnist"
        else:
            captioned_images(c.data)
            c.eval.extractor = "mnist"  # gray, resized: digit-shape statistics only
    elif variant == "celeba64":
        # Config F widths at 64x64 (512 maps at 4..32, 256 at 64), batch 32; gamma from ADA's
        # heuristic 2e-4 * 64^2 / 32 = 0.0256; EMA 10 kimg.
        c.data.name = "celeb_a"
        c.data.image_size, c.data.crop = 64, 108
        c.data.random_flip = True
        s.r1_gamma = 0.0256
        c.optimizer.learning_rate = 0.0025
        c.train.batch_size = 32
        c.train.num_steps = 400_000
        c.train.log_every = 500
        c.train.eval_every = 25_000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 5000
        c.eval.batch_size = 500
    elif variant == "ffhq256":
        # stylegan2-ada-pytorch's `paper256` (FFHQ 256 in the ADA paper): half-width config F,
        # batch 64, lr 0.0025, gamma 1, EMA 20 kimg, mbstd group 8, 25M images.
        c.data.name = "folder"
        c.data.path = "/path/to/ffhq256"
        c.data.image_size = 256
        c.data.random_flip = True
        m.mbstd_group_size = 8
        s.r1_gamma = 1.0
        s.ema_kimg = 20.0
        c.optimizer.learning_rate = 0.0025
        c.train.batch_size = 64
        c.train.num_steps = 25_000_000 // 64
        c.train.log_every = 500
        c.train.eval_every = 25_000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 5000
        c.eval.batch_size = 250
    elif variant == "tiny":
        # sklearn's 8x8 digits, 16 feature maps, 16-d w, 2 mapping layers: seconds on a CPU.
        c.data.name = "digits"
        m.z_dim, m.w_dim, m.mapping_layers = 16, 16, 2
        m.channel_base, m.channel_max = 128, 16
        s.r1_gamma = 1.0
        s.ema_kimg, s.ema_rampup = 0.1, 0.05
        c.sampler.crossover = 2
        c.eval.ppl_num_samples = 64
        c.eval.ppl_batch_size = 32
        c.train.batch_size = 16
        c.train.num_steps = 40
        c.train.log_every = 10
        c.train.eval_every = 40
        c.train.checkpoint_every = 20
        c.train.sample_every = 40
        c.train.tensorboard = False
        c.train.async_checkpoint = False
        c.eval.batch_size = 99  # 297 test images = 3 full batches
        c.eval.extractor = "digits"
        c.eval.fid_num_samples = 200
        c.eval.fid_batch_size = 100
        c.num_samples = 16
    return c
