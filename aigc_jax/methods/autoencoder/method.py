"""The autoencoder family: the first stage of latent models, trained on reconstruction.

`config.autoencoder.regularizer` picks the bottleneck: "kl" (LDM's AutoencoderKL, a diagonal
Gaussian posterior with a tiny KL weight), "vq" (VQ-VAE / VQGAN, learned or EMA codebook with
dead-code restarts) or "fsq" (finite scalar quantisation). An optional PatchGAN discriminator
(`autoencoder.disc_weight > 0`) adds VQGAN's adaptive hinge loss after `disc_start` steps.

State layout: `params` = {"autoencoder", ["logvar"] (KL), ["codebook"] (VQ),
["discriminator"]}, one optimizer each; `ema_params` = {"autoencoder", ["codebook"]} (what a
component loads); `model_state` = {"vq": EMA cluster sizes and sums, unused-step counters}.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from aigc_jax.errors import UserError
from aigc_jax.methods.autoencoder import losses
from aigc_jax.methods.base import Method
from aigc_jax.methods.common import to_float, to_uint8
from aigc_jax.methods.gan.losses import LOSSES as GAN_LOSSES
from aigc_jax.models import quantizers as q
from aigc_jax.models.autoencoder import Autoencoder, PatchDiscriminator, downsampling_factor
from aigc_jax.models.layers import resolve_dtype
from aigc_jax.optim import create_optimizer
from aigc_jax.state import (
    TrainState,
    create_state,
    ema_update,
    global_norm,
    optimizer_update,
    step_rng,
)

REGULARIZERS = ("kl", *q.QUANTIZERS)
PyTree = Any


@dataclasses.dataclass(frozen=True)
class AEContext:
    """The networks and settings a step needs, built once from the config."""

    model: Autoencoder
    discriminator: PatchDiscriminator | None
    regularizer: str
    cfg: ml_collections.ConfigDict  # config.autoencoder (hashable by identity)
    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]
    codebook_size: int  # 0 for the KL autoencoder

    @property
    def quantizer(self) -> q.Quantizer | None:
        """The registry entry of a discrete bottleneck (None for "kl")."""
        return q.QUANTIZERS.get(self.regularizer)

    def __hash__(self):
        return id(self)


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 [B, H, W, C] -> float32 in [-1, 1] (`methods.common.to_float`)."""
    return to_float(images)


def validate(config: ml_collections.ConfigDict) -> None:
    """Reject impossible autoencoder settings with one clear line each."""
    a, m = config.autoencoder, config.model
    if a.regularizer not in REGULARIZERS:
        raise UserError(f"config.autoencoder.regularizer={a.regularizer!r} is unknown; expected "
                        f"one of {REGULARIZERS}.")
    if a.reconstruction not in losses.RECONSTRUCTIONS:
        raise UserError(f"config.autoencoder.reconstruction={a.reconstruction!r} is unknown; "
                        f"expected one of {sorted(losses.RECONSTRUCTIONS)}.")
    losses.check_perceptual(str(a.perceptual))
    if a.disc_loss not in GAN_LOSSES:
        raise UserError(f"config.autoencoder.disc_loss={a.disc_loss!r} is unknown; known "
                        f"losses: {sorted(GAN_LOSSES)}.")
    ints = {"model.ch": (m.ch,), "model.ch_mult": tuple(m.ch_mult),
            "model.num_res_blocks": (m.num_res_blocks,), "model.z_channels": (m.z_channels,),
            "autoencoder.codebook_size": (a.codebook_size,),
            "autoencoder.fsq_levels": tuple(a.fsq_levels)}
    for key, values in ints.items():
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                             for v in values):
            raise UserError(f"config.{key}={values if len(values) != 1 else values[0]!r} must "
                            "be positive integers.")
    if a.regularizer == "fsq" and min(a.fsq_levels) < 2:
        raise UserError(f"config.autoencoder.fsq_levels={tuple(a.fsq_levels)} needs at least "
                        "2 levels per channel.")
    if a.regularizer == "vq" and int(a.codebook_size) < 2:
        raise UserError(f"config.autoencoder.codebook_size={a.codebook_size} must be >= 2.")
    if not 0.0 <= float(a.ema_decay) < 1.0:
        raise UserError(f"config.autoencoder.ema_decay={a.ema_decay} must be in [0, 1).")
    for key in ("kl_weight", "beta", "disc_weight", "codebook_weight", "perceptual_weight"):
        if not float(a[key]) >= 0:
            raise UserError(f"config.autoencoder.{key}={a[key]} must be a non-negative number.")
    for key in ("disc_start", "dead_steps"):
        if int(a[key]) < 0:
            raise UserError(f"config.autoencoder.{key}={a[key]} must not be negative.")
    resolve_dtype(m.dtype)
    extractor = str(config.eval.extractor)
    from aigc_jax.evaluation import EXTRACTORS

    if extractor and extractor not in EXTRACTORS:
        raise UserError(f"config.eval.extractor={extractor!r} is unknown; expected '' (no rFD) "
                        f"or one of {EXTRACTORS}.")


