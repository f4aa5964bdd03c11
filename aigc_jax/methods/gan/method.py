"""The GAN family: DCGAN / SNGAN, four losses, R1 and gradient penalties, TTUR, EMA generator.

One train step is one iteration of Goodfellow et al.'s Algorithm 1: `n_critic` D updates (in a
`lax.scan`) then one G update. The loop's batch holds `n_critic` chunks: D step k sees chunk k
of the real images against as many fresh fakes; the G step uses one chunk's worth of fakes.

State layout: `params`/`opt_state` = {"generator", "discriminator"}; `ema_params` =
{"generator"}; `model_state` = {"generator", "discriminator", "ema_generator": batch_stats
(BatchNorm running averages, spectral-norm u and sigma), "alarm": divergence-alarm counters}.
The EMA generator's BatchNorm averages are re-estimated from its own forward pass (train mode,
no gradient) on the G step's noise every iteration, so they describe the averaged weights.
"""

import dataclasses
import functools
import glob
import math
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from aigc_jax import plotting
from aigc_jax.errors import UserError
from aigc_jax.methods.base import Frozen, Method, write_image_samples
from aigc_jax.methods.common import check_choice, sample_quality, to_uint8
from aigc_jax.methods.common import to_float as preprocess
from aigc_jax.methods.gan.losses import LOSSES, GANLoss, gradient_penalty, r1_penalty
from aigc_jax.models import dcgan
from aigc_jax.models.dcgan import CONV_IMPLS, DCGANDiscriminator, DCGANGenerator
from aigc_jax.models.sngan import SNGANDiscriminator, SNGANGenerator
from aigc_jax.optim import create_optimizer
from aigc_jax.state import TrainState, create_state, ema_update, optimizer_update, step_rng

ARCHS = ("dcgan", "sngan")
D_NORMS = ("batch", "spectral", "none")
PyTree = Any


