"""Quantisers for discrete autoencoders: vector quantisation and finite scalar quantisation.

- VQ (van den Oord et al., 2017): nearest codebook entry, straight-through gradient,
  commitment loss beta ||z_e - sg(e)||^2 (beta = 0.25), and either a learned codebook (loss
  ||sg(z_e) - e||^2) or EMA updates with Laplace smoothing (their appendix; Razavi et al.,
  2019). Dead codes (unused for `dead_steps` steps) restart at encoder outputs of the batch
  (Dhariwal et al., 2020, Jukebox; vector-quantize-pytorch's `threshold_ema_dead_code`).
- FSQ (Mentzer et al., 2023): each of d channels bounded and rounded to L_i levels; the
  codebook is the implicit grid of prod(L_i) points, with no parameters and no collapse.

Pure functions on arrays; the codebook and its EMA statistics live in the method's state.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


# ----------------------------------------------------------------------------- VQ


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the nearest code (squared L2) for each row: z [N, D], codebook [K, D] -> [N]."""
    d = (jnp.sum(z**2, -1, keepdims=True) - 2.0 * z @ codebook.T
         + jnp.sum(codebook**2, -1)[None])  # [N, K]
    return jnp.argmin(d, -1)


def vector_quantize(z: jax.Array, codebook: jax.Array, beta: float = 0.25
                    ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """z [..., D] -> (z_q with straight-through gradient [..., D], indices [...], losses).

    losses: "commitment" = beta * mean (z - sg(e))^2 and "codebook" = mean (sg(z) - e)^2 (only
    a learned codebook gets its gradient; the EMA update ignores it).
    """
    flat = z.reshape(-1, z.shape[-1])
    idx = nearest_code(jax.lax.stop_gradient(flat), jax.lax.stop_gradient(codebook))
    e = codebook[idx].reshape(z.shape)
    losses = {"commitment": beta * jnp.mean((z - jax.lax.stop_gradient(e)) ** 2),
              "codebook": jnp.mean((jax.lax.stop_gradient(z) - e) ** 2)}
    z_q = z + jax.lax.stop_gradient(e - z)  # forward: e; backward: identity to z
    return z_q, idx.reshape(z.shape[:-1]), losses


def init_vq_stats(codebook: jax.Array) -> dict[str, jax.Array]:
    """EMA cluster sizes and sums (starting as one member at each code) and unused-step counters."""
    k = codebook.shape[0]
    return {"ema_count": jnp.ones((k,), jnp.float32), "ema_sum": codebook.astype(jnp.float32),
            "unused_steps": jnp.zeros((k,), jnp.int32)}


def code_counts(idx: jax.Array, k: int) -> jax.Array:
    """How often each of the k codes occurs in `idx` (any shape) -> [K] float32."""
    return jnp.zeros((k,), jnp.float32).at[idx.reshape(-1)].add(1.0)


def ema_codebook_update(stats: dict[str, jax.Array], z: jax.Array, idx: jax.Array,
                        decay: float, eps: float = 1e-5
                        ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One EMA step: N_k <- d N_k + (1-d) n_k, m_k <- d m_k + (1-d) sum_{i: idx=k} z_i, and
    e_k = m_k / N~_k with the Laplace-smoothed N~_k = (N_k + eps) / (n + K eps) * n, n = sum N.

    z [N, D] encoder outputs, idx [N]. Returns (new codebook [K, D], new stats).
    """
    k = stats["ema_count"].shape[0]
    onehot = jax.nn.one_hot(idx, k, dtype=jnp.float32)  # [N, K]
    count = decay * stats["ema_count"] + (1.0 - decay) * onehot.sum(0)
    total = decay * stats["ema_sum"] + (1.0 - decay) * onehot.T @ z.astype(jnp.float32)
    n = count.sum()
    smoothed = (count + eps) / (n + k * eps) * n
    return total / smoothed[:, None], {**stats, "ema_count": count, "ema_sum": total}


def restart_dead_codes(codebook: jax.Array, stats: dict[str, jax.Array], counts: jax.Array,
                       z: jax.Array, rng: jax.Array, dead_steps: int
                       ) -> tuple[jax.Array, dict[str, jax.Array], jax.Array]:
    """Codes unused for `dead_steps` consecutive steps are re-drawn from the batch's encoder
    outputs z [N, D] (uniformly, with replacement); their EMA statistics restart as one member
    there. counts [K] are this step's uses. Returns (codebook, stats, number restarted)."""
    unused = jnp.where(counts > 0, 0, stats["unused_steps"] + 1)
    if dead_steps <= 0:
        return codebook, {**stats, "unused_steps": unused}, jnp.zeros((), jnp.int32)
    dead = unused >= dead_steps  # [K]
    pick = jax.random.randint(rng, (codebook.shape[0],), 0, z.shape[0])
    fresh = z[pick].astype(codebook.dtype)  # [K, D]
    new_codebook = jnp.where(dead[:, None], fresh, codebook)
    new_stats = {"ema_count": jnp.where(dead, 1.0, stats["ema_count"]),
                 "ema_sum": jnp.where(dead[:, None], fresh, stats["ema_sum"]),
                 "unused_steps": jnp.where(dead, 0, unused)}
    return new_codebook, new_stats, dead.sum()


def usage_and_perplexity(counts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fraction of codes used, perplexity exp(H(p)) of the code histogram) from counts [K]."""
    p = counts / jnp.maximum(counts.sum(), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.mean(counts > 0), jnp.exp(entropy)


# ----------------------------------------------------------------------------- FSQ


def _fsq_constants(levels: tuple[int, ...]) -> tuple[jax.Array, jax.Array, jax.Array]:
    lv = jnp.asarray(levels, jnp.float32)
    half_width = jnp.floor(lv / 2)  # codes are integers in [-half_width, L - 1 - half_width]
    basis = jnp.asarray([math.prod(levels[:i]) for i in range(len(levels))], jnp.int32)
    return lv, half_width, basis


def fsq_bound(z: jax.Array, levels: tuple[int, ...], eps: float = 1e-3) -> jax.Array:
    """tanh-bound each channel of z [..., d] so rounding gives exactly L_i values (the paper's
    reference code: an offset of 1/2 for even L)."""
    lv = jnp.asarray(levels, jnp.float32)
    half_l = (lv - 1.0) * (1.0 + eps) / 2.0
    offset = jnp.where(lv % 2 == 0, 0.5, 0.0)
    shift = jnp.arctanh(offset / half_l)
    return jnp.tanh(z + shift) * half_l - offset


def fsq_quantize(z: jax.Array, levels: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """z [..., d] -> (codes in [-1, 1] with straight-through rounding [..., d], indices [...])."""
    bounded = fsq_bound(z, levels)
    rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
    _, half_width, _ = _fsq_constants(levels)
    codes = rounded / half_width
    return codes, fsq_codes_to_indices(codes, levels)


def fsq_codes_to_indices(codes: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """Grid codes [..., d] -> int32 indices [...] in [0, prod L)."""
    _, half_width, basis = _fsq_constants(levels)
    digits = jnp.round(codes * half_width + half_width).astype(jnp.int32)
    return jnp.sum(digits * basis, -1)


def fsq_indices_to_codes(idx: jax.Array, levels: tuple[int, ...]) -> jax.Array:
    """int32 indices [...] -> grid codes [..., d] in [-1, 1]."""
    lv, half_width, basis = _fsq_constants(levels)
    digits = (idx[..., None] // basis) % lv.astype(jnp.int32)
    return (digits.astype(jnp.float32) - half_width) / half_width


# ----------------------------------------------------------------------------- registry


def _vq(z, codebook, cfg):
    return vector_quantize(z, codebook, float(cfg.beta))


def _fsq(z, codebook, cfg):
    del codebook
    codes, idx = fsq_quantize(z, tuple(cfg.fsq_levels))
    zero = jnp.zeros((), jnp.float32)
    return codes, idx, {"commitment": zero, "codebook": zero}


@dataclasses.dataclass(frozen=True)
class Quantizer:
    """A registry entry. `quantize(z [..., D], codebook or None, cfg) -> (z_q, indices, losses)`
    with straight-through gradients; `learned` quantisers keep a codebook [K, D] in the params."""

    name: str
    learned: bool
    quantize: Callable[[jax.Array, jax.Array | None, Any], tuple[jax.Array, jax.Array, dict]]


QUANTIZERS: dict[str, Quantizer] = {
    "vq": Quantizer("vq", True, _vq),
    "fsq": Quantizer("fsq", False, _fsq),
}