def make_context(config: ml_collections.ConfigDict, info: dict) -> AEContext:
    """The autoencoder (and discriminator) for `config` on images described by `info`."""
    validate(config)
    a, m = config.autoencoder, config.model
    shape = tuple(int(s) for s in info["image_shape"])
    f = downsampling_factor(tuple(m.ch_mult))
    if shape[0] % f or shape[1] % f:
        raise UserError(f"config.model.ch_mult={tuple(m.ch_mult)} downsamples by f={f}, which "
                        f"does not divide the {shape[0]}x{shape[1]} images (pad or resize them "
                        "with data.pad / data.image_size).")
    if a.regularizer == "fsq":
        embed_dim, k = len(a.fsq_levels), int(np.prod(a.fsq_levels))
    else:
        embed_dim = int(m.embed_dim) or int(m.z_channels)
        k = int(a.codebook_size) if a.regularizer == "vq" else 0
    model = Autoencoder(shape[-1], int(m.ch), tuple(m.ch_mult), int(m.num_res_blocks),
                        int(m.z_channels), embed_dim, a.regularizer == "kl",
                        tuple(m.attn_resolutions), float(m.dropout), int(m.num_groups),
                        resolve_dtype(m.dtype))
    disc = None
    if float(a.disc_weight) > 0:
        disc = PatchDiscriminator(int(a.disc_ndf), int(a.disc_layers), int(m.num_groups))
    latent = (shape[0] // f, shape[1] // f, embed_dim)
    return AEContext(model, disc, a.regularizer, a, shape, latent, k)


# ----------------------------------------------------------------------------- the pieces


def encode_latents(ctx: AEContext, weights: PyTree, x: jax.Array, rng: jax.Array | None = None,
                   train: bool = False) -> tuple[jax.Array, jax.Array | None, dict]:
    """x in [-1, 1] -> (latents z [B, h, w, D], code indices or None, aux).

    KL: a posterior sample when `rng` is given, else its mean (aux: mean, logvar). VQ/FSQ: the
    quantised latents with straight-through gradients (aux: pre-quantisation z_e, losses).
    """
    rngs = {"dropout": rng} if (train and rng is not None) else {}
    h = ctx.model.apply({"params": weights["autoencoder"]}, x, train, rngs=rngs,
                        method=Autoencoder.encode)
    if ctx.regularizer == "kl":
        mean, logvar = jnp.split(h, 2, axis=-1)
        logvar = jnp.clip(logvar, -30.0, 20.0)  # as LDM's DiagonalGaussianDistribution
        z = mean
        if rng is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.fold_in(rng, 1),
                                                                 mean.shape)
        return z, None, {"mean": mean, "logvar": logvar}
    z_q, idx, ql = ctx.quantizer.quantize(h, weights.get("codebook"), ctx.cfg)
    return z_q, idx, {"z_e": h, **ql}


