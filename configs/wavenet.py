"""WaveNet configs (method "wavenet"). Variants: spoken_digits, speech_commands, ljspeech_mel,
tiny.

    python -m aigc_jax.main --config=configs/wavenet.py:spoken_digits --workdir=runs/wavenet \
        --config.data.path=../shared/data/spoken_digits

`spoken_digits` is class-conditional at 8 kHz and sized for a 2-core CPU (~10 minutes with eval);
`speech_commands` the same model on tfds speech_commands at 16 kHz; `ljspeech_mel` the GPU
recipe of a mel-conditioned vocoder (a folder of LJSpeech WAVs at data.path, 22.05 kHz,
30 layers 1..512 x 3 as the paper). Keys of the model and its sampler are under
`config.wavenet`.
"""

import ml_collections

from aigc_jax.config_base import base_config

VARIANTS = ("spoken_digits", "speech_commands", "ljspeech_mel", "tiny")


def get_config(variant: str = "spoken_digits") -> ml_collections.ConfigDict:
    """The WaveNet config for `variant`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown wavenet variant {variant!r}; known variants: "
                         f"{', '.join(VARIANTS)}")
    c = base_config("wavenet")
    c.num_samples = 10  # periodic samples: one per class for class-conditional runs

    c.data.name = "wav_folder"  # wav_folder (data.path) | speech_commands | nsynth (tfds)
    c.data.sample_rate = 8000  # every clip is resampled to this rate
    c.data.window = 4001  # training window: inputs are its first T - 1 samples
    c.data.eval_window = 0  # evaluation window from the start of each clip (0: data.window)
    c.data.pad = 800  # samples of silence before and after every clip
    c.data.test_pattern = ""  # wav_folder: file names matching this regex are the test split
    c.data.holdout_fraction = 0.1  # without test_pattern: a fixed random fraction of the files
    c.data.mix_to_mono = False  # multi-channel WAVs: average the channels (else an error)
    c.data.max_examples = 0  # tfds sources: read only the first N examples (0: all)

    w = c.wavenet = ml_collections.ConfigDict()
    w.max_dilation = 512  # each stack is 1, 2, 4, ..., max_dilation
    w.repeats = 2  # stacks
    w.dilations = ()  # explicit per-layer dilations (overrides the two keys above)
    w.kernel_size = 2
    w.residual_channels = 32
    w.gate_channels = 32
    w.skip_channels = 64
    w.output = "mulaw"  # mulaw | logistic_mixture
    w.quantization_channels = 256  # mu-law: mu = 255
    w.num_mixtures = 10  # logistic_mixture components
    w.logistic_bits = 16  # logistic_mixture: the grid of 2^bits levels in [-1, 1]
    w.conditioning = "label"  # none | label (global, class embedding) | mel (local)
    w.label_dim = 16
    w.mel_bins = 80  # local conditioning: log-mel features
    w.mel_n_fft = 1024
    w.mel_hop = 256
    w.mel_fmin = 0.0
    w.mel_fmax = 0.0  # 0: sample_rate / 2
    w.cond_channels = 64
    # Local conditioning on the time since the clip's onset: sin/cos features (0: off). With a
    # class label it tells the model where it is in a word longer than its receptive field.
    w.position_dim = 0
    w.sample_lead = 0  # generation: samples of silence before the onset (position input)
    w.dtype = "float32"
    w.sample_length = 4800  # samples per generated clip
    w.temperature = 1.0

    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"
    c.optimizer.warmup_steps = 100
    c.optimizer.min_lr = 1e-4
    c.optimizer.grad_clip = 1.0
    c.train.ema_decay = 0.999
    c.eval.batch_size = 32

    if variant == "spoken_digits":
        # Accents en-029 and en-us-nyc (2 of 8, 480 clips) are held out as the test split.
        c.data.test_pattern = r"^(en-029|en-us-nyc)_"
        c.data.eval_window = 8000  # 1 s from the start of the padding covers every clip
        w.max_dilation, w.repeats = 256, 2  # 18 layers, receptive field 1,023 (128 ms)
        w.residual_channels, w.gate_channels, w.skip_channels = 32, 32, 64
        # The word (0.3-0.8 s) is 3-6x the receptive field: the label says which word, the
        # onset-time features where in it (--config.wavenet.position_dim=0: label only).
        w.position_dim = 16
        w.sample_length, w.sample_lead = 6400, 400  # 0.8 s, starting 50 ms before the onset
        c.data.window = 2001  # 250 ms windows of 8 clips: 16,000 predicted samples a step
        c.train.batch_size = 8
        c.train.num_steps = 2000  # ~8 min alone on 2 CPU cores (4.3 steps/s; BENCHMARKS.md)
        c.train.ema_decay = 0.0  # no EMA: eval and samples use the raw weights
        c.optimizer.learning_rate = 2e-3
        c.optimizer.warmup_steps = 50
        c.train.log_every = 50
        c.train.eval_every = 0  # the test NLL is computed by --mode=eval at the end
        c.train.checkpoint_every = 500
        c.train.sample_every = 0
    elif variant == "speech_commands":
        c.data.name = "speech_commands"
        c.data.sample_rate = 16000
        c.data.window = 8001
        c.data.pad = 1600
        c.data.eval_window = 19200  # a 1 s clip and its padding
        w.residual_channels, w.gate_channels, w.skip_channels = 64, 64, 128
        w.sample_length = 16000
        c.train.batch_size = 16
        c.train.num_steps = 100_000
        c.train.log_every = 100
        c.train.eval_every = 5000
        c.train.checkpoint_every = 2000
        c.train.sample_every = 10_000
        c.eval.num_batches = 20
    elif variant == "ljspeech_mel":
        # A mel-conditioned vocoder (Shen et al., 2018): 30 layers 1..512 x 3, 16-bit
        # discretised logistic mixture (Oord et al., 2018), 80 log-mel bands, hop 256.
        c.data.path = "LJSpeech-1.1/wavs"
        c.data.sample_rate = 22050
        c.data.window = 8193
        c.data.pad = 2205
        c.data.eval_window = 44100
        w.repeats = 3
        w.residual_channels, w.gate_channels, w.skip_channels = 128, 128, 256
        w.output = "logistic_mixture"
        w.conditioning = "mel"
        w.dtype = "bfloat16"
        w.sample_length = 22050
        c.num_samples = 4
        c.train.batch_size = 32
        c.train.num_steps = 300_000
        c.train.log_every = 100
        c.train.eval_every = 10_000
        c.train.checkpoint_every = 5000
        c.train.sample_every = 50_000
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 1000
        c.optimizer.min_lr = 1e-5
        c.eval.batch_size = 8
        c.eval.num_batches = 25
    elif variant == "tiny":
        # Seconds on a CPU: tests and demos (a folder of WAVs at data.path).
        c.data.sample_rate = 8000
        c.data.window = 257
        c.data.pad = 64
        c.data.eval_window = 512
        w.max_dilation, w.repeats = 16, 1
        w.residual_channels, w.gate_channels, w.skip_channels = 8, 8, 16
        w.label_dim = 4
        w.mel_bins, w.mel_n_fft, w.mel_hop, w.cond_channels = 8, 64, 16, 8
        w.sample_length = 64
        c.num_samples = 2
        c.train.batch_size = 4
        c.train.num_steps = 20
        c.train.log_every = 10
        c.train.eval_every = 10
        c.train.checkpoint_every = 10
        c.train.sample_every = 0
        c.optimizer.warmup_steps = 2
        c.eval.batch_size = 4
        c.eval.num_batches = 2
    return c
