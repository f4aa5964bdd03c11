"""Checks on a config before anything is compiled: one clear line per problem."""

import ml_collections

from aigc_jax.errors import UserError

POSITIVE_INTS = ("train.batch_size", "train.num_steps", "eval.batch_size", "num_samples",
                 "optimizer.grad_accum_steps")
NON_NEGATIVE_INTS = ("train.log_every", "train.eval_every", "train.checkpoint_every",
                     "train.sample_every", "optimizer.warmup_steps", "eval.num_batches",
                     "eval.final_max_examples")


def _get(config: ml_collections.ConfigDict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError naming the first impossible value in `config`."""
    from aigc_jax import methods

    for key in POSITIVE_INTS + NON_NEGATIVE_INTS:
        try:
            value = _get(config, key)
        except (KeyError, AttributeError):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"config.{key}={value!r} must be an integer.")
        if key in POSITIVE_INTS and value <= 0:
            raise UserError(f"config.{key}={value} must be positive.")
        if value < 0:
            raise UserError(f"config.{key}={value} must not be negative.")
    if int(config.train.log_every) == 0 or int(config.train.checkpoint_every) == 0:
        raise UserError("config.train.log_every and train.checkpoint_every must be positive.")
    lr = config.optimizer.learning_rate
    if not isinstance(lr, (int, float)) or lr < 0:
        raise UserError(f"config.optimizer.learning_rate={lr!r} must be a non-negative number.")
    decay = float(config.train.ema_decay)
    if not 0.0 <= decay < 1.0:
        raise UserError(f"config.train.ema_decay={decay} must be in [0, 1).")
    module = methods.get_module(config.method)
    if hasattr(module, "validate"):
        module.validate(config)
