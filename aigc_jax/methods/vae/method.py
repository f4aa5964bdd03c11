"""The VAE family: ELBO, beta-VAE and IWAE objectives, importance-sampled NLL, prior samples.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes"; Burda, Grosse & Salakhutdinov
(2016), "Importance Weighted Autoencoders"; Higgins et al. (2017), beta-VAE.
"""

import dataclasses
import functools
import math
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax import components
from aigc_jax import distributions as dist
from aigc_jax.errors import UserError
from aigc_jax.methods.base import Frozen, Method
from aigc_jax.methods.common import EXTRACTORS, check_choice, sample_quality, to_float, to_uint8
from aigc_jax.models.vae import VAE, create_vae
from aigc_jax.optim import create_optimizer
from aigc_jax.state import TrainState, apply_gradients, create_state, global_norm, step_rng

LIKELIHOODS = ("bernoulli", "discretized_gaussian")


@dataclasses.dataclass(frozen=True)
class VAEContext:
    """What an objective needs besides parameters and data: the model and its likelihood."""

    model: VAE
    likelihood: str
    beta: float = 1.0
    num_importance_samples: int = 1


def preprocess(images: jax.Array, likelihood: str) -> jax.Array:
    """uint8 images to the likelihood's range: [0, 1] for Bernoulli, [-1, 1] for discretized."""
    return to_float(images, (0.0, 1.0) if likelihood == "bernoulli" else (-1.0, 1.0))


def log_likelihood(ctx: VAEContext, params, z: jax.Array, x: jax.Array) -> jax.Array:
    """log p(x|z) in nats: z [K, B, D], x [B, H, W, C] -> [K, B]."""
    k, b = z.shape[:2]
    out = ctx.model.apply(params, z.reshape(k * b, -1), method=VAE.decode)
    out = out.reshape(k, b, *out.shape[1:])
    if ctx.likelihood == "bernoulli":
        log_px = dist.bernoulli_log_prob(x[None], out)
    else:
        mean, log_sigma = jnp.split(out, 2, axis=-1)
        log_px = dist.discretized_gaussian_log_prob(x[None], mean, log_sigma)
    return dist.sum_except_batch(log_px, 2)


def encode_and_sample(ctx: VAEContext, params, x: jax.Array, rng: jax.Array, k: int):
    """q(z|x) parameters and k reparameterized samples z = mu + sigma * eps [K, B, D]."""
    mu, log_sigma = ctx.model.apply(params, x, method=VAE.encode)
    eps = jax.random.normal(rng, (k, *mu.shape))
    return mu, log_sigma, mu + jnp.exp(log_sigma) * eps


def log_weights(ctx: VAEContext, params, x: jax.Array, rng: jax.Array, k: int) -> jax.Array:
    """Importance log-weights log p(x, z_k) - log q(z_k | x), [K, B]."""
    mu, log_sigma, z = encode_and_sample(ctx, params, x, rng, k)
    log_pz = dist.normal_log_prob(z, 0.0, 0.0).sum(-1)
    log_qz = dist.normal_log_prob(z, mu, log_sigma).sum(-1)
    return log_likelihood(ctx, params, z, x) + log_pz - log_qz


# Objectives: (ctx, params, x, rng) -> (per-example loss [B], per-example metrics).


def elbo_objective(ctx: VAEContext, params, x, rng):
    """Negative ELBO with the analytic KL and one reparameterized sample; beta weights the KL."""
    mu, log_sigma, z = encode_and_sample(ctx, params, x, rng, 1)
    recon = -log_likelihood(ctx, params, z, x)[0]
    kl = dist.standard_normal_kl(mu, log_sigma).sum(-1)
    return recon + ctx.beta * kl, {"recon": recon, "kl": kl, "neg_elbo": recon + kl}


def iwae_objective(ctx: VAEContext, params, x, rng):
    """Negative IWAE bound: -log mean_k p(x, z_k) / q(z_k|x) with k importance samples."""
    k = ctx.num_importance_samples
    bound = jax.nn.logsumexp(log_weights(ctx, params, x, rng, k), axis=0) - math.log(k)
    return -bound, {f"neg_iwae_k{k}": -bound}