@dataclasses.dataclass(frozen=True)
class GANContext:
    """The two networks and the settings a step needs, built once from the config."""

    generator: Any
    discriminator: Any
    loss: GANLoss
    latent_dim: int
    num_classes: int
    image_shape: tuple[int, int, int]
    fixed_noise_seed: int = 0


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError for GAN settings that cannot work, before anything compiles."""
    check_choice("loss", config.loss, LOSSES)
    check_choice("model.arch", config.model.arch, ARCHS)
    check_choice("model.d_norm", config.model.d_norm, D_NORMS)
    check_choice("model.conv_impl", config.model.conv_impl, CONV_IMPLS)
    m = config.model
    for key in ("latent_dim", "g_channels", "d_channels", "embed_dim", "min_side"):
        if int(m[key]) < 1:
            raise UserError(f"config.model.{key}={m[key]} must be a positive integer.")
    if int(m.num_classes) < 0:
        raise UserError(f"config.model.num_classes={m.num_classes} must not be negative.")
    n_critic = int(config.n_critic)
    if n_critic < 1 or int(config.train.batch_size) % n_critic:
        raise UserError(f"config.train.batch_size={config.train.batch_size} must be a positive "
                        f"multiple of config.n_critic={n_critic} (one chunk per D step).")
    if config.loss == "wgan_gp" and float(config.gp_weight) <= 0:
        raise UserError("config.loss='wgan_gp' needs config.gp_weight > 0 (Gulrajani et al. "
                        "use 10).")
    penalised = float(config.gp_weight) > 0 or float(config.r1_gamma) > 0
    if penalised and config.model.arch == "dcgan" and config.model.d_norm == "batch":
        raise UserError("gradient penalties need per-example D gradients: set "
                        "config.model.d_norm to 'spectral' or 'none' instead of 'batch'.")


def make_context(config: ml_collections.ConfigDict, info: dict) -> GANContext:
    """The generator/discriminator pair and loss for `config` on images described by `info`."""
    validate(config)
    m = config.model
    shape = tuple(int(s) for s in info["image_shape"])
    num_classes = int(m.num_classes)
    if num_classes and num_classes != int(info.get("num_classes", 0)):
        raise UserError(f"config.model.num_classes={num_classes} does not match the dataset's "
                        f"{info.get('num_classes', 0)} classes (0 trains unconditionally).")
    if m.arch == "dcgan":
        if dcgan.num_upsamplings(shape[0], int(m.min_side))[0] < 1:
            raise UserError(f"DCGAN needs an even image side above config.model.min_side="
                            f"{m.min_side} (a stride-2 stage); the data is {shape[0]}x{shape[1]}.")
        g = DCGANGenerator(shape, int(m.g_channels), num_classes, int(m.embed_dim),
                           int(m.min_side), m.conv_impl)
        d = DCGANDiscriminator(int(m.d_channels), num_classes, m.d_norm == "spectral",
                               m.d_norm == "batch", int(m.min_side), m.conv_impl)
    else:
        if shape[:2] != (32, 32):
            raise UserError(f"config.model.arch='sngan' is the 32x32 ResNet; the data is "
                            f"{shape[0]}x{shape[1]} (use arch='dcgan').")
        g = SNGANGenerator(shape, int(m.g_channels), 3, num_classes)
        d = SNGANDiscriminator(int(m.d_channels), num_classes)
    return GANContext(g, d, LOSSES[config.loss], int(m.latent_dim), num_classes, shape,
                      int(config.fixed_noise_seed))


def _variables(params: PyTree, stats: PyTree) -> dict:
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def generate(ctx: GANContext, params: PyTree, stats: PyTree, z: jax.Array,
             labels: jax.Array, train: bool = False) -> tuple[jax.Array, PyTree]:
    """G(z, y) [B, H, W, C] in [-1, 1] and the BatchNorm stats (updated when `train`)."""
    if not train:
        return ctx.generator.apply(_variables(params, stats), z, labels, train=False), stats
    x, new = ctx.generator.apply(_variables(params, stats), z, labels, train=True,
                                 mutable=["batch_stats"])
    return x, new["batch_stats"]


def discriminate(ctx: GANContext, params: PyTree, stats: PyTree, x: jax.Array,
                 labels: jax.Array, train: bool = True,
                 update: bool = False) -> tuple[jax.Array, PyTree]:
    """D logits [B] and its stats; `update` keeps new BN averages / spectral-norm u vectors."""
    variables = _variables(params, stats)
    if not train or not stats:
        return ctx.discriminator.apply(variables, x, labels, train=train,
                                       update_stats=False), stats
    logits, new = ctx.discriminator.apply(variables, x, labels, train=True, update_stats=update,
                                          mutable=["batch_stats"])
    return logits, (new["batch_stats"] if update else stats)


def latents(rng: jax.Array, num: int, dim: int) -> jax.Array:
    """z ~ N(0, I) [num, dim]."""
    return jax.random.normal(rng, (num, dim))


def fixed_latents(ctx: GANContext, num: int) -> tuple[jax.Array, jax.Array]:
    """The fixed grid noise: z_i from fold_in(key, i), so the first k of any grid agree."""
    key = jax.random.PRNGKey(ctx.fixed_noise_seed)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (ctx.latent_dim,)))(
        jnp.arange(num))
    return z, jnp.arange(num) % max(ctx.num_classes, 1)  # [num, Z], labels cycle by class


def slerp(z0: jax.Array, z1: jax.Array, t: jax.Array) -> jax.Array:
    """Spherical interpolation (White, 2016): z0, z1 [P, Z], t [T] -> [P, T, Z]."""
    n0 = z0 / jnp.linalg.norm(z0, axis=-1, keepdims=True)
    n1 = z1 / jnp.linalg.norm(z1, axis=-1, keepdims=True)
    omega = jnp.arccos(jnp.clip(jnp.sum(n0 * n1, -1), -1.0, 1.0))[:, None, None]  # [P, 1, 1]
    t = t[None, :, None]
    so = jnp.sin(omega)
    return (jnp.sin((1.0 - t) * omega) / so * z0[:, None]
            + jnp.sin(t * omega) / so * z1[:, None])


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def interpolate(ctx: GANContext, state: TrainState, rng: jax.Array, num_pairs: int = 8,
                num_steps: int = 10) -> jax.Array:
    """EMA-generator images along slerp paths between random latents, uint8 [P, T, H, W, C]."""
    k0, k1 = jax.random.split(rng)
    z = slerp(latents(k0, num_pairs, ctx.latent_dim), latents(k1, num_pairs, ctx.latent_dim),
              jnp.linspace(0.0, 1.0, num_steps))
    labels = jnp.repeat(jnp.arange(num_pairs) % max(ctx.num_classes, 1), num_steps)
    x, _ = generate(ctx, state.ema_params["generator"], state.model_state["ema_generator"],
                    z.reshape(num_pairs * num_steps, -1), labels)
    return to_uint8(x).reshape(num_pairs, num_steps, *x.shape[1:])


def write_interpolation(ctx: GANContext, state: TrainState, rng: jax.Array, path: str,
                        num_pairs: int = 8, num_steps: int = 10) -> str:
    """A PNG with one latent interpolation per row (`interpolate`); returns the path."""
    images = np.asarray(interpolate(ctx, state, rng, num_pairs, num_steps))
    return plotting.save_image_grid(images.reshape(-1, *images.shape[2:]), path, ncols=num_steps)


def write_progress(workdir: str, path: str, num: int = 8) -> str | None:
    """One row per periodic grid `workdir/samples/step_<N>.npz` (the same fixed latents), first
    `num` images each, oldest on top; None when there are no grids yet."""
    files = glob.glob(os.path.join(workdir, "samples", "step_*.npz"))
    steps = sorted(int(re.search(r"step_(\d+)\.npz$", f).group(1)) for f in files)
    if not steps:
        return None
    rows = []
    for step in steps:
        with np.load(os.path.join(workdir, "samples", f"step_{step}.npz")) as f:
            rows.append(f["images"][:num])
    num = min(len(r) for r in rows)
    return plotting.save_image_grid(np.concatenate([r[:num] for r in rows]), path, ncols=num)


def _report_divergence(count: jax.Array, d_loss: jax.Array, patience: int, tol: float) -> None:
    logging.error(
        "GAN divergence alarm: the discriminator loss was pinned (moved by <= %g relative) on %d "
        "of the last %d steps (config.divergence_patience), latest value %.6g; the step reports "
        "loss=NaN so train.nonfinite_policy='stop' ends the run and keeps the last good "
        "checkpoint.", tol, int(count), patience, float(d_loss))


def init_alarm(patience: int) -> dict:
    """Divergence-alarm counters: the previous d_loss and a ring buffer of pinned flags."""
    return {"prev_d_loss": jnp.zeros((), jnp.float32),
            "window": jnp.zeros((max(patience, 1),), jnp.bool_)}


def divergence_alarm(alarm: dict, d_loss: jax.Array, step: jax.Array, patience: int,
                     tol: float, fraction: float) -> tuple[dict, jax.Array, jax.Array]:
    """A step is pinned if d_loss moved by <= tol * max(1, |previous|); the alarm fires when
    at least `fraction` of the last `patience` steps were. Returns (counters, fired, count)."""
    prev = alarm["prev_d_loss"]
    pinned = jnp.abs(d_loss - prev) <= tol * jnp.maximum(1.0, jnp.abs(prev))
    window = alarm["window"].at[step % alarm["window"].shape[0]].set(pinned)
    count = window.sum()
    if patience <= 0:
        return {"prev_d_loss": d_loss, "window": window}, jnp.zeros((), bool), count
    fired = count >= math.ceil(fraction * patience)
    jax.lax.cond(fired, lambda: jax.debug.callback(_report_divergence, count, d_loss, patience,
                                                   tol), lambda: None)
    return {"prev_d_loss": d_loss, "window": window}, fired, count


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict | None = None) -> Method:
    """The GAN Method for `config` on images described by `info`."""
    ctx = make_context(config, info)
    n_critic, num_steps = int(config.n_critic), int(config.train.num_steps)
    opt = config.optimizer
    g_tx = create_optimizer(opt, num_steps,
                            learning_rate=float(opt.g_learning_rate or opt.learning_rate))
    d_tx = create_optimizer(opt, num_steps * n_critic,
                            learning_rate=float(opt.d_learning_rate or opt.learning_rate))
    ema_decay = float(config.train.ema_decay)
    gp_weight, r1_gamma = float(config.gp_weight), float(config.r1_gamma)
    patience, tol = int(config.divergence_patience), float(config.divergence_tol)
    fraction = float(config.divergence_fraction)
    z_dim, nc = ctx.latent_dim, max(ctx.num_classes, 1)

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        x = preprocess(batch["image"][:1])
        kg, kd, kz = jax.random.split(rng, 3)
        g_vars = ctx.generator.init(kg, latents(kz, 1, z_dim), batch["label"][:1], train=False)
        d_vars = ctx.discriminator.init(kd, x, batch["label"][:1], train=False,
                                        update_stats=False)
        params = {"generator": g_vars["params"], "discriminator": d_vars["params"]}
        g_stats = g_vars.get("batch_stats", {})
        model_state = {
            "generator": g_stats, "discriminator": d_vars.get("batch_stats", {}),
            "ema_generator": jax.tree.map(jnp.copy, g_stats),
            "alarm": init_alarm(patience)}
        return create_state(params, {"generator": g_tx, "discriminator": d_tx},
                            jax.random.fold_in(rng, 1), model_state, ema_keys=("generator",))

    def d_update(state: TrainState, carry, inputs):
        """One D step on a real chunk against fresh fakes (stop-gradient through G)."""
        d_params, d_opt, d_stats = carry
        x_real, y, k = inputs
        key_z, key_gp = jax.random.split(step_rng(state, 0, k))
        x_fake, _ = generate(ctx, state.params["generator"], state.model_state["generator"],
                             latents(key_z, x_real.shape[0], z_dim), y, train=True)
        x_fake = jax.lax.stop_gradient(x_fake)

        def loss_fn(dp):
            real, s = discriminate(ctx, dp, d_stats, x_real, y, update=True)
            fake, s = discriminate(ctx, dp, s, x_fake, y, update=True)
            d_loss = ctx.loss.d(real, fake)
            aux = {"d_loss": d_loss, "d_real": real.mean(), "d_fake": fake.mean()}
            total = d_loss

            def d_fn(v):
                return discriminate(ctx, dp, s, v, y)[0]

            if gp_weight:
                aux["gp"] = gradient_penalty(d_fn, x_real, x_fake, key_gp)
                total += gp_weight * aux["gp"]
            if r1_gamma:
                aux["r1"] = r1_penalty(d_fn, x_real)
                total += 0.5 * r1_gamma * aux["r1"]
            return total, (s, aux)

        (total, (d_stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
        d_params, d_opt = optimizer_update(d_params, d_opt, grads, d_tx)
        aux = {**aux, "d_total": total, "d_grad_norm": optax.tree.norm(grads)}
        return (d_params, d_opt, d_stats), aux

    def train_step(state: TrainState, batch: dict, frozen: Frozen = None):
        x = preprocess(batch["image"])
        b = x.shape[0] // n_critic
        xs = x.reshape(n_critic, b, *x.shape[1:])  # [n_critic, B / n_critic, H, W, C]
        ys = batch["label"].reshape(n_critic, b) % nc
        ms = state.model_state
        carry = (state.params["discriminator"], state.opt_state["discriminator"],
                 ms["discriminator"])
        (d_params, d_opt, d_stats), d_aux = jax.lax.scan(
            functools.partial(d_update, state), carry, (xs, ys, jnp.arange(n_critic)))
        d_aux = {k: v.mean() for k, v in d_aux.items()}

        key_z, key_y = jax.random.split(step_rng(state, 1))
        z = latents(key_z, b, z_dim)
        y = jax.random.randint(key_y, (b,), 0, nc)

        def g_loss_fn(gp):
            x_fake, g_stats = generate(ctx, gp, ms["generator"], z, y, train=True)
            fake, _ = discriminate(ctx, d_params, d_stats, x_fake, y)
            return ctx.loss.g(fake), (g_stats, fake.mean())

        (g_loss, (g_stats, d_fake_g)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
            state.params["generator"])
        g_params, g_opt = optimizer_update(state.params["generator"],
                                           state.opt_state["generator"], g_grads, g_tx)
        # EMA with TensorFlow's num_updates warm-up, so early grids are not the initial weights.
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
        ema_g = ema_update(state.ema_params["generator"], g_params, decay)
        _, ema_stats = generate(ctx, ema_g, ms["ema_generator"], z, y, train=True)

        alarm, fired, pinned = divergence_alarm(ms["alarm"], d_aux["d_loss"], state.step,
                                                patience, tol, fraction)
        g_grad_norm = optax.tree.norm(g_grads)
        finite_g = jnp.isfinite(g_loss)
        metrics = {
            # `loss` is D's objective (with penalties); NaN if G's loss is, or the alarm fired.
            "loss": jnp.where(fired | ~finite_g, jnp.nan, d_aux.pop("d_total")),
            "g_loss": g_loss, "d_fake_g": d_fake_g, "g_grad_norm": g_grad_norm,
            "grad_norm": jnp.sqrt(g_grad_norm**2 + d_aux["d_grad_norm"]**2),
            "d_loss_pinned": pinned.astype(jnp.float32),  # pinned steps in the window
            "divergence_alarm": fired.astype(jnp.float32), **d_aux}
        new_state = state.replace(
            step=state.step + 1,
            params={"generator": g_params, "discriminator": d_params},
            opt_state={"generator": g_opt, "discriminator": d_opt},
            ema_params={"generator": ema_g},
            model_state={"generator": g_stats, "discriminator": d_stats,
                         "ema_generator": ema_stats, "alarm": alarm})
        return new_state, metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen: Frozen = None) -> dict:
        ms, d_params = state.model_state, state.params["discriminator"]
        y = batch["label"] % nc
        real, _ = discriminate(ctx, d_params, ms["discriminator"], preprocess(batch["image"]),
                               y, train=False)
        x_fake, _ = generate(ctx, state.ema_params["generator"], ms["ema_generator"],
                             latents(rng, y.shape[0], z_dim), y)
        fake, _ = discriminate(ctx, d_params, ms["discriminator"], x_fake, y, train=False)
        return {"d_real": real, "d_fake": fake}  # [B] logits on test images / EMA samples

    @functools.partial(jax.jit, static_argnums=2)
    def sample(state: TrainState, rng: jax.Array, num: int, frozen: Frozen = None) -> jax.Array:
        del rng  # fixed noise: grids from different steps show the same latents
        z, y = fixed_latents(ctx, num)
        x, _ = generate(ctx, state.ema_params["generator"], state.model_state["ema_generator"],
                        z, y)
        return to_uint8(x)

    @jax.jit
    def sample_batch(state: TrainState, rng: jax.Array, y: jax.Array) -> jax.Array:
        x, _ = generate(ctx, state.ema_params["generator"], state.model_state["ema_generator"],
                        latents(rng, y.shape[0], z_dim), y)
        return to_uint8(x)

    def write_samples(samples: Any, path_stem: str) -> list[str]:
        if not ctx.num_classes:
            return write_image_samples(samples, path_stem)
        images = np.asarray(samples)  # one column per class
        png = plotting.save_image_grid(images, path_stem + ".png", ncols=ctx.num_classes)
        np.savez_compressed(path_stem + ".npz", images=images)
        return [png, path_stem + ".npz"]

    def evaluate(state: TrainState, dataset: Any, rng: jax.Array, num_samples: int | None,
                 frozen: Frozen = None) -> dict:
        """Sample quality (Fréchet distance etc.) of the EMA generator (`common.sample_quality`)."""

        def sample_fn(n: int, i: int) -> jax.Array:
            key = jax.random.fold_in(rng, i)
            y = jax.random.randint(jax.random.fold_in(key, 1), (n,), 0, nc)
            return sample_batch(state, key, y)

        return sample_quality(config, sample_fn, num_samples, dict(
            weights="ema generator", loss=config.loss, labels="uniform random" if nc else "none"))

    def figures(state: TrainState, test_ds: Any, workdir: str, frozen: Frozen = None
                ) -> list[str]:
        """`--mode=sample` extras: latent interpolations and the fixed-noise grids over time."""
        del test_ds
        out_dir = os.path.join(workdir, "figures")
        rng = jax.random.PRNGKey(int(config.seed) + 5)
        files = [write_interpolation(ctx, state, rng, os.path.join(out_dir, "interpolation.png"))]
        progress = write_progress(workdir, os.path.join(out_dir, "progress.png"))
        return files + ([progress] if progress else [])

    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  sample=sample, write_samples=write_samples, evaluate=evaluate,
                  figures=figures)

