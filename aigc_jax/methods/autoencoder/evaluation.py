"""`--mode=eval` and `--mode=sample` extras of the autoencoder family: rFD, code usage and
perplexity, the prior-free rate, latent statistics (LDM's scale factor), and the figures."""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from aigc_jax import plotting
from aigc_jax.evaluation.attributes import Checker, accuracy
from aigc_jax.methods.autoencoder import losses
from aigc_jax.methods.autoencoder.method import (
    AEContext,
    decode_latents,
    encode_latents,
    preprocess,
    reconstruct,
)
from aigc_jax.methods.common import to_uint8
from aigc_jax.models import quantizers as q

PyTree = Any


# ----------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct_jit(ctx: AEContext, weights: PyTree, images: jax.Array):
    return reconstruct(ctx, weights, images)


def _batches(images: np.ndarray, batch_size: int):
    """Fixed-size batches of `images` (the last padded with its first rows) and their sizes."""
    for s in range(0, len(images), batch_size):
        chunk = images[s:s + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - n, 0)])
        yield chunk, n


def split_arrays(ds, n: int | None = None) -> dict[str, np.ndarray]:
    """The first `n` (None: all) images of a split, and its attribute records when the source
    is captioned (array sources hold `images`; indexed ones build rows with `examples`)."""
    if hasattr(ds, "images"):
        return {"image": np.asarray(ds.images[:n])}
    batch = ds.examples(np.arange(min(n or ds.num_examples, ds.num_examples)))
    return {k: np.asarray(batch[k]) for k in ("image", "attributes") if k in batch}


def latent_statistics(ctx: AEContext, weights: PyTree, images: np.ndarray, batch_size: int
                      ) -> dict[str, float]:
    """Mean and std of the (deterministic) latents over `images`, and scale_factor = 1 / std
    (LDM's scale_by_std; Stable Diffusion's 0.18215 is the same number for its autoencoder)."""
    total, total_sq, count = 0.0, 0.0, 0
    for chunk, n in _batches(images, batch_size):
        z = np.asarray(_reconstruct_jit(ctx, weights, jnp.asarray(chunk))[1][:n], np.float64)
        total, total_sq, count = total + z.sum(), total_sq + (z**2).sum(), count + z.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean**2, 1e-12)))
    return {"latent_mean": float(mean), "latent_std": std, "scale_factor": 1.0 / std,
            "latent_stats_examples": len(images)}


def evaluate_run(ctx: AEContext, config: ml_collections.ConfigDict, weights: PyTree,
                 test_ds) -> dict[str, Any]:
    """rFD, code usage/perplexity and the prior-free rate on the test split, the attribute
    checker on reconstructions of captioned images, latent statistics on the train split (also
    returned under "workdir_files" -> latent_stats.json)."""
    from aigc_jax import data as data_lib
    from aigc_jax.evaluation import FeatureStats, frechet_distance, get_extractor

    batch_size = int(config.eval.batch_size)
    test = split_arrays(test_ds)
    images = test["image"]
    recons, counts = [], np.zeros(max(ctx.codebook_size, 1), np.int64)
    for chunk, n in _batches(images, batch_size):
        recon, _, idx = _reconstruct_jit(ctx, weights, jnp.asarray(chunk))
        recons.append(np.asarray(recon)[:n])
        if idx is not None:
            counts += np.bincount(np.asarray(idx)[:n].reshape(-1), minlength=ctx.codebook_size)
    recons = np.concatenate(recons)
    out: dict[str, Any] = {}
    if config.eval.extractor:
        ex = get_extractor(str(config.eval.extractor))
        stats = []
        for imgs in (images, recons):
            s = FeatureStats(ex.feature_dim)
            s.update(ex(imgs, int(config.eval.get("fid_batch_size", 500)))[0])
            stats.append(s.mean_cov())
        out[f"r{ex.fd_name}"] = float(frechet_distance(*stats[0], *stats[1]))
    if "attributes" in test:  # does the tokenizer keep what a prompt states? (DALL-E stage 1)
        checker = Checker("mnist" if config.data.get("glyphs") == "mnist" else "digits")
        for name, imgs in (("real", images), ("recon", recons)):
            acc = accuracy(checker.check(imgs, test["attributes"]))
            out.update({f"checker_{a}_accuracy_{name}": v for a, v in acc.items()})
    if ctx.codebook_size:
        usage, perplexity = q.usage_and_perplexity(jnp.asarray(counts, jnp.float32))
        out.update(codebook_size=ctx.codebook_size, codebook_usage=float(usage),
                   perplexity=float(perplexity),
                   bits_per_dim_prior_free=losses.bits_per_dim_prior_free(
                       ctx.codebook_size, int(np.prod(ctx.latent_shape[:2])),
                       int(np.prod(ctx.image_shape))))
    train_ds = data_lib.create_dataset(config, "train")
    n = int(config.eval.latent_stats_examples) or train_ds.num_examples
    stats = latent_statistics(ctx, weights, split_arrays(train_ds, n)["image"], batch_size)
    out.update(stats)
    out["workdir_files"] = {"latent_stats.json": {
        **stats, "latent_shape": list(ctx.latent_shape), "split": "train",
        "regularizer": ctx.regularizer}}
    return out


