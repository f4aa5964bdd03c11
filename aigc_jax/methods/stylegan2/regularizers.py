"""StyleGAN2's regularisers and their lazy schedule (Karras et al., 2020, Sec. 3.1-3.2).

- R1 on reals is `aigc_jax.methods.gan.losses.r1_penalty` (shared with the GAN family).
- Path-length regularisation: E_w,y (||J_w^T y||_2 - a)^2 with y ~ N(0, I) / sqrt(H W) and
  a the running mean of the lengths (decay 0.01).
- Lazy regularisation: a penalty with interval k runs as its own optimizer step on steps
  where step % k == 0, multiplied by k; Adam's lr and betas are corrected by c = k / (k + 1).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections


def is_reg_step(step: jax.Array | int, interval: int) -> jax.Array:
    """True on the steps where a lazy regulariser with `interval` runs (0, k, 2k, ...)."""
    return jnp.asarray(step) % interval == 0


def lazy_optimizer_config(opt: ml_collections.ConfigDict,
                          interval: int) -> ml_collections.ConfigDict:
    """`opt` with lr * c and betas ** c, c = interval / (interval + 1) (0 interval: unchanged)."""
    cfg = ml_collections.ConfigDict(opt.to_dict())
    if interval > 0:
        c = interval / (interval + 1)
        cfg.learning_rate = float(opt.learning_rate) * c
        cfg.b1, cfg.b2 = float(opt.b1) ** c, float(opt.b2) ** c
    return cfg


def path_lengths(synthesize: Callable[[jax.Array], jax.Array], ws: jax.Array,
                 rng: jax.Array) -> jax.Array:
    """||J_w^T y|| per sample [B]: gradient of sum(G(ws) * y) in ws [B, L, D], squared and
    summed over D, averaged over the L style inputs, square-rooted (the official code)."""
    img_shape = jax.eval_shape(synthesize, ws).shape
    y = jax.random.normal(rng, img_shape) / jnp.sqrt(img_shape[1] * img_shape[2])
    grads = jax.grad(lambda v: jnp.sum(synthesize(v) * y))(ws)
    return jnp.sqrt(jnp.mean(jnp.sum(grads**2, axis=2), axis=1))


def path_length_penalty(lengths: jax.Array, pl_mean: jax.Array,
                        decay: float = 0.01) -> tuple[jax.Array, jax.Array]:
    """(mean (lengths - a)^2, the new a = pl_mean + decay (mean(lengths) - pl_mean))."""
    new_mean = jax.lax.stop_gradient(pl_mean + decay * (lengths.mean() - pl_mean))
    return jnp.mean((lengths - new_mean) ** 2), new_mean
