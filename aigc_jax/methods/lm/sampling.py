"""Autoregressive sampling for the GPT family: logit filters and one compiled generation loop.

Filters: temperature (0 = greedy), top-k (Fan et al., 2018), nucleus / top-p (Holtzman et al.,
2020) and no-repeat-n-gram (Paulus et al., 2018). Generation keeps nanoGPT's semantics: each new
token sees the last `block_size` tokens. Up to `block_size` positions a key/value cache makes each
token cost one position; past it, each token re-reads its `block_size`-token window (learned
absolute positions cannot slide a cache). Both phases are `lax.scan`s inside one `jit`.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

from aigc_jax.models.gpt import GPT, init_cache


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """`config.sampler`, as static values."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    no_repeat_ngram_size: int = 0  # 0: off


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keep the k largest logits per row [N, V]; the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [N, 1]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Keep the smallest set of most likely tokens whose probability reaches p (nucleus)."""
    if p >= 1.0:
        return logits
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]  # [N, V], descending
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    kept = mass_before < p  # the first token is always kept
    threshold = jnp.min(jnp.where(kept, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def banned_ngram_tokens(seq: jax.Array, cur: jax.Array, n: int, vocab: int) -> jax.Array:
    """bool [N, V]: tokens that would complete an n-gram already in seq[:, :cur] [N, L]."""
    num, length = seq.shape
    if n <= 0 or length < n:
        return jnp.zeros((num, vocab), bool)
    starts = jnp.arange(length - n + 1)
    match = (starts + n - 1 < cur)[None, :] & (cur >= n - 1)  # [1, L - n + 1]
    for k in range(n - 1):  # over the n-gram's positions, not over tokens
        prefix_k = jax.lax.dynamic_index_in_dim(seq, cur - n + 1 + k, axis=1)  # [N, 1]
        match = match & (seq[:, k:k + length - n + 1] == prefix_k)
    following = seq[:, n - 1:]  # [N, L - n + 1]: the token that ends each n-gram
    rows = jnp.arange(num)[:, None]
    return jnp.zeros((num, vocab), bool).at[rows, following].max(match)


def next_token(logits: jax.Array, rng: jax.Array, sc: SamplerConfig, vocab_size: int,
               seq: jax.Array, cur: jax.Array) -> jax.Array:
    """Draw the token at position `cur` from logits [N, V] after every filter. [N] int32"""
    v = logits.shape[-1]
    logits = jnp.where(jnp.arange(v) < vocab_size, logits, -jnp.inf)  # padded vocabulary
    if sc.no_repeat_ngram_size > 0:
        banned = banned_ngram_tokens(seq, cur, sc.no_repeat_ngram_size, v)
        filtered = jnp.where(banned, -jnp.inf, logits)
        # Everything banned (a tiny vocabulary): fall back to the unfiltered distribution.
        logits = jnp.where(jnp.isfinite(filtered).any(-1, keepdims=True), filtered, logits)
    if sc.temperature <= 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = top_p_filter(top_k_filter(logits / sc.temperature, sc.top_k), sc.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "sc", "vocab_size"))
def generate(model: GPT, params, prompt: jax.Array, rng: jax.Array, sc: SamplerConfig,
             vocab_size: int) -> jax.Array:
    """prompt int32 [N, P] -> [N, P + max_new_tokens]: the prompt followed by sampled tokens."""
    num, p = prompt.shape
    block = model.cfg.block_size
    total = p + sc.max_new_tokens
    seq = jnp.zeros((num, total), jnp.int32).at[:, :p].set(prompt)

    def put(seq, cur, logits):
        tok = next_token(logits, jax.random.fold_in(rng, cur), sc, vocab_size, seq, cur)
        return jax.lax.dynamic_update_slice(seq, tok[:, None], (0, cur))

    # Phase 1: positions p..block come from the cache (the prompt prefilled in one call).
    cached = min(sc.max_new_tokens, block - p + 1) if p <= block else 0
    cur = p
    if cached > 0:
        cache = init_cache(model.cfg, num)
        logits, cache = model.apply(params, prompt, cache, 0, method=GPT.decode)
        seq = put(seq, p, logits[:, -1])

        def cached_step(carry, cur):
            seq, cache = carry
            last = jax.lax.dynamic_slice_in_dim(seq, cur - 1, 1, axis=1)  # [N, 1]
            logits, cache = model.apply(params, last, cache, cur - 1, method=GPT.decode)
            return (put(seq, cur, logits[:, -1]), cache), None

        (seq, _), _ = jax.lax.scan(cached_step, (seq, cache), jnp.arange(p + 1, p + cached))
        cur = p + cached

    # Phase 2: each further token re-reads its window, as nanoGPT's crop to block_size.
    def window_step(seq, cur):
        window = jax.lax.dynamic_slice_in_dim(seq, cur - block, block, axis=1)  # [N, T]
        return put(seq, cur, model.apply(params, window)[:, -1]), None

    if cur < total:
        seq, _ = jax.lax.scan(window_step, seq, jnp.arange(cur, total))
    return seq
