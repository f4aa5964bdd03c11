"""VAE configs. Variants: digits (offline default), digits_2d, mnist, mnist_conv,
fashion_mnist, cifar10, tiny (seconds on a CPU: tests).
Pick one with `--config=configs/vae.py:<variant>`."""

import ml_collections

from aigc_jax.config_base import base_config

VARIANTS = ("digits", "digits_2d", "mnist", "mnist_conv", "fashion_mnist", "cifar10", "tiny")


def get_config(variant: str = "digits") -> ml_collections.ConfigDict:
    """The VAE config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown vae variant {variant!r}; known variants: {', '.join(VARIANTS)}")
    c = base_config("vae")
    c.vae = ml_collections.ConfigDict()  # the family's own keys (DESIGN.md)
    c.vae.objective = "elbo"  # elbo | beta_vae | iwae
    c.vae.beta = 1.0  # KL weight for beta_vae
    c.vae.num_importance_samples = 5  # k for the iwae objective
    c.vae.likelihood = "bernoulli"  # bernoulli | discretized_gaussian

    c.model.arch = "mlp"  # mlp | conv
    c.model.hidden = (200, 200)
    c.model.channels = (32, 64)
    c.model.latent_dim = 50
    c.model.activation = "tanh"
    c.model.dtype = "float32"  # compute dtype of hidden layers: float32 | bfloat16 (params f32)

    c.eval.iwae_k = 64  # importance samples in the periodic eval
    c.eval.nll_samples = 5000  # --mode=eval: the importance-sampled NLL estimate
    c.eval.nll_chunk = 500
    c.eval.final_batch_size = 64
    # --mode=eval sample quality of eval.fid_num_samples prior samples (--num_samples; 0: off).
    c.eval.extractor = "inception"  # digits | mnist | inception (aigc_jax.evaluation)
    c.eval.fid_num_samples = 0
    c.eval.fid_batch_size = 500
    c.eval.cache_dir = ""  # reference statistics cache ("": ~/.cache/aigc_jax/reference)

    if variant in ("digits", "digits_2d", "tiny"):
        # sklearn's 8x8 digits, dynamically binarized: trains in about a minute on 2 CPU cores.
        c.data.name = "digits"
        c.data.binarize = "dynamic"
        c.model.hidden = (256, 256)
        c.model.latent_dim = 2 if variant == "digits_2d" else 8
        c.optimizer.learning_rate = 1e-3
        c.optimizer.schedule = "cosine"
        c.optimizer.warmup_steps = 100
        c.optimizer.min_lr = 1e-4
        c.train.batch_size = 100
        c.train.num_steps = 6000
        c.train.log_every = 250
        c.train.eval_every = 1000
        c.train.checkpoint_every = 1000
        c.train.sample_every = 2000
        c.train.ema_decay = 0.995
        c.eval.batch_size = 100  # 300 test images = 3 full batches
        c.eval.final_batch_size = 100
        c.eval.extractor = "digits"
    elif variant in ("mnist", "mnist_conv", "fashion_mnist"):
        # Burda et al. (2016), one stochastic layer: 784-200-200-50 tanh MLPs, Bernoulli
        # likelihood, dynamic binarization, Adam (eps 1e-4), batch 20 and their learning-rate
        # staircase: 3^i epochs at 1e-3 * 10^(-i/7) for i = 0..7 (3,280 epochs).
        c.data.name = "fashion_mnist" if variant == "fashion_mnist" else "mnist"
        c.data.binarize = "dynamic"
        c.optimizer.eps = 1e-4
        c.train.batch_size = 20
        steps_per_epoch = 60000 // 20
        epochs = [3**i for i in range(8)]
        c.optimizer.schedule = "piecewise"
        c.optimizer.boundaries = tuple(steps_per_epoch * sum(epochs[: i + 1]) for i in range(7))
        c.optimizer.decay_factor = 10 ** (-1 / 7)
        c.train.num_steps = steps_per_epoch * sum(epochs)
        c.train.log_every = 1000
        c.train.eval_every = 60000
        c.train.checkpoint_every = 30000
        c.train.sample_every = 60000
        c.train.ema_decay = 0.0  # Burda et al. report the raw weights
        c.eval.batch_size = 500
        c.eval.extractor = "mnist"
        if variant == "mnist_conv":
            c.model.arch = "conv"
            c.model.activation = "swish"
            c.model.channels = (32, 64)
            c.optimizer.schedule = "cosine"
            c.optimizer.learning_rate = 1e-3
            c.train.batch_size = 128
            c.train.num_steps = 100_000
            c.train.ema_decay = 0.999
    elif variant == "cifar10":
        c.data.name = "cifar10"
        c.data.random_flip = True
        c.vae.likelihood = "discretized_gaussian"
        c.model.arch = "conv"
        c.model.activation = "swish"
        c.model.channels = (64, 128, 256)
        c.model.latent_dim = 128
        c.optimizer.learning_rate = 5e-4
        c.optimizer.schedule = "cosine"
        c.optimizer.warmup_steps = 1000
        c.train.batch_size = 128
        c.train.num_steps = 200_000
        c.train.log_every = 500
        c.train.eval_every = 10_000
        c.train.checkpoint_every = 10_000
        c.train.sample_every = 10_000
        c.eval.batch_size = 500
        c.eval.nll_samples = 1000
        c.eval.nll_chunk = 100
    if variant == "tiny":
        # The digits VAE shrunk to seconds of CPU training: tests and smoke runs.
        c.model.hidden = (64,)
        c.train.num_steps = 60
        c.train.batch_size = 50
        c.train.log_every = 10
        c.train.eval_every = 60
        c.train.checkpoint_every = 20
        c.train.sample_every = 60
        c.train.tensorboard = False
        c.optimizer.warmup_steps = 5
        c.eval.iwae_k = 8
        c.eval.nll_samples = 40
        c.eval.nll_chunk = 20
        c.num_samples = 16
    return c
