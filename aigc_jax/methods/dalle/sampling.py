"""Image tokens after a prompt, in one compiled loop, and CLIP reranking of the candidates.

The prompt's T text tokens are prefilled into the GPT's key/value cache in one call; then each
of the h w image codes costs one cached position (`GPT.decode`), drawn from the image part of
the vocabulary with the GPT family's filters (temperature, top-k, top-p: `lm.sampling`).
Classifier-free guidance (Ho & Salimans, 2021; "super-conditioning" in dalle-mini) runs the
empty prompt beside every prompt in the same batch and samples from
(1 + w) * logits(prompt) - w * logits(empty); w = 0 turns it off (one pass).
DALL-E (Ramesh et al., 2021, section 2.5) draws N candidates per prompt and keeps the ones a
contrastive model scores highest against the prompt: `rerank`.
"""

import functools

import jax
import jax.numpy as jnp

from aigc_jax.methods.dalle.sequence import Layout
from aigc_jax.methods.lm.sampling import SamplerConfig, next_token
from aigc_jax.models.gpt import GPT, init_cache


def guided(logits: jax.Array, num: int, guidance_scale: float) -> jax.Array:
    """Image logits [N, K] from [M, K] rows (M = N, or 2N with the empty prompt's rows last):
    (1 + w) cond - w uncond."""
    if guidance_scale == 0.0:
        return logits
    cond, uncond = logits[:num], logits[num:]
    return cond + guidance_scale * (cond - uncond)


@functools.partial(jax.jit, static_argnames=("model", "sc", "layout", "guidance_scale"))
def sample_codes(model: GPT, params, text_tokens: jax.Array, empty_tokens: jax.Array,
                 rng: jax.Array, sc: SamplerConfig, layout: Layout,
                 guidance_scale: float = 0.0) -> jax.Array:
    """Image codes int32 [N, h w] (0..K-1, raster order) for prompts int32 [N, T]; the empty
    prompt's tokens [T] are read only when guidance_scale != 0."""
    num, t = text_tokens.shape
    prompts = text_tokens.astype(jnp.int32)
    if guidance_scale != 0.0:
        prompts = jnp.concatenate([prompts, jnp.broadcast_to(empty_tokens, (num, t))], axis=0)
    reps = prompts.shape[0] // num
    n_img, k = layout.image_length, layout.image_vocab

    def draw(logits: jax.Array, codes: jax.Array, i: jax.Array) -> jax.Array:
        z = guided(logits[:, -1, layout.text_vocab:layout.vocab_size], num, guidance_scale)
        return next_token(z, jax.random.fold_in(rng, i), sc, k, codes, i)  # [N]

    cache = init_cache(model.cfg, prompts.shape[0], layout.length - 1)
    logits, cache = model.apply(params, prompts, cache, 0, method=GPT.decode)  # [M, T, V]
    codes = jnp.zeros((num, n_img), jnp.int32)
    codes = codes.at[:, 0].set(draw(logits, codes, jnp.int32(0)))

    def step(carry, i):
        codes, cache = carry
        prev = jax.lax.dynamic_slice_in_dim(codes, i - 1, 1, axis=1) + layout.text_vocab
        logits, cache = model.apply(params, jnp.tile(prev, (reps, 1)), cache, t + i - 1,
                                    method=GPT.decode)  # [M, 1, V]
        codes = jax.lax.dynamic_update_slice(codes, draw(logits, codes, i)[:, None], (0, i))
        return (codes, cache), None

    (codes, _), _ = jax.lax.scan(step, (codes, cache), jnp.arange(1, n_img))
    return codes


def rerank(scores: jax.Array) -> jax.Array:
    """Candidate order [P, N], best first, from CLIP scores [P, N] (a stable descending sort:
    ties keep their sampling order)."""
    return jnp.argsort(-scores, axis=-1, stable=True)


def take_ranked(candidates: jax.Array, order: jax.Array) -> jax.Array:
    """candidates [P, N, ...] in the order [P, N] `rerank` gave."""
    idx = order.reshape(order.shape + (1,) * (candidates.ndim - 2))
    return jnp.take_along_axis(candidates, idx, axis=1)