# ----------------------------------------------------------------------------- figures


@functools.partial(jax.jit, static_argnums=(0, 3))
def _traverse(ctx: AEContext, weights: PyTree, images: jax.Array, num: int) -> jax.Array:
    """Rows: for each latent channel c of the first image, z + t * std_c e_c for t in [-3, 3]
    (all positions of channel c), decoded (VQ/FSQ: re-quantised first). [D, num, H, W, C]."""
    x = preprocess(images)
    _, _, aux = encode_latents(ctx, weights, x)
    z = aux["mean"] if ctx.regularizer == "kl" else aux["z_e"]
    std = z.std(axis=(0, 1, 2))  # [D]
    t = jnp.linspace(-3.0, 3.0, num)
    d = z.shape[-1]
    eye = jnp.eye(d)[:, None, None, None, :]  # [D, 1, 1, 1, D]
    zs = z[:1][None] + (t[None, :, None, None, None] * std) * eye  # [D, num, h, w, D]
    zs = zs.reshape(d * num, *z.shape[1:])
    if ctx.regularizer != "kl":
        zs = ctx.quantizer.quantize(zs, weights.get("codebook"), ctx.cfg)[0]
    out = to_uint8(decode_latents(ctx, weights, zs)[0])
    return out.reshape(d, num, *out.shape[1:])


@functools.partial(jax.jit, static_argnums=(0, 4))
def _interpolate(ctx: AEContext, weights: PyTree, images_a: jax.Array, images_b: jax.Array,
                 num: int) -> jax.Array:
    """Decode `num` points on the line between the latents of image pairs: [P, num, H, W, C]."""
    za = reconstruct(ctx, weights, images_a)[1]
    zb = reconstruct(ctx, weights, images_b)[1]
    w = jnp.linspace(0.0, 1.0, num)[None, :, None, None, None]
    z = ((1.0 - w) * za[:, None] + w * zb[:, None]).reshape(-1, *za.shape[1:])
    if ctx.regularizer != "kl":
        z = ctx.quantizer.quantize(z, weights.get("codebook"), ctx.cfg)[0]
    out = to_uint8(decode_latents(ctx, weights, z)[0])
    return out.reshape(images_a.shape[0], num, *out.shape[1:])


def write_figures(ctx: AEContext, weights: PyTree, test_ds, out_dir: str) -> list[str]:
    """reconstructions.png (rows: originals, reconstructions, x2), latent_traversal.png and
    interpolations.png from the first test images."""
    if test_ds is None:
        logging.warning("autoencoder figures need the test split; none written")
        return []
    x = split_arrays(test_ds, 32)["image"]
    shape = x.shape[1:]
    recon = np.asarray(_reconstruct_jit(ctx, weights, jnp.asarray(x))[0])
    rows = np.stack([x[:8], recon[:8], x[8:16], recon[8:16]]).reshape(-1, *shape)
    files = [plotting.save_image_grid(rows, os.path.join(out_dir, "reconstructions.png"),
                                      ncols=8)]
    trav = np.asarray(_traverse(ctx, weights, jnp.asarray(x), 9))
    files.append(plotting.save_image_grid(trav.reshape(-1, *shape),
                                          os.path.join(out_dir, "latent_traversal.png"), ncols=9))
    lerp = np.asarray(_interpolate(ctx, weights, jnp.asarray(x[:8]), jnp.asarray(x[8:16]), 9))
    files.append(plotting.save_image_grid(lerp.reshape(-1, *shape),
                                          os.path.join(out_dir, "interpolations.png"), ncols=9))
    return files