def decode_latents(ctx: AEContext, weights: PyTree, z: jax.Array, rng: jax.Array | None = None,
                   train: bool = False) -> tuple[jax.Array, jax.Array]:
    """z [B, h, w, D] -> (x^ [B, H, W, C] in about [-1, 1], the decoder's last-layer input)."""
    rngs = {"dropout": rng} if (train and rng is not None) else {}
    return ctx.model.apply({"params": weights["autoencoder"]}, z, train, rngs=rngs,
                           method=Autoencoder.decode)


def indices_to_latents(ctx: AEContext, weights: PyTree, idx: jax.Array) -> jax.Array:
    """Code indices [B, h, w] -> quantised latents [B, h, w, D] (VQ: codebook rows; FSQ: grid)."""
    if ctx.regularizer == "vq":
        return weights["codebook"][idx]
    return q.fsq_indices_to_codes(idx, tuple(ctx.cfg.fsq_levels))


def reconstruct(ctx: AEContext, weights: PyTree, images: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """uint8 images -> (uint8 reconstructions, deterministic latents, code indices or None)."""
    z, idx, _ = encode_latents(ctx, weights, preprocess(images))
    return to_uint8(decode_latents(ctx, weights, z)[0]), z, idx


# ----------------------------------------------------------------------------- the method


def _networks(ctx: AEContext, rng: jax.Array, x: jax.Array) -> dict[str, PyTree]:
    k_ae, k_d, k_c = jax.random.split(rng, 3)
    params = {"autoencoder": ctx.model.init(k_ae, x)["params"]}
    if ctx.regularizer == "kl":
        params["logvar"] = jnp.full((), float(ctx.cfg.logvar_init), jnp.float32)
    if ctx.regularizer == "vq":
        k, d = ctx.codebook_size, ctx.latent_shape[-1]
        params["codebook"] = jax.random.uniform(k_c, (k, d), jnp.float32, -1.0 / k, 1.0 / k)
    if ctx.discriminator is not None:
        params["discriminator"] = ctx.discriminator.init(k_d, x)["params"]
    return params


def create(config: ml_collections.ConfigDict, info: dict, components: dict | None = None
           ) -> Method:
    """The autoencoder Method for `config` on images described by `info`."""
    del components  # a first stage uses none
    ctx = make_context(config, info)
    a = config.autoencoder
    num_steps = int(config.train.num_steps)
    tx = create_optimizer(config.optimizer, num_steps)
    d_tx = create_optimizer(config.optimizer, num_steps,
                            learning_rate=float(a.disc_learning_rate
                                                or config.optimizer.learning_rate))
    use_ema_codebook = ctx.regularizer == "vq" and bool(a.codebook_ema)
    ema_decay = float(config.train.ema_decay)
    recon_fn = losses.RECONSTRUCTIONS[a.reconstruction]
    gan = GAN_LOSSES[a.disc_loss]
    kl_weight, beta_cw = float(a.kl_weight), float(a.codebook_weight)
    disc_weight, disc_start, disc_factor = float(a.disc_weight), int(a.disc_start), \
        float(a.disc_factor)

    def txs(params: dict) -> dict:
        out = {k: tx for k in params}
        if "discriminator" in params:
            out["discriminator"] = d_tx
        if use_ema_codebook:
            out["codebook"] = optax.set_to_zero()  # moved by the EMA rule, not by gradients
        return out

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        x = preprocess(batch["image"][:1])
        params = _networks(ctx, rng, x)
        model_state = {}
        if ctx.regularizer == "vq":
            model_state["vq"] = q.init_vq_stats(params["codebook"])
        ema_keys = tuple(k for k in ("autoencoder", "codebook") if k in params)
        return create_state(params, txs(params), jax.random.fold_in(rng, 1), model_state,
                            ema_keys=ema_keys)

    def nll_of(x, x_hat, logvar):
        rec = recon_fn(x, x_hat)
        if ctx.regularizer == "kl":  # LDM: summed over pixels, averaged over the batch
            return losses.weighted_nll(rec, logvar).sum() / x.shape[0]
        return rec.mean()  # VQGAN: averaged over pixels

    def train_step(state: TrainState, batch: dict, frozen=None):
        del frozen
        x = preprocess(batch["image"])
        rng = step_rng(state)
        k_enc, k_dec = jax.random.split(rng)
        factor = jnp.where(state.step >= disc_start, disc_factor, 0.0)
        d_params = state.params.get("discriminator")

        def ae_loss(p):
            z, idx, aux = encode_latents(ctx, p, x, k_enc, train=True)
            x_hat, pre = decode_latents(ctx, p, z, k_dec, train=True)
            logvar = p.get("logvar", jnp.zeros(()))
            nll = nll_of(x, x_hat, logvar)
            metrics = {"nll": nll, "rec_loss": recon_fn(x, x_hat).mean()}
            if ctx.regularizer == "kl":
                kl = losses.gaussian_kl(aux["mean"], aux["logvar"]).mean()
                loss = nll + kl_weight * kl
                metrics.update(kl=kl, logvar=logvar)
            else:
                qloss = aux["commitment"] + (0.0 if use_ema_codebook else aux["codebook"])
                loss = nll + beta_cw * qloss
                metrics.update(commitment=aux["commitment"], codebook_loss=aux["codebook"])
            if ctx.discriminator is not None:
                def g_of(xh):
                    return gan.g(ctx.discriminator.apply({"params": d_params}, xh))

                g_loss = g_of(x_hat)
                kernel = p["autoencoder"]["decoder"]["conv_out"]["kernel"]
                sg_x, sg_pre = jax.lax.stop_gradient(x_hat), jax.lax.stop_gradient(pre)
                g_nll = jax.grad(lambda xh: nll_of(x, xh, jax.lax.stop_gradient(logvar)))(sg_x)
                g_gan = jax.grad(g_of)(sg_x)
                d_weight = disc_weight * losses.adaptive_weight(
                    losses.last_layer_grad(sg_pre, kernel, g_nll),
                    losses.last_layer_grad(sg_pre, kernel, g_gan))
                loss = loss + d_weight * factor * g_loss
                metrics.update(g_loss=g_loss, d_weight=d_weight, disc_factor=factor)
            return loss, (metrics, x_hat, idx, aux)

        trained = {k: v for k, v in state.params.items() if k != "discriminator"}
        (loss, (metrics, x_hat, idx, aux)), grads = jax.value_and_grad(
            ae_loss, has_aux=True)(trained)
        params, opt_state = dict(state.params), dict(state.opt_state)
        for k in trained:
            params[k], opt_state[k] = optimizer_update(state.params[k], state.opt_state[k],
                                                       grads[k], txs(state.params)[k])
        model_state = dict(state.model_state)
        if ctx.regularizer == "vq":
            z_e = aux["z_e"].reshape(-1, aux["z_e"].shape[-1])
            counts = q.code_counts(idx, ctx.codebook_size)
            stats = state.model_state["vq"]
            codebook = params["codebook"]
            if use_ema_codebook:
                codebook, stats = q.ema_codebook_update(stats, z_e, idx.reshape(-1),
                                                        float(a.ema_decay), float(a.ema_eps))
            codebook, stats, restarted = q.restart_dead_codes(
                codebook, stats, counts, jax.lax.stop_gradient(z_e),
                jax.random.fold_in(rng, 7), int(a.dead_steps))
            params["codebook"], model_state["vq"] = codebook, stats
            usage, perplexity = q.usage_and_perplexity(counts)
            metrics.update(codebook_usage=usage, perplexity=perplexity, restarted=restarted)
        elif ctx.regularizer == "fsq":
            usage, perplexity = q.usage_and_perplexity(q.code_counts(idx, ctx.codebook_size))
            metrics.update(codebook_usage=usage, perplexity=perplexity)
        if ctx.discriminator is not None:
            fake = jax.lax.stop_gradient(x_hat)

            def d_loss_fn(dp):
                real_logits = ctx.discriminator.apply({"params": dp}, x)
                fake_logits = ctx.discriminator.apply({"params": dp}, fake)
                # LDM's hinge_d_loss is half the GAN family's hinge D loss.
                return factor * 0.5 * gan.d(real_logits, fake_logits), (
                    real_logits.mean(), fake_logits.mean())

            (d_loss, (lr_, lf_)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
            params["discriminator"], opt_state["discriminator"] = optimizer_update(
                d_params, state.opt_state["discriminator"], d_grads, d_tx)
            metrics.update(d_loss=d_loss, logits_real=lr_, logits_fake=lf_)
        ema = {k: ema_update(state.ema_params[k], params[k], ema_decay) for k in state.ema_params}
        state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema, model_state=model_state)
        metrics.update(loss=loss, grad_norm=global_norm(grads))
        return state, metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None) -> dict:
        del rng, frozen
        recon, z, _ = reconstruct(ctx, state.ema_params, batch["image"])
        win = losses.ssim_window(ctx.image_shape[0])
        out = {"psnr": losses.psnr(batch["image"], recon),
               "ssim": losses.ssim(batch["image"], recon, win_size=win),
               "mse": jnp.mean((preprocess(recon) - preprocess(batch["image"])) ** 2,
                               axis=(1, 2, 3))}
        if ctx.regularizer == "kl":
            _, _, aux = encode_latents(ctx, state.ema_params, preprocess(batch["image"]))
            out["kl"] = losses.gaussian_kl(aux["mean"], aux["logvar"])
        return out

    def evaluate(state: TrainState, test_ds, rng: jax.Array, num_samples: int | None,
                 frozen=None) -> dict:
        del rng, num_samples, frozen
        from aigc_jax.methods.autoencoder.evaluation import evaluate_run

        return evaluate_run(ctx, config, state.ema_params, test_ds)

    def figures(state: TrainState, test_ds, workdir: str, frozen=None) -> list[str]:
        del frozen
        from aigc_jax.methods.autoencoder.evaluation import write_figures

        return write_figures(ctx, state.ema_params, test_ds, os.path.join(workdir, "figures"))

    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  evaluate=evaluate, figures=figures)


