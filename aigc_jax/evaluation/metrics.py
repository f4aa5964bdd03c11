"""Sample-quality metrics on feature vectors: Fréchet distance, KID, Inception Score, P/R.

Every function takes plain numpy arrays. Statistics that must cover 50k samples stream through
`FeatureStats` / `ScoreStats` (float64 running sums, mergeable), so features never sit in memory
all at once; only a capped subset of raw features is kept for KID and precision/recall.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), computed in float64 via symmetric eigh."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    assert mu1.shape == mu2.shape and s1.shape == s2.shape == mu1.shape * 2, (mu1.shape, s1.shape)
    # tr (S1 S2)^1/2 = sum sqrt(eig(S1^1/2 S2 S1^1/2)): the latter is symmetric PSD, so eigh is
    # stable, real, and works for singular covariances (no eps jitter, no complex leftovers).
    sqrt_s1 = _psd_sqrt(s1)
    m = sqrt_s1 @ s2 @ sqrt_s1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_scipy(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                           sigma2: np.ndarray) -> float:
    """The pytorch-fid formula with `scipy.linalg.sqrtm`; a reference for the eigh route."""
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise as pytorch-fid does
        offset = np.eye(len(s1)) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean).real)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def kernel_inception_distance(feats1: np.ndarray, feats2: np.ndarray, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with kernel (x.y/d + 1)^3 over random subsets: (mean, std) over subsets."""
    x_all, y_all = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(subset_size, len(x_all), len(y_all))
    assert m >= 2, "KID needs at least two samples per set"
    d = x_all.shape[1]
    rng = np.random.default_rng(seed)
    kernel = lambda a, b: (a @ b.T / d + 1.0) ** 3
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        # U-statistics within a set (diagonal dropped) make the estimate unbiased.
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        mmds[i] = within - 2.0 * kxy.mean()
    return float(mmds.mean()), float(mmds.std())


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) on `splits` contiguous chunks of the logits: (mean, std)."""
    stats = ScoreStats(len(logits), splits)
    stats.update(logits)
    return stats.score()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     batch_size: int = 2048) -> tuple[float, float]:
    """Improved precision/recall (Kynkäänniemi et al., 2019) from k-NN balls in feature space."""
    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    real_radii = _knn_radii(real, k, batch_size)
    fake_radii = _knn_radii(fake, k, batch_size)
    precision = _in_any_ball(fake, real, real_radii, batch_size).mean()
    recall = _in_any_ball(real, fake, fake_radii, batch_size).mean()
    return float(precision), float(recall)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _knn_radii(x: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    if len(x) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples, got {len(x)}")
    out = np.empty(len(x), np.float32)
    for s in range(0, len(x), batch_size):
        d = _sq_dists(x[s:s + batch_size], x)
        # index k, not k-1: the 0th neighbour is the point itself at distance 0.
        out[s:s + batch_size] = np.partition(d, k, axis=1)[:, k]
    return out


def _in_any_ball(queries: np.ndarray, centers: np.ndarray, radii: np.ndarray,
                 batch_size: int) -> np.ndarray:
    hits = np.empty(len(queries), bool)
    for s in range(0, len(queries), batch_size):
        d = _sq_dists(queries[s:s + batch_size], centers)
        hits[s:s + batch_size] = (d <= radii[None, :]).any(1)
    return hits


class FeatureStats:
    """Running count, sum and sum of outer products in float64, plus the first `max_raw` rows."""

    def __init__(self, dim: int, max_raw: int = 10_000):
        self.n, self.max_raw = 0, max_raw
        self.sum = np.zeros(dim, np.float64)
        self.sum_outer = np.zeros((dim, dim), np.float64)
        self._raw: list[np.ndarray] = []
        self._num_raw = 0

    def update(self, feats: np.ndarray) -> None:
        """Adds a batch of features [B, D]."""
        f = np.asarray(feats, np.float64)
        self.n += len(f)
        self.sum += f.sum(0)
        self.sum_outer += f.T @ f
        keep = min(len(f), self.max_raw - self._num_raw)
        if keep > 0:
            self._raw.append(np.asarray(feats[:keep], np.float32))
            self._num_raw += keep

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Combined statistics of both streams (raw rows: self's first, then other's)."""
        out = FeatureStats(len(self.sum), self.max_raw)
        out.n, out.sum = self.n + other.n, self.sum + other.sum
        out.sum_outer = self.sum_outer + other.sum_outer
        raw = np.concatenate([self.raw, other.raw])[:self.max_raw]
        out._raw, out._num_raw = [raw], len(raw)
        return out

    @property
    def raw(self) -> np.ndarray:
        """The kept raw features [min(n, max_raw), D] in float32."""
        if not self._raw:
            return np.zeros((0, len(self.sum)), np.float32)
        return np.concatenate(self._raw)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean [D] and unbiased covariance [D, D] (divisor n - 1, as numpy.cov) in float64."""
        assert self.n >= 2, "a covariance needs at least two samples"
        mu = self.sum / self.n
        cov = (self.sum_outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, (cov + cov.T) / 2


class ScoreStats:
    """Streaming Inception/classifier Score: per split, sum of p log p and sum of p (float64).

    Sample i of `num_samples` falls in split i * splits // num_samples, so chunks are contiguous.
    """

    def __init__(self, num_samples: int, splits: int = 10):
        if not 1 <= splits <= num_samples:
            raise ValueError(f"need 1 <= splits <= num_samples, got {splits} and {num_samples}")
        self.num_samples, self.splits, self.seen = num_samples, splits, 0
        self.count = np.zeros(splits, np.int64)
        self.neg_entropy = np.zeros(splits, np.float64)  # sum_i sum_y p log p
        self.p_sum: np.ndarray | None = None  # [splits, num_classes]

    def update(self, logits: np.ndarray) -> None:
        """Adds a batch of logits [B, num_classes] (the next B samples in order)."""
        z = np.asarray(logits, np.float64)
        log_p = z - scipy.special.logsumexp(z, axis=1, keepdims=True)
        p = np.exp(log_p)
        if self.p_sum is None:
            self.p_sum = np.zeros((self.splits, z.shape[1]), np.float64)
        idx = self.seen + np.arange(len(z))
        assert idx[-1] < self.num_samples, "more samples than announced"
        split = idx * self.splits // self.num_samples
        np.add.at(self.count, split, 1)
        np.add.at(self.neg_entropy, split, (p * log_p).sum(1))
        np.add.at(self.p_sum, split, p)
        self.seen += len(z)

    def score(self) -> tuple[float, float]:
        """(mean, std) over splits of exp(mean KL(p(y|x) || p(y)))."""
        assert self.seen == self.num_samples, (self.seen, self.num_samples)
        n = self.count[:, None].astype(np.float64)
        p_y = self.p_sum / n
        cross = (self.p_sum * np.log(np.clip(p_y, 1e-300, None))).sum(1)
        scores = np.exp((self.neg_entropy - cross) / n[:, 0])
        return float(scores.mean()), float(scores.std())
