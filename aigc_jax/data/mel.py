"""Log-mel spectrograms in JAX: the local conditioning of WaveNet, its figures and the digit
classifier's features.

STFT with a periodic Hann window over frames centred on multiples of `hop` (reflect padding,
as librosa's and torch.stft's `center=True`), power spectrum, HTK mel filterbank (the
formula of `tf.signal.linear_to_mel_weight_matrix` and torchaudio's `mel_scale="htk"`), then
log(mel + 1e-5). Frames: 1 + T // hop for T samples.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """The spectrogram's shape: FFT size (= window length), hop, mel bands and their range."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 0.0  # 0: sample_rate / 2


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Triangular filters float32 [n_fft // 2 + 1, n_mels], peaks at equally spaced mels."""
    fmax = cfg.fmax or cfg.sample_rate / 2
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(fmax), cfg.n_mels + 2))
    freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower) / (centre - lower)
    down = (upper - freqs[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def hann(n: int) -> np.ndarray:
    """Periodic Hann window of length n (scipy.signal.get_window("hann", n))."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft_magnitude(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """|STFT| of x [..., T] -> [..., 1 + T // hop, n_fft // 2 + 1], centred frames.

    numpy in, numpy out (host-side figures and features: no compile per clip length)."""
    xp = np if isinstance(x, np.ndarray) else jnp
    pad = n_fft // 2
    x = xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    num = 1 + (x.shape[-1] - n_fft) // hop
    idx = np.arange(num)[:, None] * hop + np.arange(n_fft)  # [F, n_fft]
    frames = x[..., idx] * hann(n_fft)
    return xp.abs(xp.fft.rfft(frames, axis=-1))


def log_mel(x: jax.Array, cfg: MelConfig) -> jax.Array:
    """Log-mel spectrogram of audio x [..., T] in [-1, 1] -> [..., 1 + T // hop, n_mels]."""
    xp = np if isinstance(x, np.ndarray) else jnp
    power = stft_magnitude(x.astype(xp.float32), cfg.n_fft, cfg.hop) ** 2
    return xp.log(power @ mel_filterbank(cfg) + 1e-5)
