"""Perceptual path length in W (Karras et al., 2019, Sec. 3; the StyleGAN2 paper's PPL):

    PPL = E[ d(g(lerp(w0, w1, t)), g(lerp(w0, w1, t + eps))) / eps^2 ],  t ~ U(0, 1),

with w0, w1 from two random z, the same w at every layer, the same noise for both images and
eps = 1e-4; the 1st and 99th percentile outliers are dropped as in the official metric. The
paper's d is LPIPS (VGG); offline we use the squared L2 distance of the features the Fréchet
distance uses (`eval.extractor`: the shipped digits/MNIST classifier's penultimate layer), so
the numbers compare runs of this repo, not the paper's.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from aigc_jax.evaluation import classifier
from aigc_jax.methods.stylegan2.styles import StyleGANContext, broadcast, mapping, synthesize
from aigc_jax.state import TrainState

CLASSIFIER_EXTRACTORS = ("digits", "mnist")


def feature_fn(name: str):
    """(features(images in [-1, 1] float) -> [N, D], variables) for a shipped classifier."""
    c = classifier.load_classifier(name)

    def features(variables, x):
        # classifier.preprocess divides by 255; a float input keeps eps-sized differences.
        return c.model.apply(variables, classifier.preprocess((x + 1.0) * 127.5,
                                                              c.input_size))[0]

    return features, c.variables


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _ppl_batch(ctx: StyleGANContext, state: TrainState, variables, rng: jax.Array, n: int,
               features, eps: float) -> jax.Array:
    k0, k1, kt, kn = jax.random.split(rng, 4)
    params = state.ema_params["generator"]
    w0 = mapping(ctx, params, jax.random.normal(k0, (n, ctx.latent_dim)))
    w1 = mapping(ctx, params, jax.random.normal(k1, (n, ctx.latent_dim)))
    t = jax.random.uniform(kt, (n, 1))
    w = jnp.concatenate([w0 + (w1 - w0) * t, w0 + (w1 - w0) * (t + eps)])
    # One noise draw for both ends of each pair: vmap over pairs with a per-pair key.
    keys = jax.random.split(kn, n)
    x = jax.vmap(lambda ws, k: synthesize(ctx, params, ws, k))(
        broadcast(ctx, w).reshape(2, n, ctx.num_ws, -1).transpose(1, 0, 2, 3), keys)
    f = features(variables, x.reshape(2 * n, *x.shape[2:])).reshape(n, 2, -1)
    return jnp.sum((f[:, 0] - f[:, 1]) ** 2, axis=-1) / eps**2  # [n]


def perceptual_path_length(ctx: StyleGANContext, state: TrainState, rng: jax.Array,
                           config: ml_collections.ConfigDict) -> dict:
    """{"ppl_w": mean filtered distance, "ppl_protocol": ...}; {} when off or no features."""
    e = config.eval
    num, extractor = int(e.ppl_num_samples), str(config.eval.extractor)
    if num <= 0:
        return {}
    if extractor not in CLASSIFIER_EXTRACTORS:
        logging.warning("PPL needs float features of a shipped classifier (eval.extractor in "
                        "%s); skipped for %r.", CLASSIFIER_EXTRACTORS, extractor)
        return {}
    features, variables = feature_fn(extractor)
    batch = min(int(e.ppl_batch_size), num)
    dist = np.concatenate([
        np.asarray(_ppl_batch(ctx, state, variables, jax.random.fold_in(rng, i), batch,
                              features, float(e.ppl_epsilon)))
        for i in range(-(-num // batch))])[:num]
    lo, hi = np.percentile(dist, 1, method="lower"), np.percentile(dist, 99, method="higher")
    kept = dist[(dist >= lo) & (dist <= hi)]
    return {"ppl_w": float(kept.mean()), "ppl_protocol": {
        "space": "w", "sampling": "full", "epsilon": float(e.ppl_epsilon),
        "num_samples": num,
        "distance": f"squared L2 of the {extractor} classifier's features (FD's features)",
        "weights": "ema generator", "noise": "the same for both images of a pair"}}
