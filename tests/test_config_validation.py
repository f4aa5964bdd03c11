"""Random config overrides get either a valid config or one clear UserError, never a traceback."""

import os

import jax
import jax.numpy as jnp
import pytest
from conftest import load_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigc_jax import config_validation, methods
from aigc_jax.errors import UserError

CONFIGS = [("vae", "digits"), ("diffusion", "digits"), ("gan", "digits"), ("lm", "tiny")]
_DIGITS = {"image_shape": [8, 8, 1], "num_classes": 10}
INFOS = {"vae": _DIGITS, "diffusion": {"image_shape": [16, 16, 1], "num_classes": 10},
         "gan": _DIGITS,
         "lm": {"kind": "text", "vocab_size": 5, "block_size": 16,
                 "tokenizer": {"kind": "char", "chars": "abcd\n", "vocab_size": 5}}}


def _example_batch(name: str, config) -> dict:
    """Abstract arrays shaped like one batch of the family's data (nothing is computed)."""
    if name == "lm":
        return {"tokens": jax.ShapeDtypeStruct((2, int(config.model.block_size) + 1), jnp.int32)}
    size = int(config.data.image_size) or INFOS[name]["image_shape"][0]
    shape = (size, size, INFOS[name]["image_shape"][2])
    batch = 2 * max(int(config.get("n_critic", 1)), 1)
    return {"image": jax.ShapeDtypeStruct((batch, *shape), jnp.uint8),
            "label": jax.ShapeDtypeStruct((batch,), jnp.int32)}


def _leaf_keys(config, prefix=""):
    keys = []
    for k, v in config.items():
        if hasattr(v, "items"):
            keys += _leaf_keys(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


# A deeper search: AIGC_HYPOTHESIS_EXAMPLES=400 pytest tests/test_config_validation.py
EXAMPLES = int(os.environ.get("AIGC_HYPOTHESIS_EXAMPLES", 30))


def values(max_int: int):
    """Override values: integers up to `max_int`, odd floats, strings, booleans, tuples."""
    return st.one_of(st.integers(-5, max_int), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(["", "bogus", "ddim", "adamw", "iwae", "cosine"]),
                     st.booleans(), st.tuples(st.integers(-3, 300)))


# Architecture sizes stay below 300: a valid 10**6-layer model is not an error, only a trace
# that takes hours; the search is for impossible values (zero, negative, wrong kind).
MODEL_VALUES, OTHER_VALUES = values(300), values(10**6)


def _set(config, dotted, value):
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value  # ConfigDict itself rejects a value of the wrong type (TypeError)


@pytest.mark.parametrize("name, variant", CONFIGS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_overrides_validate_or_fail_clearly(name, variant, data):
    config = load_config(name, variant)
    keys = _leaf_keys(config)
    model_keys = [k for k in keys if k.startswith(("model.", "eval.", "train."))]
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(keys) | st.sampled_from(model_keys))
        value = data.draw(MODEL_VALUES if key.startswith(("model.", "data.")) else OTHER_VALUES)
        try:
            _set(config, key, value)
        except (TypeError, ValueError):
            continue  # the CLI reports these while parsing flags (see test_cli)
    try:
        config_validation.validate(config)
        info = dict(INFOS[name])
        if name != "lm" and int(config.data.image_size):
            info["image_shape"] = [int(config.data.image_size)] * 2 + info["image_shape"][2:]
        method = methods.create(config, info)
        batch = _example_batch(name, config)
        jax.eval_shape(method.init_state, jax.random.PRNGKey(0), batch)  # traces, no compute
    except UserError as e:
        assert str(e) and "\n" not in str(e)
    finally:
        jax.clear_caches()  # hundreds of distinct models would otherwise pile up in memory


@pytest.mark.parametrize("value", [True, 0, -2])
def test_grad_accum_steps_must_be_a_positive_integer(value):
    # Found by the random search: True passed validation, then the LM's create() failed with
    # a TypeError traceback when it reset the field to 1.
    config = load_config("lm", "tiny")
    config.optimizer.grad_accum_steps = value
    with pytest.raises(UserError, match="grad_accum_steps"):
        config_validation.validate(config)
