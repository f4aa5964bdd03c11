"""The diffusion family: DDPM / improved-DDPM training, DDPM and DDIM sampling, VLB in bits/dim.

Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models"; Nichol & Dhariwal (2021),
"Improved DDPM"; Song, Meng & Ermon (2021), "DDIM"; Ho & Salimans (2021), "Classifier-Free
Diffusion Guidance". Schedules, objectives and samplers live in the `diffusion_*` modules.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from aigc_jax import plotting
from aigc_jax.errors import UserError
from aigc_jax.methods.base import Frozen, Method, write_image_samples
from aigc_jax.methods.common import (
    EXTRACTORS,
    check_choice,
    padded_chunks,
    sample_quality,
    to_uint8,
)
from aigc_jax.methods.common import to_float as preprocess
from aigc_jax.methods.diffusion import conditioning as cond_lib
from aigc_jax.methods.diffusion import objectives as obj
from aigc_jax.methods.diffusion import samplers
from aigc_jax.methods.diffusion import schedules as ds
from aigc_jax.models.layers import DTYPES, count_params
from aigc_jax.models.mlp_denoiser import create_mlp_denoiser
from aigc_jax.models.unet import UNet, create_unet
from aigc_jax.optim import create_optimizer
from aigc_jax.state import TrainState, apply_gradients, create_state, global_norm, step_rng

_check = check_choice
ARCHS = ("unet", "mlp")  # the denoiser: a U-Net for images and spatial latents, an MLP for vectors


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError for an impossible diffusion config, before anything is compiled."""
    _check("diffusion.objective", config.diffusion.objective, obj.OBJECTIVES)
    _check("diffusion.loss_weighting", config.diffusion.loss_weighting, obj.LOSS_WEIGHTINGS)
    _check("diffusion.schedule", config.diffusion.schedule, ds.SCHEDULES)
    _check("diffusion.variance", config.diffusion.variance, ("auto", *obj.VARIANCES))
    _check("sampler.name", config.sampler.name, samplers.SAMPLERS)
    _check("model.dtype", config.model.dtype, DTYPES)
    _check("model.arch", config.model.arch, ARCHS)
    if int(config.model.mlp_width) < 1 or int(config.model.mlp_blocks) < 1:
        raise UserError(f"config.model.mlp_width={config.model.mlp_width} and "
                        f"model.mlp_blocks={config.model.mlp_blocks} must be positive.")
    _check("eval.extractor", config.eval.extractor, EXTRACTORS)
    learns = obj.OBJECTIVES[config.diffusion.objective].learned_variance
    prediction = obj.OBJECTIVES[config.diffusion.objective].prediction
    if bool(config.diffusion.get("zero_terminal_snr", False)) and prediction == "eps":
        raise UserError(f"config.diffusion.zero_terminal_snr=True needs objective v or x0, not "
                        f"config.diffusion.objective={config.diffusion.objective!r}: at SNR 0 "
                        "x_T is pure noise, so eps predicts nothing about x0 there.")
    if config.diffusion.variance == "learned" and not learns:
        raise UserError(f"config.diffusion.variance='learned' needs an objective that learns "
                        "it (hybrid), not "
                        f"config.diffusion.objective={config.diffusion.objective!r}.")
    m = config.model
    mult = tuple(m.ch_mult) if isinstance(m.ch_mult, (tuple, list)) else (m.ch_mult,)
    if int(m.ch) < 1 or not mult or min(int(k) for k in mult) < 1:
        raise UserError(f"config.model.ch={m.ch} and every entry of model.ch_mult={m.ch_mult} "
                        "must be positive.")
    if int(m.num_res_blocks) < 1 or int(m.num_classes) < 0:
        raise UserError(f"config.model.num_res_blocks={m.num_res_blocks} must be positive and "
                        f"model.num_classes={m.num_classes} must not be negative.")
    if not 0.0 <= float(m.dropout) < 1.0:
        raise UserError(f"config.model.dropout={m.dropout} must be in [0, 1).")
    if int(config.diffusion.num_timesteps) < 1:
        raise UserError(f"config.diffusion.num_timesteps={config.diffusion.num_timesteps} "
                        "must be positive.")
    if int(config.sampler.num_steps) < 0:
        raise UserError(f"config.sampler.num_steps={config.sampler.num_steps} must not be "
                        "negative (0 means every timestep).")
    if float(config.sampler.eta) < 0:
        raise UserError(f"config.sampler.eta={config.sampler.eta} must not be negative "
                        "(0 is deterministic DDIM, 1 matches DDPM's noise).")
    text = str(config.diffusion.get("text", "none"))
    _check("diffusion.text", text, cond_lib.TEXT_ENCODERS)
    scales = [float(config.sampler.guidance_scale),
              *(float(w) for w in config.eval.get("guidance_scales", ()))]
    if any(scales) and int(config.model.num_classes) == 0 and text == "none":
        raise UserError(f"guidance scales {scales} (config.sampler.guidance_scale, "
                        "eval.guidance_scales) need a class-conditional or text-conditioned "
                        "model; set config.model.num_classes (and config.diffusion."
                        "label_dropout) or config.diffusion.text, or leave the guidance scale "
                        "at 0.")
    for key in ("label_dropout", "prompt_dropout"):
        if not 0.0 <= float(config.diffusion.get(key, 0.0)) < 1.0:
            raise UserError(f"config.diffusion.{key}={config.diffusion[key]} must be in [0, 1).")
    if text != "none":
        validate_text(config, scales)
    for key in ("vlb_timesteps", "vlb_max_timesteps"):
        if int(config.eval.get(key, 0)) < 0:
            raise UserError(f"config.eval.{key}={config.eval[key]} must not be negative.")


