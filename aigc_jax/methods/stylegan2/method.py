"""The StyleGAN2 family (Karras et al., 2020): one compiled step per iteration, D then G.

Per step: D main (non-saturating logistic loss, fakes from style-mixed latents), D reg (lazy R1
on reals, times gamma / 2 times the interval, on steps % r1_interval == 0), G main, G reg
(path length on batch / pl_batch_shrink, weight times the interval, on steps % pl_interval ==
0), the tracked w_avg and the EMA of G. The lazy branches are `lax.cond`s on the step counter
inside the jitted step, so only the taken branch runs and the step stays a pure function of
(state, batch) with randomness from `step_rng`. Each reg branch is its own Adam update, as in
the official code; Adam's lr and betas are corrected by c = k / (k + 1).

State layout: `params`/`opt_state` = {"generator", "discriminator"}; `ema_params` =
{"generator"}; `model_state` = {"w_avg": [w_dim] (tracked with decay w_avg_beta, shared by
the EMA generator as the official code copies it), "pl_mean": scalar}.
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from aigc_jax.errors import UserError
from aigc_jax.methods.base import Frozen, Method
from aigc_jax.methods.common import check_choice, sample_quality, to_uint8
from aigc_jax.methods.common import to_float as preprocess
from aigc_jax.methods.gan.losses import LOSSES, r1_penalty
from aigc_jax.methods.gan.method import fixed_latents, latents
from aigc_jax.methods.stylegan2 import figures as figs
from aigc_jax.methods.stylegan2 import quality
from aigc_jax.methods.stylegan2.regularizers import (
    is_reg_step,
    lazy_optimizer_config,
    path_length_penalty,
    path_lengths,
)
from aigc_jax.methods.stylegan2.styles import (
    StyleGANContext,
    discriminate,
    generate,
    mixing_regularized_ws,
    synthesize,
)
from aigc_jax.models.layers import CONV_IMPLS
from aigc_jax.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, num_ws
from aigc_jax.optim import create_optimizer
from aigc_jax.state import TrainState, create_state, ema_update, optimizer_update, step_rng


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError for StyleGAN2 settings that cannot work, before anything compiles."""
    check_choice("loss", config.loss, LOSSES)
    m, s = config.model, config.stylegan
    check_choice("model.conv_impl", m.conv_impl, CONV_IMPLS)
    for key in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max",
                "mbstd_group_size", "mbstd_num_features"):
        if int(m[key]) < 1:
            raise UserError(f"config.model.{key}={m[key]} must be a positive integer.")
    if not float(m.mapping_lr_mul) > 0:
        raise UserError(f"config.model.mapping_lr_mul={m.mapping_lr_mul} must be positive.")
    for key in ("r1_interval", "pl_interval", "pl_batch_shrink"):
        if int(s[key]) < 1:
            raise UserError(f"config.stylegan.{key}={s[key]} must be a positive integer.")
    for key in ("r1_gamma", "pl_weight", "ema_rampup"):
        if float(s[key]) < 0:
            raise UserError(f"config.stylegan.{key}={s[key]} must not be negative.")
    if not float(s.ema_kimg) > 0:
        raise UserError(f"config.stylegan.ema_kimg={s.ema_kimg} must be positive (the EMA "
                        "half-life in thousands of images).")
    for key in ("style_mixing_prob", "pl_decay", "w_avg_beta"):
        if not 0.0 <= float(s[key]) <= 1.0:
            raise UserError(f"config.stylegan.{key}={s[key]} must be in [0, 1].")
    psi = config.sampler.truncation_psi
    if not np.isfinite(float(psi)):
        raise UserError(f"config.sampler.truncation_psi={psi} must be a finite number.")
    batch = int(config.train.batch_size)
    if batch % int(s.pl_batch_shrink):
        raise UserError(f"config.train.batch_size={batch} must be a multiple of "
                        f"config.stylegan.pl_batch_shrink={s.pl_batch_shrink}.")
    group = min(int(m.mbstd_group_size), batch)
    if batch % group:
        raise UserError(f"config.train.batch_size={batch} must be a multiple of "
                        f"config.model.mbstd_group_size={m.mbstd_group_size}.")