OBJECTIVES: dict[str, Callable] = {
    "elbo": elbo_objective,
    "beta_vae": elbo_objective,  # same function; config.vae.beta sets the KL weight
    "iwae": iwae_objective,
}


def importance_nll(ctx: VAEContext, params, x: jax.Array, rng: jax.Array, k: int,
                   chunk: int) -> jax.Array:
    """-log p(x) estimated with k importance samples, in chunks so memory stays bounded. [B]"""
    if k % chunk:
        raise UserError(f"eval.nll_samples={k} must be a multiple of eval.nll_chunk={chunk}.")

    def body(running, i):
        lw = log_weights(ctx, params, x, jax.random.fold_in(rng, i), chunk)
        return jnp.logaddexp(running, jax.nn.logsumexp(lw, axis=0)), None

    init = jnp.full(x.shape[:1], -jnp.inf)
    total, _ = jax.lax.scan(body, init, jnp.arange(k // chunk))
    return -(total - math.log(k))


def validate(config: ml_collections.ConfigDict) -> None:
    """Reject impossible VAE settings with one clear line each."""
    from aigc_jax.models.vae import ACTIVATIONS

    m = config.model
    if m.arch not in ("mlp", "conv"):
        raise UserError(f"config.model.arch={m.arch!r} is unknown; expected 'mlp' or 'conv'.")
    if m.activation not in ACTIVATIONS:
        raise UserError(f"config.model.activation={m.activation!r} is unknown; "
                        f"expected one of {sorted(ACTIVATIONS)}.")
    if m.dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"config.model.dtype={m.dtype!r} must be float32, bfloat16 or float16.")
    sizes = {"model.latent_dim": (m.latent_dim,), "model.hidden": tuple(m.hidden),
             "model.channels": tuple(m.channels),
             "num_importance_samples": (config.vae.num_importance_samples,),
             "eval.iwae_k": (config.eval.iwae_k,), "eval.nll_samples": (config.eval.nll_samples,),
             "eval.nll_chunk": (config.eval.nll_chunk,)}
    for key, values in sizes.items():
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                             for v in values):
            raise UserError(f"config.{key}={values if len(values) != 1 else values[0]!r} "
                            "must be positive integers.")
    if config.eval.nll_samples % config.eval.nll_chunk:
        raise UserError(f"config.eval.nll_samples={config.eval.nll_samples} must be a multiple "
                        f"of eval.nll_chunk={config.eval.nll_chunk}.")
    if not config.vae.beta >= 0:
        raise UserError(f"config.vae.beta={config.vae.beta} must be a non-negative number.")
    check_choice("eval.extractor", config.eval.extractor, EXTRACTORS)
    if int(config.eval.fid_num_samples) < 0:
        raise UserError(f"config.eval.fid_num_samples={config.eval.fid_num_samples} must not "
                        "be negative (0 turns sample quality off).")


