"""Noise schedules, the forward process q(x_t | x_0), its posterior, and eps <-> x0 <-> v.

Ho et al. (2020) for the linear schedule and the posterior; Nichol & Dhariwal (2021) for the
cosine schedule; Rombach et al. (2022) for LDM's scaled-linear one (Stable Diffusion's);
Salimans & Ho (2022) for v = sqrt(alphas_cumprod) eps - sqrt(1 - ...) x0; Lin et al. (2024)
for rescaling a schedule to zero terminal SNR.
Tables are computed in float64 with numpy and stored as float32 arrays indexed by t in [0, T);
`float64_tables` gives them back in float64 for host-side arithmetic.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax.errors import UserError

SCHEDULES = ("linear", "cosine", "scaled_linear")


def linear_betas(num_timesteps: int, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> np.ndarray:
    """DDPM's betas, linear from beta_start to beta_end; scaled by 1000 / T so any T works."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> np.ndarray:
    """LDM's betas, linear in sqrt(beta) from beta_start to beta_end (its 0.00085..0.012 at
    T = 1000); scaled by 1000 / T as `linear_betas`, so alphas_cumprod keeps its shape."""
    scale = 1000.0 / num_timesteps
    return scale * np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps,
                               dtype=np.float64) ** 2


def cosine_alpha_bar(u: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's alpha_bar at u = t / T: cos((u + s) / (1 + s) * pi / 2)^2."""
    return np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """betas_t = 1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), clipped at max_beta."""
    u = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    abar = cosine_alpha_bar(u, s)
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. (2024), Algorithm 1: shift and scale sqrt(alphas_cumprod) so it keeps its first
    value and ends at exactly 0, so x_{T-1} holds no signal, as the sampler's pure noise holds
    none. The last beta is 1; eps is then undefined at t = T - 1, so models predict v or x0."""
    root = np.sqrt(np.cumprod(1.0 - np.asarray(betas, np.float64)))
    first, last = root[0], root[-1]
    alphas_cumprod = ((root - last) * first / (first - last)) ** 2
    alphas = np.append(alphas_cumprod[0], alphas_cumprod[1:] / alphas_cumprod[:-1])
    return 1.0 - alphas


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Schedule:
    """Precomputed per-timestep tables [T] of a discrete Gaussian diffusion (paper names)."""

    betas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    log_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array
    # The float64 betas the tables came from, static (hashable) so they survive jit tracing:
    # host-side tables (the samplers' respaced chains) are rebuilt from them, not from float32.
    betas64: tuple[float, ...] = dataclasses.field(default=(), repr=False,
                                                    metadata=dict(static=True))

    @property
    def num_timesteps(self) -> int:
        """T."""
        return self.betas.shape[0]


def tables_from_betas(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Every table of `Schedule` in float64, from betas [T]."""
    betas = np.asarray(betas, np.float64)
    with np.errstate(divide="ignore"):  # zero terminal SNR: 1 / alphas_cumprod is inf at T - 1
        return _tables(betas)


def _tables(betas: np.ndarray) -> dict[str, np.ndarray]:
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    # posterior_variance[0] is 0; the log is clipped to posterior_variance[1] as in DDPM's code.
    post_log_var = np.log(np.append(post_var[1], post_var[1:])) if len(betas) > 1 else \
        np.log(np.maximum(post_var, 1e-20))
    return dict(
        betas=betas, alphas_cumprod=ac, alphas_cumprod_prev=ac_prev,
        sqrt_alphas_cumprod=np.sqrt(ac), sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ac),
        log_one_minus_alphas_cumprod=np.log(1.0 - ac),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1.0),
        posterior_variance=post_var, posterior_log_variance_clipped=post_log_var,
        posterior_mean_coef1=betas * np.sqrt(ac_prev) / (1.0 - ac),
        posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    )


def schedule_from_betas(betas: np.ndarray) -> Schedule:
    """A `Schedule` (float32 tables, plus the float64 betas) from betas [T]."""
    tables = tables_from_betas(betas)
    return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in tables.items()},
                    betas64=tuple(float(b) for b in tables["betas"]))


def float64_tables(sched: Schedule) -> dict[str, np.ndarray]:
    """The schedule's tables in float64, for coefficients computed on the host.

    Rebuilt from the float64 betas; a Schedule made without them falls back to its float32
    betas (relative error 6e-8 per beta, still far better than the float32 products).
    """
    betas = sched.betas64 if sched.betas64 else np.asarray(sched.betas, np.float64)
    return tables_from_betas(np.asarray(betas, np.float64))


