"""The TrainState pytree shared by every method, and the update helpers that act on it."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any


@struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly: parameters, optimizer, EMA, randomness.

    `params`, `opt_state` and `ema_params` are arbitrary pytrees, so a method with two networks
    (the GAN) keeps a dict of both. `model_state` holds mutable collections such as BatchNorm's
    `batch_stats`. `rng` is the run's base key: every step derives its own key from it with
    `step_rng`, so a resumed run draws the same random numbers as an uninterrupted one.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    rng: jax.Array
    model_state: PyTree = struct.field(default_factory=dict)


Optimizers = optax.GradientTransformation | dict[str, optax.GradientTransformation]


def create_state(params: PyTree, tx: Optimizers, rng: jax.Array,
                 model_state: PyTree | None = None,
                 ema_keys: tuple[str, ...] | None = None) -> TrainState:
    """A fresh TrainState at step 0 whose EMA starts equal to the parameters.

    With several networks, `params` is a dict of them and `tx` a dict of optimizers with the
    same keys (a GAN's generator and discriminator, an autoencoder and its codebook or
    discriminator): `opt_state` is then a dict too, and `ema_keys` picks the networks that
    keep an EMA (default all).
    """
    if isinstance(tx, dict):
        if set(tx) != set(params):
            raise ValueError(f"optimizers {sorted(tx)} must match the networks {sorted(params)}")
        opt_state = {k: tx[k].init(params[k]) for k in tx}
        keys = tuple(params) if ema_keys is None else ema_keys
        ema = {k: jax.tree.map(jnp.copy, params[k]) for k in keys}
    else:
        opt_state = tx.init(params)
        ema = jax.tree.map(jnp.copy, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        ema_params=ema,
        rng=rng,
        model_state={} if model_state is None else model_state,
    )


def optimizer_update(params: PyTree, opt_state: PyTree, grads: PyTree,
                     tx: optax.GradientTransformation) -> tuple[PyTree, PyTree]:
    """One optax update of one network: (new params, new optimizer state)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def step_rng(state: TrainState, *names: int) -> jax.Array:
    """The key for this step (and optional sub-streams): a pure function of (rng, step)."""
    key = jax.random.fold_in(state.rng, state.step)
    for name in names:
        key = jax.random.fold_in(key, name)
    return key


def ema_update(ema: PyTree, new: PyTree, decay: float) -> PyTree:
    """Exponential moving average: ema <- decay * ema + (1 - decay) * new."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, new)


def apply_gradients(state: TrainState, grads: PyTree, tx: optax.GradientTransformation,
                    ema_decay: float, **changes: Any) -> TrainState:
    """One optimizer update plus the EMA update, advancing the step counter."""
    params, opt_state = optimizer_update(state.params, state.opt_state, grads, tx)
    return state.replace(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        ema_params=ema_update(state.ema_params, params, ema_decay),
        **changes,
    )


def global_norm(tree: PyTree) -> jax.Array:
    """The L2 norm of a whole pytree (used for gradient-norm metrics)."""
    return optax.tree.norm(tree)
