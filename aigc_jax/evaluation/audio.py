"""Audio evaluation: log-mel spectrogram figures and the likelihood baselines of WaveNet.

Baselines, in bits per mu-law sample on exactly the samples WaveNet is scored on (the
`weight`ed samples of each test clip, averaged per clip as `eval_step` does):
- `unigram_bits`: the mu-law class histogram of the training split (add-one smoothed), each
  sample coded independently; its entropy on the test split.
- `linear_predictor_bits`: x_t predicted by an order-p linear combination of the p previous
  samples (least squares on the training split), with a Laplace residual whose scale is fit
  on the training residuals (fixed, or following the recent residuals: `adaptive`); the
  probability of each mu-law class is the Laplace mass of the amplitude interval that
  decodes to it.
"""

import math
import os

import numpy as np

from aigc_jax.data.mel import MelConfig, log_mel


def figure_mel_config(sample_rate: int, n_mels: int = 64) -> MelConfig:
    """A 32 ms window, 8 ms hop spectrogram for figures and the digit classifier."""
    n_fft = 2 ** round(math.log2(sample_rate * 0.032))
    return MelConfig(sample_rate=sample_rate, n_fft=n_fft, hop=n_fft // 4, n_mels=n_mels)


def save_spectrograms(audio: np.ndarray, sample_rate: int, path: str,
                      titles: list[str] | None = None, ncols: int = 5) -> str:
    """Log-mel spectrograms of float audio [N, T] as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mel = np.asarray(log_mel(np.asarray(audio, np.float32), figure_mel_config(sample_rate)))
    n = len(mel)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 2.0 * nrows), squeeze=False)
    seconds = audio.shape[-1] / sample_rate
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(mel[i].T, origin="lower", aspect="auto", vmin=-11.5, vmax=mel.max(),
                      extent=(0, seconds, 0, sample_rate / 2000), cmap="magma")
            ax.set_title(titles[i] if titles else f"#{i}", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _scored(clips: list[np.ndarray], weights: list[np.ndarray]):
    """(target samples, their weights) per clip: sample t >= 1 of each window, as eval_step."""
    return [(np.asarray(c, np.float64)[1:], np.asarray(w, np.float64)[1:])
            for c, w in zip(clips, weights, strict=True)]


def _per_clip_mean(bits: list[np.ndarray], weights: list[np.ndarray]) -> float:
    return float(np.mean([(b * w).sum() / max(w.sum(), 1.0) for b, w in
                          zip(bits, weights, strict=True)]))


def unigram_bits(train_clips: list[np.ndarray], test_clips: list[np.ndarray],
                 test_weights: list[np.ndarray], mu: int = 255) -> float:
    """Bits per sample of the training split's (add-one) mu-law class frequencies on the
    weighted samples of the test windows."""
    from aigc_jax.methods.wavenet.quantize import mu_law_encode

    counts = np.ones(mu + 1)
    for c in train_clips:
        counts += np.bincount(mu_law_encode(np.asarray(c)), minlength=mu + 1)
    log2p = np.log2(counts / counts.sum())
    scored = _scored(test_clips, test_weights)
    return _per_clip_mean([-log2p[mu_law_encode(x)] for x, _ in scored],
                          [w for _, w in scored])


def _lagged(x: np.ndarray, order: int) -> np.ndarray:
    """[len(x), order]: column k holds x shifted by k + 1 (zeros before the start)."""
    padded = np.concatenate([np.zeros(order), x])
    return np.stack([padded[order - k - 1:len(padded) - k - 1] for k in range(order)], axis=1)


def _mu_law_edges(mu: int) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude interval [lo, hi) of each mu-law class (the outer ones open-ended)."""
    y = (np.arange(mu + 2) - 0.5) * 2.0 / mu - 1.0
    x = np.sign(y) * ((1.0 + mu) ** np.abs(y) - 1.0) / mu
    x[0], x[-1] = -np.inf, np.inf
    return x[:-1], x[1:]


def _laplace_cdf(z: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0) / scale),
                    1.0 - 0.5 * np.exp(-np.maximum(z, 0) / scale))


def _past_mean_abs(e: np.ndarray, n: int) -> np.ndarray:
    """[len(e)]: mean |e| over the n residuals before each position (causal)."""
    cs = np.concatenate([[0.0], np.cumsum(np.abs(e))])
    t = np.arange(len(e))
    return (cs[t] - cs[np.maximum(t - n, 0)]) / n