def _context(config: ml_collections.ConfigDict, info: dict) -> VAEContext:
    if config.vae.likelihood not in LIKELIHOODS:
        raise UserError(f"config.vae.likelihood={config.vae.likelihood!r} is unknown; "
                        f"expected one of {LIKELIHOODS}.")
    if config.vae.objective not in OBJECTIVES:
        raise UserError(f"config.vae.objective={config.vae.objective!r} is unknown; "
                        f"known objectives: {sorted(OBJECTIVES)}.")
    num_outputs = 1 if config.vae.likelihood == "bernoulli" else 2
    model = create_vae(config.model, info["image_shape"], num_outputs)
    beta = float(config.vae.beta) if config.vae.objective == "beta_vae" else 1.0
    return VAEContext(model, config.vae.likelihood, beta, int(config.vae.num_importance_samples))


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict | None = None) -> Method:
    """The VAE Method for `config` on images described by `info`."""
    ctx = _context(config, info)
    objective = OBJECTIVES[config.vae.objective]
    tx = create_optimizer(config.optimizer, int(config.train.num_steps))
    ema_decay = float(config.train.ema_decay)
    num_dims = int(np.prod(info["image_shape"]))
    latent_dim = int(config.model.latent_dim)

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        x = preprocess(batch["image"], ctx.likelihood)
        params = ctx.model.init(rng, x[:1])
        return create_state(params, tx, jax.random.fold_in(rng, 1))

    def train_step(state: TrainState, batch: dict, frozen: Frozen = None):
        x = preprocess(batch["image"], ctx.likelihood)

        def loss_fn(params):
            loss, aux = objective(ctx, params, x, step_rng(state))
            return loss.mean(), aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = apply_gradients(state, grads, tx, ema_decay)
        metrics = {"loss": loss, "grad_norm": global_norm(grads),
                   **{k: v.mean() for k, v in aux.items()}}
        return state, metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen: Frozen = None) -> dict:
        x = preprocess(batch["image"], ctx.likelihood)
        params = state.ema_params
        _, metrics = elbo_objective(ctx, params, x, rng)
        k = int(config.eval.iwae_k)
        bound = jax.nn.logsumexp(log_weights(ctx, params, x, rng, k), 0) - math.log(k)
        metrics[f"neg_iwae_k{k}"] = -bound
        metrics["bits_per_dim"] = metrics["neg_elbo"] / (num_dims * math.log(2.0))
        return metrics

    def final_eval_step(state: TrainState, batch: dict, rng: jax.Array,
                        frozen: Frozen = None) -> dict:
        x = preprocess(batch["image"], ctx.likelihood)
        k = int(config.eval.nll_samples)
        nll = importance_nll(ctx, state.ema_params, x, rng, k, int(config.eval.nll_chunk))
        return {f"nll_iwae_k{k}": nll, f"nll_bits_per_dim_k{k}": nll / (num_dims * math.log(2))}

    @functools.partial(jax.jit, static_argnums=2)
    def sample(state: TrainState, rng: jax.Array, num: int, frozen: Frozen = None) -> jax.Array:
        z = jax.random.normal(rng, (num, latent_dim))
        return decode_mean(ctx, state.ema_params, z)

    def figures(state: TrainState, test_ds, workdir: str, frozen: Frozen = None) -> list[str]:
        return write_figures(ctx, state.ema_params, test_ds, os.path.join(workdir, "figures"))

    def evaluate(state: TrainState, test_ds, rng: jax.Array, num_samples: int | None,
                 frozen: Frozen = None) -> dict:
        """Sample quality of `num_samples` prior samples (`common.sample_quality`; default
        `eval.fid_num_samples`, 0 off), so --num_samples means the same in every family."""
        return sample_quality(config, lambda n, i: sample(state, jax.random.fold_in(rng, i), n),
                              num_samples, dict(weights="ema", likelihood=ctx.likelihood,
                                                samples="decoder mean of z ~ N(0, I)"))

    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  final_eval_step=final_eval_step, sample=sample, evaluate=evaluate,
                  figures=figures)


def decode_mean(ctx: VAEContext, params, z: jax.Array) -> jax.Array:
    """The mean image E[x|z] as uint8 [N, H, W, C] (Bernoulli probabilities or Gaussian means)."""
    out = ctx.model.apply(params, z, method=VAE.decode)
    if ctx.likelihood == "bernoulli":
        return to_uint8(jax.nn.sigmoid(out), (0.0, 1.0))
    return to_uint8(jnp.split(out, 2, axis=-1)[0])


@functools.partial(jax.jit, static_argnums=0)
def reconstruct(ctx: VAEContext, params, images: jax.Array) -> jax.Array:
    """Decode the posterior mean of each image: uint8 [N, H, W, C] -> uint8 [N, H, W, C]."""
    mu, _ = ctx.model.apply(params, preprocess(images, ctx.likelihood), method=VAE.encode)
    return decode_mean(ctx, params, mu)