# ----------------------------------------------------------------------------- component


def read_latent_stats(workdir: str) -> dict | None:
    """workdir/latent_stats.json as written by `--mode=eval`, or None."""
    path = os.path.join(workdir, "latent_stats.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def autoencoder_role(config: ml_collections.ConfigDict, info: dict, workdir: str):
    """The `Autoencoder` component of a trained run: scaled latents in and out, and for VQ/FSQ
    the code indices. The scale factor comes from latent_stats.json (1.0 if eval never ran)."""
    from aigc_jax import components

    ctx = make_context(config, info)
    stats = read_latent_stats(workdir)
    if stats is None:
        logging.warning("autoencoder %s has no latent_stats.json (run --mode=eval on it): "
                        "latents are not rescaled (scale_factor 1.0)", workdir)
        scale = 1.0
    else:
        scale = float(stats["scale_factor"])

    def encode(w, images):
        return encode_latents(ctx, w, preprocess(images))[0] * scale

    def decode(w, latents):
        z = latents / scale
        if ctx.regularizer != "kl":  # LDM's VQ interface re-quantises before decoding
            z = ctx.quantizer.quantize(z, w.get("codebook"), ctx.cfg)[0]
        return decode_latents(ctx, w, z)[0]

    discrete = {}
    if ctx.codebook_size:
        discrete = dict(
            encode_indices=lambda w, images: encode_latents(ctx, w, preprocess(images))[1],
            decode_indices=lambda w, idx: decode_latents(
                ctx, w, indices_to_latents(ctx, w, idx))[0],
            codebook_size=ctx.codebook_size)
    return components.Autoencoder(encode=encode, decode=decode, latent_shape=ctx.latent_shape,
                                  image_shape=ctx.image_shape, scale_factor=scale, **discrete)