def validate_text(config: ml_collections.ConfigDict, scales: list[float]) -> None:
    """The text-conditioning keys: a UNet, head counts that divide the widths, guidance only
    for a model trained with the empty prompt."""
    m = config.model
    if m.arch != "unet":
        raise UserError(f"config.diffusion.text={config.diffusion.text!r} needs "
                        f"config.model.arch='unet' (cross-attention), not {m.arch!r}.")
    heads, depth = int(m.transformer_heads), int(m.transformer_depth)
    if heads < 1 or depth < 1:
        raise UserError(f"config.model.transformer_heads={heads} and transformer_depth={depth} "
                        "must be positive.")
    if str(m.get("transformer_position", "none")) not in ("none", "sincos"):
        raise UserError(f"config.model.transformer_position={m.transformer_position!r} is "
                        "unknown; expected 'none' or 'sincos'.")
    bad = [int(m.ch) * int(k) for k in m.ch_mult if int(m.ch) * int(k) % heads]
    if bad:
        raise UserError(f"config.model.transformer_heads={heads} must divide every UNet width "
                        f"(model.ch x ch_mult), not {bad[0]}.")
    if config.diffusion.text == "joint" and (
            min(int(m.text_width), int(m.text_layers), int(m.text_heads)) < 1
            or int(m.text_width) % int(m.text_heads)):
        raise UserError(f"config.model.text_width={m.text_width}, text_layers={m.text_layers} "
                        f"and text_heads={m.text_heads} must be positive, the heads dividing "
                        "the width.")
    if any(scales) and float(config.diffusion.prompt_dropout) == 0.0:
        raise UserError(f"guidance scales {scales} need a model trained with the empty prompt "
                        "(config.diffusion.prompt_dropout > 0).")
    if int(config.eval.num_prompts) < 1 or int(config.eval.sample_batch) < 1:
        raise UserError(f"config.eval.num_prompts={config.eval.num_prompts} and "
                        f"eval.sample_batch={config.eval.sample_batch} must be positive.")


def diffusion_from_config(config: ml_collections.ConfigDict) -> obj.Diffusion:
    """The schedule and parameterisation named by `config`."""
    objective = obj.OBJECTIVES[config.diffusion.objective]
    variance = config.diffusion.variance
    if variance == "auto":
        variance = "learned" if objective.learned_variance else "fixed_small"
    return obj.Diffusion(ds.create_schedule(config.diffusion), objective.prediction, variance,
                         config.diffusion.loss_weighting, float(config.diffusion.min_snr_gamma),
                         float(config.diffusion.hybrid_lambda))


