"""The smallest shared pieces: the dtype table, initialisers, matrix-shaped Dense, GELUs."""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.errors import UserError

# The one table from a config's dtype string to a JAX dtype (`model.dtype` in every family).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve_dtype(name: str, key: str = "model.dtype") -> Any:
    """The JAX dtype for `name`, or a UserError naming the config key and the known names."""
    if name not in DTYPES:
        raise UserError(f"config.{key}={name!r} is unknown; expected one of {sorted(DTYPES)}.")
    return DTYPES[name]


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree (works on ShapeDtypeStructs from eval_shape)."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def zero_init() -> Any:
    """Zero kernels for the last layer of each residual branch (identity at initialisation)."""
    return nn.initializers.zeros


def normal_init(std: float = 0.02):
    """N(0, std^2) initialiser (GPT-2)."""
    return nn.initializers.normal(stddev=std)


class Dense(nn.Dense):
    """nn.Dense on the rows of x [..., D_in] flattened to a matrix: same parameters, same result.

    XLA:CPU computes the weight gradient of a [B, T, D] input as a matmul contracting two axes,
    behind a slow transposing copy; on a matrix it is one plain matmul.
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x.reshape(-1, x.shape[-1]))
        return y.reshape(*x.shape[:-1], y.shape[-1])


def _normal_cdf(x: jax.Array) -> jax.Array:
    return 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, x Phi(x), as torch.nn.GELU(); its gradient Phi(x) + x phi(x) is
    recomputed from x alone: one fused op and one saved tensor, where autodiff keeps several."""
    return x * _normal_cdf(x)


def _gelu_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return gelu(x), x


def _gelu_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    pdf = jnp.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
    return (g * (_normal_cdf(x) + x * pdf),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GPT-2's tanh approximation of GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
    transformers' "gelu_new", torch's GELU(approximate="tanh")."""
    return jax.nn.gelu(x, approximate=True)


# `model.gelu` names one of these (exact: torch.nn.GELU(); tanh: GPT-2's released weights).
GELUS = {"exact": gelu, "tanh": gelu_tanh}
