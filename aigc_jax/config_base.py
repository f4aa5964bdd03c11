"""The config keys every variant has (DESIGN.md); `configs/<method>.py` start from `base_config`."""

import ml_collections


def base_config(method: str) -> ml_collections.ConfigDict:
    """A ConfigDict with the shared keys and their defaults; methods add their own."""
    c = ml_collections.ConfigDict()
    c.method = method
    c.seed = 0
    c.num_samples = 64  # size of the periodic sample grid

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # digits | idx | folder | text | a tfds name
    c.data.path = ""  # folder or file for idx / folder / text sources
    c.data.image_size = 0  # resize (0: keep the source size)
    c.data.crop = 0  # centre crop side before resizing (0: largest square)
    c.data.pad = 0  # zero padding on each side after resizing
    c.data.random_flip = False
    c.data.binarize = "none"  # none | static | dynamic
    c.data.holdout_fraction = 0.0  # carve train/test from one source split
    c.data.source_split = "train"  # which source split `holdout_fraction` carves
    c.data.tfds_data_dir = ""
    c.data.pipeline = "memory"  # memory (whole split in host memory) | grain (streaming)
    c.data.num_workers = 0  # grain: worker processes building batches (0: threads in-process)
    c.data.prefetch = 2  # grain: batches transferred to the device ahead of the step
    c.data.bad_images = "stop"  # grain, image folders: stop | skip (counted) an unreadable file

    c.model = ml_collections.ConfigDict()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # adam | adamw | sgd
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "constant"  # constant | cosine | linear | piecewise
    c.optimizer.warmup_steps = 0
    c.optimizer.min_lr = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip = 0.0  # global-norm clipping (0: off)
    c.optimizer.grad_accum_steps = 1
    c.optimizer.boundaries = (0,)  # piecewise schedule: steps where the rate is multiplied
    c.optimizer.decay_factor = 1.0

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128
    c.train.num_steps = 1000
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.sample_every = 500
    c.train.keep_checkpoints = 3
    c.train.async_checkpoint = True
    c.train.ema_decay = 0.999
    c.train.nonfinite_policy = "stop"  # stop | skip
    c.train.tensorboard = True
    c.train.stop_after = 0  # stop (with a checkpoint) at this step, schedule unchanged (0: off)

    c.parallel = ml_collections.ConfigDict()
    c.parallel.fsdp = 1  # devices per parameter shard; 1 = pure data parallel

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256
    c.eval.num_batches = 0  # periodic eval: batches of the test split (0: all)
    c.eval.final_max_examples = 0  # --mode=eval: test examples (0: all; whole batches)

    # Other trained runs used frozen, by role (aigc_jax/components.py); a family's config adds
    # one `component()` entry per role its method takes.
    c.components = ml_collections.ConfigDict()
    # Warm start: trainable parameters (and EMA) from another run, on a fresh start only.
    c.init_from = ml_collections.ConfigDict()
    c.init_from.workdir = ""
    c.init_from.step = 0  # 0: newest checkpoint
    c.init_from.weights = "ema"  # ema | params
    c.init_from.name_map = ""  # "this/prefix=source/prefix,...": empty means identical paths
    c.init_from.hf = ""  # a transformers GPT-2 / diffusers AutoencoderKL directory: pretrained/
    return c


def component() -> ml_collections.ConfigDict:
    """A `config.components.<role>` entry: a trained run's workdir (empty: not used), its
    checkpoint step (0: newest) and which weights (ema | params)."""
    spec = ml_collections.ConfigDict()
    spec.workdir = ""
    spec.step = 0
    spec.weights = "ema"
    return spec


def captioned_images(data: ml_collections.ConfigDict, image_size: int = 32) -> None:
    """Point `data` at the captioned digits as images only (first stages, unconditional GANs):
    digit glyphs at `image_size`, every template's compositions, 50,000 / 1,000 examples."""
    data.name = "captioned_digits"
    data.image_size = image_size
    data.glyphs = "digits"
    data.hold_out_templates = False  # no caption is held out: the captions are not used
    data.num_train_examples = 50_000
    data.num_test_examples = 1000
