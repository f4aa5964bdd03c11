"""DDPM ancestral and DDIM samplers as one `lax.scan` over per-step coefficient tables.

Both samplers take x_prev = c_x0 * x0_hat + c_xt * x_t + sigma * z on an ascending
sub-sequence of timesteps. DDPM on a sub-sequence is the ancestral sampler of the respaced
chain (Nichol & Dhariwal, 2021); DDIM (Song et al., 2021) with eta = 1 on the full schedule has
exactly DDPM's coefficients, and with eta = 0 sigma is 0 (deterministic).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.methods.common import to_uint8
from aigc_jax.methods.diffusion import schedules as ds
from aigc_jax.methods.diffusion.objectives import Diffusion, p_mean_variance

SAMPLERS = ("ddpm", "ddim")

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t [N,H,W,C], t [N]) -> output


class Steps(NamedTuple):
    """Per-step tables [S] for timesteps t (ascending); sampling walks them backwards."""

    t: np.ndarray
    c_x0: np.ndarray
    c_xt: np.ndarray
    log_variance: np.ndarray  # log sigma^2 of the injected noise (fixed variances)
    min_log_variance: np.ndarray  # log beta~ of the respaced chain (learned interpolation)
    max_log_variance: np.ndarray  # log beta of the respaced chain


def sampler_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """An evenly spaced ascending sub-sequence of [0, T) ending at T - 1 (0 or >= T: all)."""
    if num_steps <= 0 or num_steps >= num_timesteps:
        return np.arange(num_timesteps)
    return np.round(np.linspace(num_timesteps - 1, 0, num_steps))[::-1].astype(np.int64)


def _respaced(d: Diffusion, t: np.ndarray):
    # From the float64 tables, not the float32 `alphas_cumprod`: 1 - alphas_cumprod at small t
    # is ~1e-4, and float32 rounding of a number near 1 costs it 5e-4 of relative precision.
    ac = ds.float64_tables(d.sched)["alphas_cumprod"][t]
    ac_prev = np.append(1.0, ac[:-1])
    betas = 1.0 - ac / ac_prev
    return ac, ac_prev, betas


def ddpm_steps(d: Diffusion, t: np.ndarray) -> Steps:
    """Ancestral sampling of the chain respaced to `t`: posterior mean coefs and variances."""
    ac, ac_prev, betas = _respaced(d, t)
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    first = post_var[1] if len(t) > 1 else betas[0]  # sigma at the last step is never used
    small = np.log(np.append(first, post_var[1:]))
    large = np.log(np.append(first, betas[1:]))
    return Steps(t, c_x0=betas * np.sqrt(ac_prev) / (1.0 - ac),
                 c_xt=(1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
                 log_variance=large if d.variance == "fixed_large" else small,
                 min_log_variance=small, max_log_variance=np.log(betas))


def ddim_steps(d: Diffusion, t: np.ndarray, eta: float) -> Steps:
    """DDIM: x_prev = sqrt(ac_prev) x0 + sqrt(1 - ac_prev - sigma^2) eps + sigma z, eps from x0."""
    ac, ac_prev, _ = _respaced(d, t)
    var = eta**2 * (1.0 - ac_prev) / (1.0 - ac) * (1.0 - ac / ac_prev)
    direction = np.sqrt(np.maximum(1.0 - ac_prev - var, 0.0))
    log_var = np.log(np.maximum(var, 1e-30))
    return Steps(t, c_x0=np.sqrt(ac_prev) - direction * np.sqrt(ac) / np.sqrt(1.0 - ac),
                 c_xt=direction / np.sqrt(1.0 - ac),
                 log_variance=np.where(var > 0, log_var, -np.inf),  # sigma exactly 0
                 min_log_variance=log_var, max_log_variance=log_var)


def make_steps(d: Diffusion, name: str, num_steps: int, eta: float) -> Steps:
    """The coefficient tables of sampler `name` ("ddpm" | "ddim")."""
    t = sampler_timesteps(d.sched.num_timesteps, num_steps)
    return ddpm_steps(d, t) if name == "ddpm" else ddim_steps(d, t, eta)


def sample_loop(d: Diffusion, model_fn: ModelFn, steps: Steps, x_T: jax.Array, rng: jax.Array,
                clip_x0: bool = True, learned_variance: bool = False,
                return_trajectory: bool = False):
    """Run the reverse chain from x_T [N, H, W, C]; the noise at step i uses fold_in(rng, i).

    Returns x_0 [N, H, W, C] in floats, and with `return_trajectory` also uint8 "x_t" and
    "x0" (the prediction) after each step, [S, N, H, W, C], from t = T - 1 down to 0.
    """
    tables = {k: jnp.asarray(v, jnp.float32) for k, v in steps._asdict().items() if k != "t"}
    t_seq = jnp.asarray(steps.t, jnp.int32)

    def body(x, i):
        t = jnp.full(x.shape[:1], t_seq[i], jnp.int32)
        out = model_fn(x, t)
        p = p_mean_variance(d, out, x, t, clip_x0)
        log_var = tables["log_variance"][i]
        if learned_variance:  # the model's interpolation, on the respaced chain's range
            frac = (out[..., x.shape[-1]:] + 1.0) / 2.0
            log_var = (frac * tables["max_log_variance"][i]
                       + (1.0 - frac) * tables["min_log_variance"][i])
        z = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
        sigma = jnp.where(i > 0, jnp.exp(0.5 * log_var), 0.0)
        x_prev = tables["c_x0"][i] * p["x0"] + tables["c_xt"][i] * x + sigma * z
        traj = (to_uint8(x_prev), to_uint8(p["x0"])) if return_trajectory else None
        return x_prev, traj

    x0, traj = jax.lax.scan(body, x_T, jnp.arange(len(steps.t) - 1, -1, -1))
    if return_trajectory:
        return x0, {"x_t": traj[0], "x0": traj[1]}
    return x0


def guided(apply: Callable, cond: Any, null: Any, guidance_scale: float,
           channels: int) -> ModelFn:
    """Classifier-free guidance (Ho & Salimans, 2021): (1 + w) out(x, cond) - w out(x, null).

    `apply(x, t, cond)` is the network; `cond` and `null` are pytrees of [N, ...] arrays
    (labels, text context) with the same structure. w = 0 is the plain conditional model (one
    forward pass), w = -1 the unconditional one (Stable Diffusion's scale s is 1 + w); only the
    first `channels` (mean) outputs are guided.
    """
    if guidance_scale == 0.0:
        return lambda x, t: apply(x, t, cond)
    w = guidance_scale
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, null)

    def fn(x: jax.Array, t: jax.Array) -> jax.Array:
        out = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
        c, u = jnp.split(out, 2, axis=0)
        mean = (1.0 + w) * c[..., :channels] - w * u[..., :channels]
        return jnp.concatenate([mean, c[..., channels:]], axis=-1)

    return fn


def guided_model_fn(apply: Callable, labels: jax.Array | None, guidance_scale: float,
                    num_classes: int, channels: int) -> ModelFn:
    """`guided` for a class-conditional `apply(x, t, labels)`: the null label is `num_classes`."""
    if not num_classes or guidance_scale == 0.0:
        return lambda x, t: apply(x, t, labels)
    return guided(apply, labels, jnp.full_like(labels, num_classes), guidance_scale, channels)