def create_schedule(cfg: ml_collections.ConfigDict) -> Schedule:
    """The schedule of `config.diffusion`: linear, cosine or scaled-linear betas with
    T = num_timesteps (linear and scaled_linear read beta_start and beta_end), rescaled to zero
    terminal SNR when `zero_terminal_snr` is set."""
    t = int(cfg.num_timesteps)
    if t < 1:
        raise UserError(f"config.diffusion.num_timesteps={t} must be a positive integer.")
    if cfg.schedule == "linear":
        betas = linear_betas(t, float(cfg.beta_start), float(cfg.beta_end))
    elif cfg.schedule == "scaled_linear":
        betas = scaled_linear_betas(t, float(cfg.beta_start), float(cfg.beta_end))
    elif cfg.schedule == "cosine":
        betas = cosine_betas(t, float(cfg.cosine_s), float(cfg.max_beta))
    else:
        raise UserError(f"config.diffusion.schedule={cfg.schedule!r} is unknown; "
                        f"expected one of {SCHEDULES}.")
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise UserError(f"config.diffusion gives betas outside (0, 1) (min {betas.min():.3g}, "
                        f"max {betas.max():.3g}); lower beta_end or raise num_timesteps.")
    if bool(cfg.get("zero_terminal_snr", False)):
        betas = rescale_zero_terminal_snr(betas)
    return schedule_from_betas(betas)


def extract(table: jax.Array, t: jax.Array, ndim: int = 4) -> jax.Array:
    """table[t] for t [B], shaped [B, 1, 1, 1] to broadcast against images."""
    return table[t].reshape(t.shape + (1,) * (ndim - t.ndim))


def snr(sched: Schedule, t: jax.Array) -> jax.Array:
    """Signal-to-noise ratio alphas_cumprod / (1 - alphas_cumprod) at t [B] -> [B]."""
    return sched.alphas_cumprod[t] / (1.0 - sched.alphas_cumprod[t])


def q_sample(sched: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alphas_cumprod) x0 + sqrt(1 - alphas_cumprod) eps, a draw from q(x_t | x0)."""
    return (extract(sched.sqrt_alphas_cumprod, t) * x0
            + extract(sched.sqrt_one_minus_alphas_cumprod, t) * noise)


def q_mean_variance(sched: Schedule, x0: jax.Array, t: jax.Array):
    """Mean and log-variance of q(x_t | x0)."""
    mean = extract(sched.sqrt_alphas_cumprod, t) * x0
    return mean, extract(sched.log_one_minus_alphas_cumprod, t) * jnp.ones_like(x0)


def q_posterior(sched: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array):
    """Mean and clipped log-variance of q(x_{t-1} | x_t, x0)."""
    mean = (extract(sched.posterior_mean_coef1, t) * x0
            + extract(sched.posterior_mean_coef2, t) * x_t)
    return mean, extract(sched.posterior_log_variance_clipped, t) * jnp.ones_like(x_t)


# Conversions between the three parameterisations; all exact given x_t = a x0 + s eps.


def x0_from_eps(sched: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """x0 = (x_t - sqrt(1 - alphas_cumprod) eps) / sqrt(alphas_cumprod)."""
    return (extract(sched.sqrt_recip_alphas_cumprod, t) * x_t
            - extract(sched.sqrt_recipm1_alphas_cumprod, t) * eps)


def eps_from_x0(sched: Schedule, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
    """eps = (x_t - sqrt(alphas_cumprod) x0) / sqrt(1 - alphas_cumprod)."""
    return ((extract(sched.sqrt_recip_alphas_cumprod, t) * x_t - x0)
            / extract(sched.sqrt_recipm1_alphas_cumprod, t))


def v_from_x0_eps(sched: Schedule, x0: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """v = sqrt(alphas_cumprod) eps - sqrt(1 - alphas_cumprod) x0 (Salimans & Ho, 2022)."""
    return (extract(sched.sqrt_alphas_cumprod, t) * eps
            - extract(sched.sqrt_one_minus_alphas_cumprod, t) * x0)


def x0_from_v(sched: Schedule, x_t: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """x0 = sqrt(alphas_cumprod) x_t - sqrt(1 - alphas_cumprod) v."""
    return (extract(sched.sqrt_alphas_cumprod, t) * x_t
            - extract(sched.sqrt_one_minus_alphas_cumprod, t) * v)


def eps_from_v(sched: Schedule, x_t: jax.Array, t: jax.Array, v: jax.Array) -> jax.Array:
    """eps = sqrt(1 - alphas_cumprod) x_t + sqrt(alphas_cumprod) v."""
    return (extract(sched.sqrt_one_minus_alphas_cumprod, t) * x_t
            + extract(sched.sqrt_alphas_cumprod, t) * v)