def vlb_bpd(d: obj.Diffusion, apply, x0: jax.Array, cond, rng: jax.Array,
            t: jax.Array, weight: jax.Array, clip_x0: bool) -> dict[str, jax.Array]:
    """sum_t weight * L_t + L_T in bits/dim [B] for t, weight [R, M, B]: a scan over R rows.

    Each row evaluates M timesteps per example in one batch of M * B; rows bound the memory.
    `cond` is the model's conditioning pytree of [B, ...] arrays (labels, text context).
    """
    r, m, b = t.shape
    x_rep = jnp.tile(x0, (m, 1, 1, 1))  # [M * B, H, W, C]
    cond_rep = jax.tree.map(lambda a: jnp.tile(a, (m,) + (1,) * (a.ndim - 1)), cond)

    def body(acc, row):
        t_r, w_r, i = row
        tt = t_r.reshape(-1)
        noise = jax.random.normal(jax.random.fold_in(rng, i), x_rep.shape)
        q = obj.Noised(x_rep, ds.q_sample(d.sched, x_rep, tt, noise), tt, noise)
        terms = obj.vb_terms_bpd(d, apply(q.x_t, tt, cond_rep), q, clip_x0).reshape(m, b)
        total, decoder = acc
        return (total + (w_r * terms).sum(0), decoder + (w_r * terms * (t_r == 0)).sum(0)), None

    zeros = jnp.zeros(x0.shape[:1])
    (total, decoder), _ = jax.lax.scan(body, (zeros, zeros), (t, weight, jnp.arange(r)))
    prior = obj.prior_bpd(d.sched, x0)
    return {"vlb_bpd": total + prior, "prior_bpd": prior, "decoder_bpd": decoder}