def linear_predictor_bits(train_clips: list[np.ndarray], test_clips: list[np.ndarray],
                          test_weights: list[np.ndarray], order: int = 32,
                          adaptive: int = 0, mu: int = 255) -> float:
    """Bits per sample of an order-p least-squares linear predictor with a Laplace residual,
    both fit on the training clips, scored on mu-law classes of the test windows.

    adaptive = 0: one residual scale (the ML scale on the training residuals). adaptive = n:
    the scale follows the mean |residual| of the last n samples (x a gain fit on the training
    clips, plus a floor), mixed 99:1 with the fixed-scale Laplace so no class gets ~0 mass.
    """
    from aigc_jax.methods.wavenet.quantize import mu_law_encode

    xtx, xty = np.zeros((order, order)), np.zeros(order)
    for c in train_clips:
        c = np.asarray(c, np.float64)
        lag = _lagged(c, order)
        xtx += lag.T @ lag
        xty += lag.T @ c
    coef = np.linalg.solve(xtx + 1e-6 * np.eye(order), xty)
    res = [np.asarray(c, np.float64) - _lagged(np.asarray(c, np.float64), order) @ coef
           for c in train_clips]
    scale = max(float(np.abs(np.concatenate(res)).mean()), 1e-6)  # Laplace ML scale
    floor, gain = 1e-4, 0.0
    if adaptive:
        e = np.concatenate(res)
        m = np.concatenate([_past_mean_abs(r, adaptive) for r in res])
        gains = np.geomspace(0.25, 4.0, 17)
        lls = [np.mean(-np.log(floor + g * m) - np.abs(e) / (floor + g * m)) for g in gains]
        gain = float(gains[int(np.argmax(lls))])
    lo, hi = _mu_law_edges(mu)

    bits, weights = [], []
    for c, w in zip(test_clips, test_weights, strict=True):
        c = np.asarray(c, np.float64)
        pred = _lagged(c, order) @ coef
        q = mu_law_encode(c[1:], mu)
        p = _laplace_cdf(hi[q] - pred[1:], scale) - _laplace_cdf(lo[q] - pred[1:], scale)
        if adaptive:
            s = floor + gain * _past_mean_abs(c - pred, adaptive)[1:]
            p_ad = _laplace_cdf(hi[q] - pred[1:], s) - _laplace_cdf(lo[q] - pred[1:], s)
            p = 0.99 * p_ad + 0.01 * p
        bits.append(-np.log2(np.maximum(p, 1e-300)))
        weights.append(np.asarray(w, np.float64)[1:])
    return _per_clip_mean(bits, weights)


def digit_features(clip: np.ndarray, sample_rate: int, frames: int = 24,
                   n_mels: int = 40) -> np.ndarray:
    """A fixed-size log-mel image of the voiced part of a clip: frames within ~26 dB of the
    loudest one (first to last), linearly resampled to `frames` frames, flattened."""
    mel = np.asarray(log_mel(np.asarray(clip, np.float32),
                             figure_mel_config(sample_rate, n_mels)))  # [F, n_mels]
    energy = np.log(np.exp(mel).sum(-1))
    active = np.flatnonzero(energy > energy.max() - 6.0)
    mel = mel[active[0]:active[-1] + 1]
    pos = np.linspace(0, len(mel) - 1, frames)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(mel) - 1)
    frac = (pos - lo)[:, None]
    return ((1 - frac) * mel[lo] + frac * mel[hi]).reshape(-1)


class DigitClassifier:
    """A spoken-digit classifier: logistic regression on `digit_features` (scikit-learn),
    trained in seconds on the training split; scores whether samples say the asked digit."""

    def __init__(self, sample_rate: int, c: float = 0.1):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.sample_rate = sample_rate
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))

    def features(self, clips: list[np.ndarray]) -> np.ndarray:
        """[N, frames * n_mels] features of float clips."""
        return np.stack([digit_features(c, self.sample_rate) for c in clips])

    def fit(self, clips: list[np.ndarray], labels: np.ndarray) -> "DigitClassifier":
        """Train on float clips and their labels."""
        self.model.fit(self.features(clips), labels)
        return self

    def predict(self, clips: list[np.ndarray]) -> np.ndarray:
        """Predicted labels [N]."""
        return self.model.predict(self.features(clips))
