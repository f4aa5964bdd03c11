"""The two numerics fixes of issue 15, against exact values, old formula beside new.

1. The discretized Gaussian log-likelihood k sigma above/below the mean (sigma = 0.05, an
   interior bin): the old difference of CDFs vs `distributions.discretized_gaussian_log_prob`
   vs Simpson's rule on the density in float64.
2. The respaced DDPM coefficients (50 of 1,000 linear steps) rebuilt from the float32
   alphas_cumprod table (old) vs from the float64 tables (new), relative to float64 exact.

Run: python experiments/trust_numerics/run.py  (a few seconds on a CPU)
"""

import math

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from aigc_jax import distributions as dist
from aigc_jax.methods.diffusion import objectives as obj
from aigc_jax.methods.diffusion import samplers
from aigc_jax.methods.diffusion import schedules as ds


def exact_bin(x: float, mean: float, sigma: float) -> float:
    z = np.linspace((x - 1 / 255 - mean) / sigma, (x + 1 / 255 - mean) / sigma, 2001)
    log_pdf = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    w = np.ones_like(z)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    peak = log_pdf.max()
    return peak + math.log((z[1] - z[0]) / 3 * float((w * np.exp(log_pdf - peak)).sum()))


def old_bin(x, mean, log_sigma):
    inv = jnp.exp(-log_sigma)
    plus, minus = inv * (x - mean + 1 / 255), inv * (x - mean - 1 / 255)
    return jnp.log(jnp.maximum(ndtr(plus) - ndtr(minus), 1e-12))


def main() -> None:
    print("| k (x - mean in sigmas) | old | new | exact (float64) |")
    print("|---|---|---|---|")
    sigma = 0.05
    for k in (-8, -6, -3, 0, 3, 6, 8):
        mean = -k * sigma
        args = (jnp.float32(0.0), jnp.float32(mean), jnp.log(jnp.float32(sigma)))
        print(f"| {k:+d} | {float(old_bin(*args)):.4f} | "
              f"{float(dist.discretized_gaussian_log_prob(*args)):.4f} | "
              f"{exact_bin(0.0, mean, sigma):.4f} |")
    betas = ds.linear_betas(1000)
    t = samplers.sampler_timesteps(1000, 50)

    def tables(ac: np.ndarray) -> dict[str, np.ndarray]:
        ac_prev = np.append(1.0, ac[:-1])
        beta = 1 - ac / ac_prev
        return {"c_x0": beta * np.sqrt(ac_prev) / (1 - ac),
                "c_xt": (1 - ac_prev) * np.sqrt(1 - beta) / (1 - ac), "beta": beta,
                "posterior_variance": beta * (1 - ac_prev) / (1 - ac)}

    exact = tables(np.cumprod(1 - betas)[t])
    old = tables(np.asarray(jnp.asarray(np.cumprod(1 - betas), jnp.float32), np.float64)[t])
    steps = samplers.ddpm_steps(obj.Diffusion(ds.schedule_from_betas(betas)), t)
    new = {"c_x0": steps.c_x0, "c_xt": steps.c_xt, "beta": np.exp(steps.max_log_variance),
           "posterior_variance": np.append(np.nan, np.exp(steps.min_log_variance[1:]))}
    print("\nrespaced DDPM (50 of 1,000 linear steps): max relative error vs float64 exact")
    print("| table | old (from float32 alphas_cumprod) | new (float64 tables) |")
    print("|---|---|---|")
    for name in exact:
        row = []
        for got in (old[name], new[name]):
            with np.errstate(invalid="ignore"):  # c_xt is 0 at t = 0
                rel = np.abs(got - exact[name]) / np.abs(exact[name])
            rel = rel[np.isfinite(rel)]
            row.append(f"{rel.max():.1e}")
        print(f"| {name} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
