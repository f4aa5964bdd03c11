"""Optimizers and learning-rate schedules built from `config.optimizer`."""

import jax
import ml_collections
import optax

from aigc_jax.errors import UserError

SCHEDULES = ("constant", "cosine", "linear", "piecewise")


def create_schedule(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then constant, cosine/linear decay, or piecewise steps."""
    lr, warmup = float(cfg.learning_rate), int(cfg.get("warmup_steps", 0))
    name = cfg.get("schedule", "constant")
    min_lr = float(cfg.get("min_lr", 0.0))
    decay_steps = max(num_steps - warmup, 1)
    if name == "constant":
        after = optax.constant_schedule(lr)
    elif name == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=min_lr / lr if lr else 0.0)
    elif name == "linear":
        after = optax.linear_schedule(lr, min_lr, decay_steps)
    elif name == "piecewise":
        # Multiply the rate by `decay_factor` at each of `boundaries` (steps after warmup).
        factor = float(cfg.decay_factor)
        after = optax.piecewise_constant_schedule(
            lr, {int(b): factor for b in cfg.boundaries})
    else:
        raise UserError(f"optimizer.schedule={name!r} is unknown; expected one of {SCHEDULES}.")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def _decay_mask(params):
    # Decoupled weight decay on matrices and kernels only: never on biases, norms or gains.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def create_optimizer(cfg: ml_collections.ConfigDict, num_steps: int,
                     learning_rate: float | None = None) -> optax.GradientTransformation:
    """The optax chain for `config.optimizer`: clipping, Adam/AdamW/SGD, schedule, accumulation.

    `learning_rate` overrides `cfg.learning_rate` (the GAN's two-time-scale rule uses it).
    """
    if learning_rate is not None:
        cfg = ml_collections.ConfigDict(cfg.to_dict())
        cfg.learning_rate = learning_rate
    schedule = create_schedule(cfg, num_steps)
    name = cfg.get("name", "adam")
    b1, b2 = float(cfg.get("b1", 0.9)), float(cfg.get("b2", 0.999))
    eps = float(cfg.get("eps", 1e-8))
    if name == "adam":
        opt = optax.adam(schedule, b1=b1, b2=b2, eps=eps)
    elif name == "adamw":
        opt = optax.adamw(schedule, b1=b1, b2=b2, eps=eps,
                          weight_decay=float(cfg.get("weight_decay", 0.0)), mask=_decay_mask)
    elif name == "sgd":
        opt = optax.sgd(schedule, momentum=float(cfg.get("momentum", 0.0)) or None)
    else:
        raise UserError(f"optimizer.name={name!r} is unknown; expected one of adam, adamw, sgd.")
    parts = []
    clip = float(cfg.get("grad_clip", 0.0))
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    parts.append(opt)
    tx = optax.chain(*parts)
    accum = int(cfg.get("grad_accum_steps", 1))
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)
    return tx