def full_vlb_grid(num_timesteps: int, chunk: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Every t in [0, T) once, as [R, chunk, B] rows with weight 0 on the padding."""
    rows = -(-num_timesteps // chunk)
    t = np.arange(rows * chunk).reshape(rows, chunk)
    w = (t < num_timesteps).astype(np.float32)
    t = np.minimum(t, num_timesteps - 1)
    return (np.broadcast_to(t[..., None], (rows, chunk, batch)),
            np.broadcast_to(w[..., None], (rows, chunk, batch)))


def stratified_vlb_grid(rng: jax.Array, num_timesteps: int, k: int, batch: int):
    """One t per stratum of [0, T) split into k, per example, weighted by the stratum size.

    sum_k weight_k L_{t_k} is then an unbiased estimate of sum_t L_t. Shapes [k, 1, B].
    """
    edges = np.linspace(0, num_timesteps, k + 1).round().astype(np.int32)
    lo, size = jnp.asarray(edges[:-1]), jnp.asarray(np.diff(edges))
    u = jax.random.uniform(rng, (k, batch))
    t = lo[:, None] + jnp.minimum((u * size[:, None]).astype(jnp.int32), size[:, None] - 1)
    w = jnp.broadcast_to(size[:, None].astype(jnp.float32), (k, batch))
    return t[:, None], w[:, None]


def latent_layout(latent_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The [H, W, C] the model sees for an autoencoder's latents: vectors [D] as [1, 1, D]."""
    if len(latent_shape) == 1:
        return (1, 1, int(latent_shape[0]))
    if len(latent_shape) == 3:
        return tuple(int(s) for s in latent_shape)
    raise UserError(f"an autoencoder with latents of shape {tuple(latent_shape)} cannot be used; "
                    "expected [D] or [h, w, c].")


def check_fits(ae, info: dict, workdir: str) -> None:
    """The autoencoder must have been trained on images shaped like this run's data."""
    if tuple(ae.image_shape) != tuple(info["image_shape"]):
        raise UserError(f"config.components.autoencoder.workdir={workdir!r} was trained on "
                        f"{'x'.join(map(str, ae.image_shape))} images, but this run's data is "
                        f"{'x'.join(map(str, info['image_shape']))}; match config.data "
                        "(image_size, pad) to that run's.")


def latent_codec(ae, shape: tuple[int, int, int]):
    """(to_x0(images, frozen), to_images(x, frozen)): what the model denoises and back.

    Pixels: uint8 images <-> [-1, 1]. With an autoencoder role `ae`: its `encode` (which
    multiplies by the stored scale factor, once) and `decode` (which divides by it, once),
    latents laid out as `shape` [h, w, c] for the model.
    """
    if ae is None:
        return (lambda images, frozen: preprocess(images)), (lambda x, frozen: to_uint8(x))

    def to_x0(images: jax.Array, frozen: Frozen) -> jax.Array:
        z = jax.lax.stop_gradient(ae.encode(frozen["autoencoder"], images))
        return z.reshape(z.shape[0], *shape)

    def to_images(x: jax.Array, frozen: Frozen) -> jax.Array:
        return to_uint8(ae.decode(frozen["autoencoder"], x.reshape(x.shape[0],
                                                                   *ae.latent_shape)))

    return to_x0, to_images


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict | None = None) -> Method:
    """The diffusion Method for `config` on images described by `info`; with an `autoencoder`
    component, on that autoencoder's (scaled) latents instead, decoding samples with it; with
    `diffusion.text`, conditioned on captions through cross-attention (latent diffusion)."""
    validate(config)
    components = components or {}
    d = diffusion_from_config(config)
    objective = obj.OBJECTIVES[config.diffusion.objective]
    ae = components.get("autoencoder")
    ae_fns = None if ae is None else ae.bundle
    if ae_fns is not None:
        check_fits(ae_fns, info, str(config.components.autoencoder.workdir))
    text = cond_lib.create(config, info, components)
    joint = text is not None and text.mode == "joint"
    # What the model denoises: images [H, W, C], or latents (vectors as [1, 1, D]).
    h, w, c = info["image_shape"] if ae_fns is None else latent_layout(ae_fns.latent_shape)
    levels = len(config.model.ch_mult)
    if config.model.arch == "unet" and (h % 2 ** (levels - 1) or w % 2 ** (levels - 1)):
        raise UserError(f"images of {h}x{w} cannot be halved {levels - 1} times for "
                        f"config.model.ch_mult={tuple(config.model.ch_mult)}; pad or resize them "
                        "(config.data.pad / config.data.image_size).")
    num_classes = int(config.model.num_classes)
    if num_classes and num_classes < int(info.get("num_classes", 0)):
        raise UserError(f"config.model.num_classes={num_classes} is smaller than the "
                        f"dataset's {info['num_classes']} classes.")
    conditional = bool(num_classes) or text is not None
    out_ch = 2 * c if objective.learned_variance else c
    model = (create_unet(config.model, out_ch, text.width if text else 0)
             if config.model.arch == "unet" else create_mlp_denoiser(config.model, out_ch))
    tx = create_optimizer(config.optimizer, int(config.train.num_steps))
    ema_decay = float(config.train.ema_decay)
    label_dropout = float(config.diffusion.label_dropout)
    prompt_dropout = float(config.diffusion.get("prompt_dropout", 0.0))
    sc = config.sampler
    clip_x0 = bool(sc.clip_x0)
    to_x0, to_images = latent_codec(ae_fns, (h, w, c))
    empty = None if text is None else jnp.asarray(text.empty)  # [T]
    default_prompts = [str(p) for p in config.get("prompts", ())]
    if text is not None:
        if not default_prompts:
            raise UserError("config.prompts is empty; a text-conditioned model needs default "
                            "prompts for its sample grids.")
        text.tokenize(default_prompts)  # a typo in the config is an error before compiling

    def conditions(params, frozen: Frozen, labels: jax.Array | None,
                   tokens: jax.Array | None) -> dict:
        """The model's conditioning pytree: labels [B] and/or text context [B, T, D] + mask."""
        out = {}
        if num_classes:
            out["labels"] = labels
        if text is not None:
            out["context"] = text.encode(params, frozen, tokens)
            out["mask"] = cond_lib.context_mask(tokens)
        return out

    def null_conditions(params, frozen: Frozen, n: int) -> dict:
        """The unconditional input: the null label and the empty prompt."""
        tokens = None if text is None else jnp.broadcast_to(empty, (n, empty.shape[0]))
        return conditions(params, frozen, jnp.full((n,), num_classes, jnp.int32), tokens)

    def applier(params, train: bool = False, rng: jax.Array | None = None):
        unet_params = params["unet"] if joint else params

        def apply(x, t, cond: dict):
            rngs = {"dropout": rng} if train else {}
            extra = {} if text is None else dict(context=cond["context"],
                                                 context_mask=cond["mask"])
            return model.apply(unet_params, x, t, cond.get("labels"), train=train, rngs=rngs,
                               **extra)
        return apply

    def example_inputs() -> tuple[tuple, dict]:
        x, t = jnp.zeros((1, h, w, c)), jnp.zeros((1,), jnp.int32)
        labels = jnp.zeros((1,), jnp.int32) if num_classes else None
        if text is None:
            return (x, t, labels), {}
        length = empty.shape[0]
        return (x, t, labels), dict(context=jnp.zeros((1, length, text.width)),
                                    context_mask=jnp.ones((1, length), bool))

    def init_params(rng: jax.Array):
        args, kwargs = example_inputs()
        params = model.init(rng, *args, **kwargs)
        return {"unet": params, "text": text.init(jax.random.fold_in(rng, 2))} if joint \
            else params

    param_shapes = jax.eval_shape(init_params, jax.random.PRNGKey(0))
    logging.info("%s%s: %s parameters (%.2fM)", type(model).__name__,
                 " + text encoder" if joint else "", f"{count_params(param_shapes):,}",
                 count_params(param_shapes) / 1e6)

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        return create_state(init_params(rng), tx, jax.random.fold_in(rng, 1))

    def noised(x0: jax.Array, rng: jax.Array) -> obj.Noised:
        k_t, k_noise = jax.random.split(rng)
        t = jax.random.randint(k_t, x0.shape[:1], 0, d.sched.num_timesteps)
        noise = jax.random.normal(k_noise, x0.shape)
        return obj.Noised(x0, ds.q_sample(d.sched, x0, t, noise), t, noise)

    def train_step(state: TrainState, batch: dict, frozen: Frozen = None):
        x0 = to_x0(batch["image"], frozen)
        q = noised(x0, step_rng(state, 0))
        labels = batch["label"]
        if num_classes and label_dropout > 0:  # the null label trains p(x) for guidance
            drop = jax.random.bernoulli(step_rng(state, 1), label_dropout, labels.shape)
            labels = jnp.where(drop, num_classes, labels)
        tokens = None
        if text is not None:
            tokens = batch["tokens"].astype(jnp.int32)
            if prompt_dropout > 0:  # the empty prompt trains p(x) for guidance
                drop = jax.random.bernoulli(step_rng(state, 3), prompt_dropout,
                                            (tokens.shape[0], 1))
                tokens = jnp.where(drop, empty[None], tokens)

        def loss_fn(params):
            cond = conditions(params, frozen, labels, tokens)  # a joint encoder trains here
            out = applier(params, True, step_rng(state, 2))(q.x_t, q.t, cond)
            loss, aux = objective.loss(d, out, q)
            return loss.mean(), aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state = apply_gradients(state, grads, tx, ema_decay)
        return state, {"loss": loss, "grad_norm": global_norm(grads),
                       **{k: v.mean() for k, v in aux.items()}}

    def batch_conditions(params, batch: dict, frozen: Frozen) -> dict:
        return conditions(params, frozen, batch["label"],
                          None if text is None else batch["tokens"].astype(jnp.int32))

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen: Frozen = None) -> dict:
        """Objective at random t, and the VLB with `eval.vlb_timesteps` stratified timesteps."""
        x0 = to_x0(batch["image"], frozen)
        apply = applier(state.ema_params)
        cond = batch_conditions(state.ema_params, batch, frozen)
        q = noised(x0, jax.random.fold_in(rng, 0))
        loss, metrics = objective.loss(d, apply(q.x_t, q.t, cond), q)
        metrics = {"loss": loss, **metrics}
        k = int(config.eval.vlb_timesteps) if ae_fns is None else 0  # bits/dim: pixels only
        if k:
            t, wt = stratified_vlb_grid(jax.random.fold_in(rng, 1), d.sched.num_timesteps,
                                        min(k, d.sched.num_timesteps), x0.shape[0])
            vlb = vlb_bpd(d, apply, x0, cond, jax.random.fold_in(rng, 2), t, wt, clip_x0)
            metrics["vlb_bpd_est"] = vlb["vlb_bpd"]
        return metrics

    def final_eval_step(state: TrainState, batch: dict, rng: jax.Array,
                        frozen: Frozen = None) -> dict:
        """The VLB in bits/dim: over all T timesteps, `eval.vlb_chunk` at a time, or with
        `eval.vlb_max_timesteps` = K < T an unbiased stratified estimate from K timesteps."""
        x0 = preprocess(batch["image"])
        cond = batch_conditions(state.ema_params, batch, frozen)
        num_t = d.sched.num_timesteps
        k = int(config.eval.get("vlb_max_timesteps", 0))
        if 0 < k < num_t:
            t, wt = stratified_vlb_grid(jax.random.fold_in(rng, 1), num_t, k, x0.shape[0])
            out = vlb_bpd(d, applier(state.ema_params), x0, cond,
                          jax.random.fold_in(rng, 2), t, wt, clip_x0)
        else:
            chunk = max(1, min(int(config.eval.vlb_chunk), num_t))
            t, wt = full_vlb_grid(num_t, chunk, x0.shape[0])
            out = vlb_bpd(d, applier(state.ema_params), x0, cond, rng,
                          jnp.asarray(t), jnp.asarray(wt), clip_x0)
        return {**out, "vlb_num_timesteps": jnp.float32(k if 0 < k < num_t else num_t)}

    @functools.partial(jax.jit, static_argnames=("num", "guidance_scale", "return_trajectory"))
    def sample_images(state: TrainState, rng: jax.Array, num: int, labels: jax.Array | None,
                      tokens: jax.Array | None, guidance_scale: float, frozen: Frozen,
                      return_trajectory: bool = False):
        """`num` uint8 images [N, H, W, C] from the EMA weights, guided by `guidance_scale`."""
        params = state.ema_params
        cond = conditions(params, frozen, labels, tokens)  # text encoded once, not per step
        null = null_conditions(params, frozen, num) if conditional else cond
        steps = samplers.make_steps(d, sc.name, int(sc.num_steps), float(sc.eta))
        model_fn = samplers.guided(applier(params), cond, null, guidance_scale, c)
        k_x, k_z = jax.random.split(rng)
        x_T = jax.random.normal(k_x, (num, h, w, c))  # images, or latents
        learned = d.variance == "learned" and sc.name == "ddpm"
        out = samplers.sample_loop(d, model_fn, steps, x_T, k_z, clip_x0, learned,
                                   return_trajectory)
        if return_trajectory:
            return to_images(out[0], frozen), out[1]
        return to_images(out, frozen)

    def sample(state: TrainState, rng: jax.Array, num: int, labels: jax.Array | None = None,
               return_trajectory: bool = False, frozen: Frozen = None,
               prompt: str | None = None, prompts: list[str] | None = None):
        """`num` uint8 images [N, H, W, C] from the EMA weights with `config.sampler`.

        A class-conditional model draws classes 0, 1, ... in turn unless `labels` [N] is given.
        A text-conditioned one draws `num` images for each of `prompts` (or `prompt`, or
        `config.prompts`) and returns {"images" [P num, ...], "prompts", "per_prompt"}.
        """
        guidance = float(sc.guidance_scale)
        if text is None:
            if prompt is not None or prompts:
                raise UserError("--prompt / --prompts_file need a text-conditioned model "
                                "(config.diffusion.text); this one is not.")
            if num_classes and labels is None:
                labels = jnp.arange(num) % num_classes
            return sample_images(state, rng, num, labels, None, guidance, frozen,
                                 return_trajectory)
        chosen = [prompt] if prompt is not None else list(prompts or default_prompts)
        tokens = np.repeat(text.tokenize(chosen), num, 0)  # unknown words: before compiling
        n = len(tokens)
        if num_classes and labels is None:
            labels = jnp.arange(n) % num_classes
        out = sample_images(state, rng, n, labels, jnp.asarray(tokens), guidance, frozen,
                            return_trajectory)
        if return_trajectory:
            return out
        return {"images": out, "prompts": [p for p in chosen for _ in range(num)],
                "per_prompt": num}

    def generate(state: TrainState, frozen: Frozen, tokens: np.ndarray, rng: jax.Array,
                 guidance_scale: float) -> np.ndarray:
        """uint8 images [M, H, W, C] for prompt tokens [M, T], `eval.sample_batch` at a time."""
        batch = min(int(config.eval.sample_batch), len(tokens))
        out = []
        for s, chunk, n in padded_chunks(tokens, batch):
            labels = jnp.zeros((batch,), jnp.int32) if num_classes else None
            out.append(np.asarray(sample_images(state, jax.random.fold_in(rng, s), batch, labels,
                                                jnp.asarray(chunk), guidance_scale,
                                                frozen))[:n])
        return np.concatenate(out)

    def sampler_record() -> dict:
        return dict(weights="ema", sampler=sc.name, sampler_steps=len(samplers.sampler_timesteps(
            d.sched.num_timesteps, int(sc.num_steps))),
            sampler_eta=float(sc.eta) if sc.name == "ddim" else None,
            guidance_scale=float(sc.guidance_scale),
            clip_x0=bool(clip_x0), objective=config.diffusion.objective,
            schedule=config.diffusion.schedule, num_timesteps=d.sched.num_timesteps,
            zero_terminal_snr=bool(config.diffusion.get("zero_terminal_snr", False)),
            loss_weighting=config.diffusion.loss_weighting)

    def evaluate(state: TrainState, test_ds, rng: jax.Array, num_samples: int | None,
                 frozen: Frozen = None) -> dict:
        """Text-conditioned: held-out prompt accuracy, FD and CLIP score per guidance scale
        (`text_eval`); otherwise sample quality (FID etc., `common.sample_quality`)."""
        if text is not None:
            from aigc_jax.methods.diffusion.text_eval import text_evaluation

            return text_evaluation(config, info, text, components, frozen, test_ds, rng,
                                   lambda tokens, key, w: generate(state, frozen, tokens, key, w),
                                   sampler_record())
        return sample_quality(config, lambda n, i: sample(state, jax.random.fold_in(rng, i), n,
                                                          frozen=frozen), num_samples,
                              sampler_record())

    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  # The full VLB in bits/dim is a pixel-space quantity (8-bit decoder).
                  final_eval_step=final_eval_step if ae_fns is None else None,
                  sample=sample, evaluate=evaluate,
                  write_samples=write_prompted_samples if text is not None
                  else write_image_samples)


def write_prompted_samples(samples, path_stem: str) -> list[str]:
    """Images with their prompts: `<stem>.png` (one row per prompt), `<stem>.npz` (images,
    prompts) and `<stem>.txt` (index, tab, prompt per line)."""
    if not isinstance(samples, dict):
        return write_image_samples(samples, path_stem)
    images = np.asarray(to_uint8(np.asarray(samples["images"])))
    prompts = [str(p) for p in samples["prompts"]]
    png = plotting.save_image_grid(images, path_stem + ".png", ncols=int(samples["per_prompt"]))
    np.savez_compressed(path_stem + ".npz", images=images, prompts=np.asarray(prompts))
    with open(path_stem + ".txt", "w") as f:
        f.writelines(f"{i}\t{p}\n" for i, p in enumerate(prompts))
    return [png, path_stem + ".npz", path_stem + ".txt"]


__all__ = ["UNet", "create", "latent_codec", "validate", "write_prompted_samples"]
