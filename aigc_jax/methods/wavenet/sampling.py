"""WaveNet generation: the cached scheme of Paine et al. (2016) and naive full recomputation.

`generate` runs the whole clip as one compiled `lax.scan`; each step feeds the last sample to
`WaveNet.step`, which reads each layer's queue of past activations, so a sample costs one tap
product per layer. `generate_naive` recomputes the full network over the clip for every
sample (what the queues save); with the same key both draw identical samples, which the tests
check. Sample t + 1 is drawn with the key fold_in(rng, t) in both.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from aigc_jax.distributions import sample_discretized_logistic_mixture
from aigc_jax.methods.wavenet.quantize import mu_law_decode, mu_law_encode
from aigc_jax.models.wavenet import WaveNet, init_caches


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """Static generation settings."""

    length: int = 4000  # samples to generate
    temperature: float = 1.0  # mu-law logits are divided by it (0: greedy)
    logistic_bits: int = 16  # grid of the logistic mixture
    sample_rate: int = 8000  # position-conditioned models: samples per second
    lead: int = 0  # position-conditioned models: samples of silence before the onset


def positions(model: WaveNet, num: int, sc: SampleConfig) -> jax.Array | None:
    """Time since onset [num, length] of every generated input (None without position input):
    input 0 (the starting silence) sits `lead` samples before the onset."""
    if not model.cfg.position_dim:
        return None
    t = (jnp.arange(sc.length, dtype=jnp.float32) - sc.lead) / sc.sample_rate
    return jnp.broadcast_to(t, (num, sc.length))


def batch_size(label: jax.Array | None, mel: jax.Array | None, num: int | None) -> int:
    """Clips to generate: from the conditioning, or `num` for an unconditional model."""
    for x in (label, mel):
        if x is not None:
            return int(x.shape[0])
    if num is None:
        raise ValueError("an unconditional WaveNet needs num= (clips to generate)")
    return num


def _silence(model: WaveNet, num: int) -> jax.Array:
    """The input that starts generation: the sample value 0."""
    if model.cfg.output == "mulaw":
        return jnp.full((num,), mu_law_encode(jnp.zeros(()), model.cfg.quantization_channels - 1))
    return jnp.zeros((num,), jnp.float32)


def draw(model: WaveNet, out: jax.Array, rng: jax.Array, sc: SampleConfig) -> jax.Array:
    """The next input from outputs [N, out_channels]: a mu-law class or a grid value."""
    if model.cfg.output == "mulaw":
        if sc.temperature <= 0:
            return jnp.argmax(out, -1).astype(jnp.int32)
        return jax.random.categorical(rng, out / sc.temperature, axis=-1).astype(jnp.int32)
    return sample_discretized_logistic_mixture(rng, out, 2**sc.logistic_bits)


def to_audio(model: WaveNet, x: jax.Array) -> jax.Array:
    """Model inputs (classes or grid values) -> float audio in [-1, 1]."""
    if model.cfg.output == "mulaw":
        return mu_law_decode(x, model.cfg.quantization_channels - 1)
    return x


@functools.partial(jax.jit, static_argnames=("model", "sc", "num"))
def generate(model: WaveNet, params, rng: jax.Array, label: jax.Array | None,
             mel: jax.Array | None, sc: SampleConfig, num: int | None = None) -> jax.Array:
    """Cached generation: label [N] and/or mel [N, F, M] (or `num` clips of an unconditional
    model) -> audio float32 [N, length]."""
    num = batch_size(label, mel, num)
    g, local = model.apply(params, label, mel, sc.length, positions(model, num, sc),
                           method=WaveNet.conditioning)

    def body(carry, t):
        x, caches = carry
        cond_t = None if local is None else jax.lax.dynamic_index_in_dim(local, t, 1, False)
        out, caches = model.apply(params, x, caches, t, g, cond_t, method=WaveNet.step)
        nxt = draw(model, out, jax.random.fold_in(rng, t), sc)
        return (nxt, caches), nxt

    carry = (_silence(model, num), init_caches(model.cfg, num))
    _, xs = jax.lax.scan(body, carry, jnp.arange(sc.length))  # [length, N]
    return to_audio(model, xs.T)


@functools.partial(jax.jit, static_argnames=("model", "sc", "num"))
def generate_naive(model: WaveNet, params, rng: jax.Array, label: jax.Array | None,
                   mel: jax.Array | None, sc: SampleConfig, num: int | None = None) -> jax.Array:
    """The same samples as `generate`, recomputing the whole network for each one."""
    num = batch_size(label, mel, num)
    position = positions(model, num, sc)
    seq = jnp.zeros((num, sc.length + 1), _silence(model, num).dtype)
    seq = seq.at[:, 0].set(_silence(model, num))

    def body(t, seq):
        out = model.apply(params, seq[:, :-1], label, mel, position)  # [N, length, out]
        out_t = jax.lax.dynamic_index_in_dim(out, t, 1, False)
        nxt = draw(model, out_t, jax.random.fold_in(rng, t), sc)
        return jax.lax.dynamic_update_index_in_dim(seq, nxt, t + 1, 1)

    seq = jax.lax.fori_loop(0, sc.length, body, seq)
    return to_audio(model, seq[:, 1:])