@functools.partial(jax.jit, static_argnums=(0, 4))
def interpolate(ctx: VAEContext, params, images_a: jax.Array, images_b: jax.Array,
                num: int) -> jax.Array:
    """Decode `num` points on the line between posterior means: [P] pairs -> [P, num, H, W, C]."""
    mu_a, _ = ctx.model.apply(params, preprocess(images_a, ctx.likelihood), method=VAE.encode)
    mu_b, _ = ctx.model.apply(params, preprocess(images_b, ctx.likelihood), method=VAE.encode)
    w = jnp.linspace(0.0, 1.0, num)[None, :, None]
    z = (1.0 - w) * mu_a[:, None] + w * mu_b[:, None]  # [P, num, D]
    out = decode_mean(ctx, params, z.reshape(-1, z.shape[-1]))
    return out.reshape(*z.shape[:2], *out.shape[1:])


@functools.partial(jax.jit, static_argnums=(0, 2))
def latent_manifold(ctx: VAEContext, params, n: int) -> jax.Array:
    """Kingma & Welling's Fig. 4: decode an n x n grid of a 2-D latent, spaced by the inverse
    Gaussian CDF of evenly spaced points in (0, 1). Returns uint8 [n * n, H, W, C]."""
    q = jax.scipy.stats.norm.ppf(jnp.linspace(0.5 / n, 1.0 - 0.5 / n, n))
    z1, z2 = jnp.meshgrid(q, q[::-1])
    return decode_mean(ctx, params, jnp.stack([z1.ravel(), z2.ravel()], axis=-1))


def write_figures(ctx: VAEContext, params, test_ds, out_dir: str) -> list[str]:
    """Reconstructions and interpolations of test images, and the manifold for a 2-D latent."""
    from aigc_jax.plotting import save_image_grid

    files = []
    latent_dim = ctx.model.encoder.latent_dim
    if latent_dim == 2:
        grid = np.asarray(latent_manifold(ctx, params, 20))
        files.append(save_image_grid(grid, f"{out_dir}/manifold.png", ncols=20))
    if test_ds is not None:
        x = test_ds.images[:32]
        recon = np.asarray(reconstruct(ctx, params, x))
        pairs = np.concatenate([x[:16].reshape(2, 8, *x.shape[1:]),
                                recon[:16].reshape(2, 8, *x.shape[1:])], 0)
        # rows: originals, reconstructions, originals, reconstructions
        pairs = pairs[[0, 2, 1, 3]].reshape(-1, *x.shape[1:])
        files.append(save_image_grid(pairs, f"{out_dir}/reconstructions.png", ncols=8))
        lerp = np.asarray(interpolate(ctx, params, x[:8], x[8:16], 10))
        files.append(save_image_grid(lerp.reshape(-1, *x.shape[1:]),
                                     f"{out_dir}/interpolations.png", ncols=10))
    return files


def autoencoder_role(config: ml_collections.ConfigDict, info: dict,
                     workdir: str) -> components.Autoencoder:
    """A trained VAE as an `Autoencoder` component: encode to the posterior mean, decode to the
    mean image in [-1, 1]. The prior is N(0, I), so the latents need no scale factor."""
    del workdir
    ctx = _context(config, info)

    def encode(weights, images: jax.Array) -> jax.Array:
        mu, _ = ctx.model.apply(weights, preprocess(images, ctx.likelihood), method=VAE.encode)
        return mu  # [B, D]

    def decode(weights, z: jax.Array) -> jax.Array:
        out = ctx.model.apply(weights, z, method=VAE.decode)
        if ctx.likelihood == "bernoulli":
            return 2.0 * jax.nn.sigmoid(out) - 1.0
        return jnp.split(out, 2, axis=-1)[0]  # [B, H, W, C] in [-1, 1]

    return components.Autoencoder(encode, decode, (int(config.model.latent_dim),),
                                  tuple(info["image_shape"]))