def make_context(config: ml_collections.ConfigDict, info: dict) -> StyleGANContext:
    """The generator/discriminator pair for `config` on images described by `info`."""
    validate(config)
    m = config.model
    shape = tuple(int(v) for v in info["image_shape"])
    side = shape[0]
    if shape[0] != shape[1] or side < 4 or side & (side - 1):
        raise UserError(f"StyleGAN2 needs square images with a power-of-two side >= 4; the data "
                        f"is {shape[0]}x{shape[1]} (set config.data.image_size or data.pad).")
    if int(m.channel_base) < 1 or int(m.mbstd_num_features) > 0 and (
            min(int(m.channel_base) // 4, int(m.channel_max)) % int(m.mbstd_num_features)):
        raise UserError(f"config.model.mbstd_num_features={m.mbstd_num_features} must divide "
                        "the 4x4 channel count min(channel_base // 4, channel_max).")
    layers = num_ws(side)
    crossover = int(config.sampler.crossover)
    if not 0 <= crossover <= layers:
        raise UserError(f"config.sampler.crossover={crossover} must be in [0, {layers}]: a "
                        f"{side}x{side} generator has {layers} style inputs.")
    g = StyleGAN2Generator(side, shape[2], int(m.z_dim), int(m.w_dim), int(m.mapping_layers),
                           float(m.mapping_lr_mul), int(m.channel_base), int(m.channel_max),
                           m.conv_impl, bool(m.use_noise))
    d = StyleGAN2Discriminator(int(m.channel_base), int(m.channel_max), int(m.mbstd_group_size),
                               int(m.mbstd_num_features), m.conv_impl)
    return StyleGANContext(g, d, int(m.z_dim), int(m.w_dim), layers, shape,
                           int(config.fixed_noise_seed))


def ema_beta(batch: int, ema_kimg: float, step: jax.Array, rampup: float = 0.0) -> jax.Array:
    """EMA decay with a half-life of ema_kimg thousand images: 0.5 ** (batch / (ema_kimg 1e3));
    with `rampup`, the half-life is at most rampup x the images seen so far (ADA's ramp-up)."""
    ema_nimg = jnp.asarray(ema_kimg * 1000.0, jnp.float32)
    if rampup > 0:
        ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch * rampup)
    return 0.5 ** (batch / jnp.maximum(ema_nimg, 1e-8))


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict | None = None) -> Method:
    """The StyleGAN2 Method for `config` on images described by `info`."""
    ctx = make_context(config, info)
    s, num_steps = config.stylegan, int(config.train.num_steps)
    loss = LOSSES[config.loss]
    r1_every, pl_every = int(s.r1_interval), int(s.pl_interval)
    r1_gamma, pl_weight = float(s.r1_gamma), float(s.pl_weight)
    # The lazy branch is its own optimizer step: 1 + 1/k updates per iteration.
    d_tx = create_optimizer(lazy_optimizer_config(config.optimizer, r1_every if r1_gamma else 0),
                            num_steps + num_steps // r1_every)
    g_tx = create_optimizer(lazy_optimizer_config(config.optimizer, pl_every if pl_weight else 0),
                            num_steps + num_steps // pl_every)
    mix_prob, pl_shrink, pl_decay = float(s.style_mixing_prob), int(s.pl_batch_shrink), float(
        s.pl_decay)
    psi = float(config.sampler.truncation_psi)

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        x = preprocess(batch["image"][:1])
        kg, kd, kz = jax.random.split(rng, 3)
        g_params = ctx.generator.init(kg, latents(kz, 1, ctx.latent_dim), None)["params"]
        d_params = ctx.discriminator.init(kd, x)["params"]
        params = {"generator": g_params, "discriminator": d_params}
        model_state = {"w_avg": jnp.zeros((ctx.w_dim,), jnp.float32),
                       "pl_mean": jnp.zeros((), jnp.float32)}
        return create_state(params, {"generator": g_tx, "discriminator": d_tx},
                            jax.random.fold_in(rng, 1), model_state, ema_keys=("generator",))

    def fakes(g_params, b, key):
        k_z, k_mix, k_noise = jax.random.split(key, 3)
        ws = mixing_regularized_ws(ctx, g_params, latents(k_z, b, ctx.latent_dim), k_mix,
                                   mix_prob)
        return synthesize(ctx, g_params, ws, k_noise)

    def d_main(state, x_real, key):
        x_fake = jax.lax.stop_gradient(fakes(state.params["generator"], x_real.shape[0], key))

        def loss_fn(dp):
            real, fake = discriminate(ctx, dp, x_real), discriminate(ctx, dp, x_fake)
            return loss.d(real, fake), {"d_real": real.mean(), "d_fake": fake.mean()}

        (d_loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params["discriminator"])
        d_params, d_opt = optimizer_update(state.params["discriminator"],
                                           state.opt_state["discriminator"], grads, d_tx)
        return d_params, d_opt, {"d_loss": d_loss, "d_grad_norm": optax.tree.norm(grads), **aux}

    def d_reg(d_params, d_opt, x_real):
        def reg_fn(dp):
            r1 = r1_penalty(lambda v: discriminate(ctx, dp, v), x_real)
            return 0.5 * r1_gamma * r1 * r1_every, r1

        (_, r1), grads = jax.value_and_grad(reg_fn, has_aux=True)(d_params)
        d_params, d_opt = optimizer_update(d_params, d_opt, grads, d_tx)
        return d_params, d_opt, r1

    def g_main(state, d_params, b, key):
        k_z, k_mix, k_noise = jax.random.split(key, 3)
        z = latents(k_z, b, ctx.latent_dim)

        def loss_fn(gp):
            ws = mixing_regularized_ws(ctx, gp, z, k_mix, mix_prob)
            fake = discriminate(ctx, d_params, synthesize(ctx, gp, ws, k_noise))
            return loss.g(fake), (fake.mean(), ws[:, 0])

        (g_loss, (d_fake_g, w)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params["generator"])
        g_params, g_opt = optimizer_update(state.params["generator"],
                                           state.opt_state["generator"], grads, g_tx)
        # w_avg tracks the mapping output (layer 0 is never mixed): lerp(mean w, w_avg, beta).
        beta = float(s.w_avg_beta)
        w_avg = beta * state.model_state["w_avg"] + (1 - beta) * jax.lax.stop_gradient(
            w.mean(0))
        return g_params, g_opt, w_avg, {"g_loss": g_loss, "d_fake_g": d_fake_g,
                                        "g_grad_norm": optax.tree.norm(grads)}

    def g_reg(g_params, g_opt, pl_mean, b, key):
        k_z, k_mix, k_noise, k_y = jax.random.split(key, 4)
        z = latents(k_z, max(b // pl_shrink, 1), ctx.latent_dim)

        def reg_fn(gp):
            ws = mixing_regularized_ws(ctx, gp, z, k_mix, mix_prob)
            lengths = path_lengths(lambda v: synthesize(ctx, gp, v, k_noise), ws, k_y)
            penalty, new_mean = path_length_penalty(lengths, pl_mean, pl_decay)
            return penalty * pl_weight * pl_every, (penalty, new_mean)

        (_, (penalty, new_mean)), grads = jax.value_and_grad(reg_fn, has_aux=True)(g_params)
        g_params, g_opt = optimizer_update(g_params, g_opt, grads, g_tx)
        return g_params, g_opt, new_mean, penalty

    def train_step(state: TrainState, batch: dict, frozen: Frozen = None):
        x_real = preprocess(batch["image"])
        b = x_real.shape[0]
        d_params, d_opt, metrics = d_main(state, x_real, step_rng(state, 0))
        r1_on = is_reg_step(state.step, r1_every) & (r1_gamma > 0)
        d_params, d_opt, r1 = jax.lax.cond(
            r1_on, d_reg, lambda p, o, _: (p, o, jnp.zeros(())), d_params, d_opt, x_real)

        g_params, g_opt, w_avg, g_metrics = g_main(state, d_params, b, step_rng(state, 1))
        pl_on = is_reg_step(state.step, pl_every) & (pl_weight > 0)
        pl_mean = state.model_state["pl_mean"]
        g_params, g_opt, pl_mean, pl_penalty = jax.lax.cond(
            pl_on, functools.partial(g_reg, b=b, key=step_rng(state, 2)),
            lambda p, o, m: (p, o, m, jnp.zeros(())), g_params, g_opt, pl_mean)

        beta = ema_beta(b, float(s.ema_kimg), state.step, float(s.ema_rampup))
        ema_g = ema_update(state.ema_params["generator"], g_params, beta)
        metrics = {
            "loss": jnp.where(jnp.isfinite(g_metrics["g_loss"]), metrics["d_loss"], jnp.nan),
            **metrics, **g_metrics,
            "grad_norm": jnp.sqrt(g_metrics["g_grad_norm"]**2 + metrics["d_grad_norm"]**2),
            # The penalties are 0 on steps where their lazy branch did not run.
            "r1": r1, "r1_applied": r1_on.astype(jnp.float32),
            "pl_penalty": pl_penalty, "pl_applied": pl_on.astype(jnp.float32),
            "pl_mean": pl_mean, "ema_beta": beta}
        new_state = state.replace(
            step=state.step + 1,
            params={"generator": g_params, "discriminator": d_params},
            opt_state={"generator": g_opt, "discriminator": d_opt},
            ema_params={"generator": ema_g},
            model_state={"w_avg": w_avg, "pl_mean": pl_mean})
        return new_state, metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen: Frozen = None) -> dict:
        d_params = state.params["discriminator"]
        real = discriminate(ctx, d_params, preprocess(batch["image"]))
        k_z, k_noise = jax.random.split(rng)
        x_fake = generate(ctx, state.ema_params["generator"],
                          latents(k_z, real.shape[0], ctx.latent_dim),
                          state.model_state["w_avg"], psi, k_noise)
        return {"d_real": real, "d_fake": discriminate(ctx, d_params, x_fake)}

    @functools.partial(jax.jit, static_argnums=2)
    def sample(state: TrainState, rng: jax.Array, num: int, frozen: Frozen = None) -> jax.Array:
        del rng  # fixed latents and noise: grids from different steps show the same images
        z, _ = fixed_latents(ctx, num)
        x = generate(ctx, state.ema_params["generator"], z, state.model_state["w_avg"], psi,
                     figs.fixed_noise_key(ctx))
        return to_uint8(x)

    @functools.partial(jax.jit, static_argnums=2)
    def sample_batch(state: TrainState, rng: jax.Array, n: int) -> jax.Array:
        k_z, k_noise = jax.random.split(rng)
        return to_uint8(generate(ctx, state.ema_params["generator"],
                                 latents(k_z, n, ctx.latent_dim), state.model_state["w_avg"],
                                 psi, k_noise))

    def evaluate(state: TrainState, dataset: Any, rng: jax.Array, num_samples: int | None,
                 frozen: Frozen = None) -> dict:
        """FD/KID/P-R of the EMA generator (`common.sample_quality`) and PPL in w."""
        results = sample_quality(
            config, lambda n, i: sample_batch(state, jax.random.fold_in(rng, i), n), num_samples,
            dict(weights="ema generator", loss=config.loss, truncation_psi=psi,
                 noise="random"))
        results.update(quality.perceptual_path_length(
            ctx, state, jax.random.fold_in(rng, 10**6), config))
        return results

    def figures(state: TrainState, test_ds: Any, workdir: str, frozen: Frozen = None
                ) -> list[str]:
        """`--mode=sample` extras: the style-mixing figure, the truncation sweep and one
        two-seed mix at `sampler.crossover`, under new names in workdir/figures/."""
        del test_ds
        return figs.write_figures(ctx, state, os.path.join(workdir, "figures"), config)

    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  sample=sample, evaluate=evaluate, figures=figures)

