"""The StyleGAN2 networks as functions of (params, inputs): mapping, truncation, style mixing and
synthesis, shared by the train step, sampling, the figures and PPL."""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from aigc_jax.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

PyTree = Any


@dataclasses.dataclass(frozen=True)
class StyleGANContext:
    """The two networks and the shapes a step needs, built once from the config."""

    generator: StyleGAN2Generator
    discriminator: StyleGAN2Discriminator
    latent_dim: int  # z
    w_dim: int
    num_ws: int
    image_shape: tuple[int, int, int]
    fixed_noise_seed: int = 0
    num_classes: int = 0  # unconditional (gan.fixed_latents reads it)


def mapping(ctx: StyleGANContext, params: PyTree, z: jax.Array) -> jax.Array:
    """w = f(z): [B, Z] -> [B, w_dim]."""
    return ctx.generator.apply({"params": params}, z, method="map")


def synthesize(ctx: StyleGANContext, params: PyTree, ws: jax.Array,
               noise_key: jax.Array | None) -> jax.Array:
    """g(ws): [B, num_ws, w_dim] -> images [B, H, W, C] (about [-1, 1]); no noise if None."""
    return ctx.generator.apply({"params": params}, ws, noise_key, method="synthesize")


def discriminate(ctx: StyleGANContext, params: PyTree, x: jax.Array) -> jax.Array:
    """D logits [B]."""
    return ctx.discriminator.apply({"params": params}, x)


def broadcast(ctx: StyleGANContext, w: jax.Array) -> jax.Array:
    """The same w for every layer: [B, D] -> [B, num_ws, D]."""
    return jnp.repeat(w[:, None], ctx.num_ws, axis=1)


def truncate(w: jax.Array, w_avg: jax.Array, psi: float | jax.Array) -> jax.Array:
    """The truncation trick in W: w_avg + psi (w - w_avg) (psi = 1: unchanged, 0: the mean)."""
    return w_avg + psi * (w - w_avg)


def mix(ws_a: jax.Array, ws_b: jax.Array, crossover: int | jax.Array) -> jax.Array:
    """Layers [0, crossover) from ws_a, [crossover, num_ws) from ws_b ([B, num_ws, D])."""
    layer = jnp.arange(ws_a.shape[1])[None, :, None]
    return jnp.where(layer < crossover, ws_a, ws_b)


def mixing_regularized_ws(ctx: StyleGANContext, params: PyTree, z: jax.Array, rng: jax.Array,
                          prob: float) -> jax.Array:
    """Training-time styles: with probability `prob` the whole batch switches to a second
    latent's w at one crossover drawn from [1, num_ws) (the official code); [B, num_ws, D]."""
    k_z, k_cut, k_p = jax.random.split(rng, 3)
    ws = broadcast(ctx, mapping(ctx, params, z))
    if prob <= 0 or ctx.num_ws < 2:
        return ws
    ws2 = broadcast(ctx, mapping(ctx, params, jax.random.normal(k_z, z.shape)))
    cutoff = jax.random.randint(k_cut, (), 1, ctx.num_ws)
    cutoff = jnp.where(jax.random.uniform(k_p) < prob, cutoff, ctx.num_ws)
    return mix(ws, ws2, cutoff)


def generate(ctx: StyleGANContext, params: PyTree, z: jax.Array, w_avg: jax.Array,
             psi: float | jax.Array, noise_key: jax.Array | None) -> jax.Array:
    """Images [B, H, W, C] from z with truncation psi (no style mixing)."""
    w = truncate(mapping(ctx, params, z), w_avg, psi)
    return synthesize(ctx, params, broadcast(ctx, w), noise_key)


def seed_latents(ctx: StyleGANContext, seeds: jax.Array) -> jax.Array:
    """z for each integer seed, z_i = N(0, I) from PRNGKey(seed_i): [len(seeds), Z]."""
    return jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), (ctx.latent_dim,)))(
        seeds)


def layer_groups(resolution: int) -> dict[str, tuple[int, int]]:
    """The paper's coarse (4-8), middle (16-32) and fine (64 and up) style ranges, as
    [start, stop) layer indices; at 32x32, whose top is 32, middle is 16 and fine is 32."""
    # Resolution r's layers end at index 2 log2(r) - 2 (4 -> 2, 8 -> 4, 16 -> 6, 32 -> 8).
    end = lambda r: 2 * (r.bit_length() - 1) - 2
    top = end(resolution)
    mid_stop = end(min(32, resolution // 2)) if resolution > 32 else end(16)
    return {"coarse": (0, min(end(8), top)), "middle": (min(end(8), top), min(mid_stop, top)),
            "fine": (min(mid_stop, top), top)}
