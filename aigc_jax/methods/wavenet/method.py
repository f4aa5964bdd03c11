"""The WaveNet family: next-sample cross-entropy (mu-law) or discretised logistic mixture
likelihood, bits per sample, cached generation, WAV + log-mel spectrogram samples.

van den Oord et al. (2016), "WaveNet: A Generative Model for Raw Audio"; Paine et al. (2016),
"Fast Wavenet Generation Algorithm". Keys live under `config.wavenet` (configs/wavenet.py).
"""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from aigc_jax.data.mel import MelConfig, log_mel
from aigc_jax.distributions import discretized_logistic_mixture_log_prob
from aigc_jax.errors import UserError
from aigc_jax.methods.base import Method
from aigc_jax.methods.wavenet.quantize import linear_quantize, mu_law_encode
from aigc_jax.methods.wavenet.sampling import SampleConfig, generate
from aigc_jax.models.layers import count_params, resolve_dtype
from aigc_jax.models.wavenet import OUTPUTS, WaveNet, WaveNetConfig, dilation_stack
from aigc_jax.optim import create_optimizer, create_schedule
from aigc_jax.state import TrainState, apply_gradients, create_state, global_norm

CONDITIONING = ("none", "label", "mel")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError for impossible WaveNet settings."""
    w = config.wavenet
    for key in ("max_dilation", "repeats", "kernel_size", "residual_channels", "gate_channels",
                "skip_channels", "sample_length"):
        if int(w[key]) < 1:
            raise UserError(f"config.wavenet.{key}={w[key]} must be a positive integer.")
    if w.output not in OUTPUTS:
        raise UserError(f"config.wavenet.output={w.output!r} is unknown; expected one of "
                        f"{OUTPUTS}.")
    if w.conditioning not in CONDITIONING:
        raise UserError(f"config.wavenet.conditioning={w.conditioning!r} is unknown; expected "
                        f"one of {CONDITIONING}.")
    if w.output == "mulaw" and int(w.quantization_channels) < 2:
        raise UserError(f"config.wavenet.quantization_channels={w.quantization_channels} must "
                        "be at least 2.")
    if w.conditioning == "mel" and int(w.mel_n_fft) // 2 >= int(config.data.window) - 1:
        raise UserError(f"config.wavenet.mel_n_fft={w.mel_n_fft} needs data.window > n_fft/2 + "
                        f"1 samples; got data.window={config.data.window}.")
    if int(config.data.get("pad", 0)) < 1:
        raise UserError("config.data.pad must be >= 1: the sample before each clip is the "
                        "context of its first sample.")
    if int(w.get("position_dim", 0)) < 0 or int(w.get("position_dim", 0)) % 2:
        raise UserError(f"config.wavenet.position_dim={w.position_dim} must be 0 (off) or a "
                        "positive even number (sin/cos pairs).")
    if not 0 <= int(w.get("sample_lead", 0)) < int(w.sample_length):
        raise UserError(f"config.wavenet.sample_lead={w.sample_lead} must be in "
                        f"[0, sample_length={w.sample_length}).")
    resolve_dtype(w.dtype, "wavenet.dtype")


def model_config(config: ml_collections.ConfigDict, info: dict) -> WaveNetConfig:
    """The WaveNetConfig of `config.wavenet` for the data described by `info`."""
    w = config.wavenet
    dilations = tuple(w.dilations) if w.get("dilations") else dilation_stack(
        int(w.max_dilation), int(w.repeats))
    return WaveNetConfig(
        dilations=dilations, kernel_size=int(w.kernel_size),
        residual_channels=int(w.residual_channels), gate_channels=int(w.gate_channels),
        skip_channels=int(w.skip_channels), output=w.output,
        quantization_channels=int(w.quantization_channels), num_mixtures=int(w.num_mixtures),
        num_labels=int(info["num_classes"]) if w.conditioning == "label" else 0,
        label_dim=int(w.label_dim),
        mel_bins=int(w.mel_bins) if w.conditioning == "mel" else 0, hop=int(w.mel_hop),
        cond_channels=int(w.cond_channels), position_dim=int(w.get("position_dim", 0)),
        dtype=resolve_dtype(w.dtype, "wavenet.dtype"))


def mel_config(config: ml_collections.ConfigDict) -> MelConfig:
    """The log-mel features of local conditioning."""
    w = config.wavenet
    return MelConfig(sample_rate=int(config.data.sample_rate), n_fft=int(w.mel_n_fft),
                     hop=int(w.mel_hop), n_mels=int(w.mel_bins), fmin=float(w.mel_fmin),
                     fmax=float(w.mel_fmax))


def flops_per_sample(cfg: WaveNetConfig) -> float:
    """Training FLOPs per sample: 3 x (2 x multiply-adds) of the forward pass."""
    c, g, s = cfg.residual_channels, cfg.gate_channels, cfg.skip_channels
    cond = ((cfg.label_dim if cfg.num_labels else 0) + (cfg.cond_channels if cfg.mel_bins else 0)
            + cfg.position_dim)
    layer = cfg.kernel_size * c * 2 * g + g * c + g * s + cond * 2 * g
    return 6.0 * (len(cfg.dilations) * layer + s * s + s * cfg.out_channels)


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict | None = None) -> Method:
    """The WaveNet Method for `config` on the audio described by `info` (takes no components)."""
    del components
    w = config.wavenet
    cfg = model_config(config, info)
    model = WaveNet(cfg)
    mu = cfg.quantization_channels - 1
    bits = int(w.logistic_bits)
    mcfg = mel_config(config) if cfg.mel_bins else None
    num_steps = int(config.train.num_steps)
    tx = create_optimizer(config.optimizer, num_steps)
    schedule = create_schedule(config.optimizer, num_steps)
    ema_decay = float(config.train.ema_decay)
    window = int(info["window"])
    samples_per_step = int(config.train.batch_size) * (window - 1)
    flops_per_step = flops_per_sample(cfg) * samples_per_step
    rate = int(info["sample_rate"])
    sc = SampleConfig(length=int(w.sample_length), temperature=float(w.temperature),
                      logistic_bits=bits, sample_rate=rate, lead=int(w.get("sample_lead", 0)))
    num_classes = int(info["num_classes"])
    pad = int(info.get("pad", 0))

    def position(batch: dict, length: int) -> jax.Array | None:
        """Seconds since the clip's onset [B, length] of every input (position input only):
        input i of a window is sample offset + i of the padded clip, whose onset is `pad`."""
        if not cfg.position_dim:
            return None
        start = batch.get("offset", jnp.zeros(batch["audio"].shape[:1], jnp.int32))
        return (start[:, None] + jnp.arange(length) - pad).astype(jnp.float32) / rate

    def inputs_targets(audio: jax.Array):
        """Model inputs [B, T] (samples 0..T-1) and targets [B, T] (samples 1..T)."""
        if cfg.output == "mulaw":
            q = mu_law_encode(audio, mu)
        else:
            q = linear_quantize(audio, bits)
        return q[:, :-1], q[:, 1:]

    def nll(params, batch: dict) -> jax.Array:
        """Per-sample negative log-likelihood in nats [B, T] of the batch's targets."""
        audio = batch["audio"].astype(jnp.float32)
        x, y = inputs_targets(audio)
        label = batch["label"] if cfg.num_labels else None
        mel = log_mel(audio[:, 1:], mcfg) if mcfg else None
        out = model.apply(params, x, label, mel, position(batch, x.shape[1]))  # [B, T, out]
        if cfg.output == "mulaw":
            return optax.softmax_cross_entropy_with_integer_labels(out, y)
        return -discretized_logistic_mixture_log_prob(y, out, 2**bits)

    def loss_fn(params, batch):
        return nll(params, batch).mean()

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        audio = batch["audio"][:1].astype(jnp.float32)
        x, _ = inputs_targets(audio)
        mel = log_mel(audio[:, 1:], mcfg) if mcfg else None
        label = batch["label"][:1] if cfg.num_labels else None
        first = {k: v[:1] for k, v in batch.items()}
        params = model.init(rng, x, label, mel, position(first, x.shape[1]))
        return create_state(params, tx, jax.random.fold_in(rng, 1))

    def train_step(state: TrainState, batch: dict, frozen=None):
        del frozen
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        metrics = {"loss": loss, "bits_per_sample": loss / math.log(2.0),
                   "grad_norm": global_norm(grads), "learning_rate": schedule(state.step),
                   "tokens_per_step": jnp.asarray(samples_per_step, jnp.float32),
                   "flops_per_step": jnp.asarray(flops_per_step, jnp.float32)}
        return apply_gradients(state, grads, tx, ema_decay), metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None) -> dict:
        del rng, frozen
        weight = batch["weight"][:, 1:]  # [B, T]: the clip's own samples
        per = (nll(state.ema_params, batch) * weight).sum(-1) / jnp.maximum(weight.sum(-1), 1)
        return {"loss": per, "bits_per_sample": per / math.log(2.0)}

    def sample(state: TrainState, rng: jax.Array, num: int, labels=None, mel=None,
               frozen=None):
        """Audio float32 [num, sample_length]; labels default to 0, 1, 2, ... (mod classes);
        mel-conditioned models need `mel` [num, F, M] (silence, all -11.5, by default)."""
        del frozen
        label = None
        if cfg.num_labels:
            label = jnp.asarray(np.arange(num) % num_classes if labels is None else labels,
                                jnp.int32)
        if cfg.mel_bins and mel is None:
            mel = jnp.full((num, 1 + sc.length // cfg.hop, cfg.mel_bins), math.log(1e-5))
        return generate(model, state.ema_params, rng, label, mel, sc, num=num)

    def write_samples(samples, path_stem: str) -> list[str]:
        return write_audio_samples(np.asarray(samples), path_stem, int(info["sample_rate"]))

    logging.info("WaveNet: %d layers %s, kernel %d, receptive field %d samples (%.1f ms), "
                 "%.3fM parameters, %s output, conditioning %s, position features %d",
                 len(cfg.dilations),
                 cfg.dilations, cfg.kernel_size, cfg.receptive_field,
                 1000.0 * cfg.receptive_field / int(info["sample_rate"]),
                 count_params(jax.eval_shape(init_state, jax.random.PRNGKey(0), {
                     "audio": jnp.zeros((1, window)), "label": jnp.zeros((1,), jnp.int32)})
                     .params) / 1e6, cfg.output, w.conditioning, cfg.position_dim)
    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  sample=sample, write_samples=write_samples,
                  tokens_per_step=float(samples_per_step), flops_per_step=flops_per_step)


def write_audio_samples(audio: np.ndarray, path_stem: str, sample_rate: int) -> list[str]:
    """float [N, T] audio -> `<stem>_<i>.wav` (16-bit PCM), `<stem>.npz` and a log-mel PNG."""
    from scipy.io import wavfile

    from aigc_jax.data.audio import to_int16
    from aigc_jax.evaluation.audio import save_spectrograms

    os.makedirs(os.path.dirname(path_stem) or ".", exist_ok=True)
    files = []
    for i, a in enumerate(audio):
        path = f"{path_stem}_{i}.wav"
        wavfile.write(path, sample_rate, to_int16(a))
        files.append(path)
    np.savez_compressed(path_stem + ".npz", audio=audio.astype(np.float32),
                        sample_rate=sample_rate)
    files.append(path_stem + ".npz")
    files.append(save_spectrograms(audio, sample_rate, path_stem + ".png"))
    return files
