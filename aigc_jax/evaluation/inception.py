"""The FID InceptionV3 (TF graph `2015-12-05`, as ported by pytorch-fid) in Flax linen.

Outputs pool3 features [N, 2048] and 1008-way logits (the TF graph's classes, used for the
Inception Score). Module names follow torchvision / pytorch-fid so a converted state dict maps
name-for-name (see `from_torch_state_dict`). BatchNorm runs in inference mode only.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from aigc_jax.errors import UserError
from aigc_jax.evaluation import weights_io

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU."""

    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel, self.strides, ((ph, ph), (pw, pw)),
                    use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _conv(name: str, features: int, kernel: int | tuple[int, int], strides: int = 1,
          padding: int | tuple[int, int] = 0) -> BasicConv:
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (padding, padding) if isinstance(padding, int) else padding
    return BasicConv(features, kernel, strides, padding, name=name)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # count_include_pad=False, as in the TF graph: border averages ignore the zero padding.
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array, strides: int = 1) -> jax.Array:
    pad = ((1, 1), (1, 1)) if strides == 1 else "VALID"
    return nn.max_pool(x, (3, 3), (strides, strides), pad)


class InceptionA(nn.Module):
    """Mixed_5b/c/d: 1x1, 5x5, double 3x3 and average-pool branches."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = _conv("branch1x1", 64, 1)(x)
        b5 = _conv("branch5x5_2", 64, 5, padding=2)(_conv("branch5x5_1", 48, 1)(x))
        b3 = _conv("branch3x3dbl_1", 64, 1)(x)
        b3 = _conv("branch3x3dbl_2", 96, 3, padding=1)(b3)
        b3 = _conv("branch3x3dbl_3", 96, 3, padding=1)(b3)
        bp = _conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = _conv("branch3x3", 384, 3, strides=2)(x)
        bd = _conv("branch3x3dbl_1", 64, 1)(x)
        bd = _conv("branch3x3dbl_2", 96, 3, padding=1)(bd)
        bd = _conv("branch3x3dbl_3", 96, 3, strides=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], -1)


class InceptionC(nn.Module):
    """Mixed_6b..e: factorised 7x7 branches."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.channels_7x7
        b1 = _conv("branch1x1", 192, 1)(x)
        b7 = _conv("branch7x7_1", c, 1)(x)
        b7 = _conv("branch7x7_2", c, (1, 7), padding=(0, 3))(b7)
        b7 = _conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = _conv("branch7x7dbl_1", c, 1)(x)
        for i, (k, p, f) in enumerate([((7, 1), (3, 0), c), ((1, 7), (0, 3), c),
                                       ((7, 1), (3, 0), c), ((1, 7), (0, 3), 192)]):
            bd = _conv(f"branch7x7dbl_{i + 2}", f, k, padding=p)(bd)
        bp = _conv("branch_pool", 192, 1)(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = _conv("branch3x3_2", 320, 3, strides=2)(_conv("branch3x3_1", 192, 1)(x))
        b7 = _conv("branch7x7x3_1", 192, 1)(x)
        b7 = _conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = _conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = _conv("branch7x7x3_4", 192, 3, strides=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], -1)


class InceptionE(nn.Module):
    """Mixed_7b/c: expanded filter banks; Mixed_7c pools with max (a quirk of the TF graph)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = _conv("branch1x1", 320, 1)(x)
        b3 = _conv("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate([_conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                              _conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3)], -1)
        bd = _conv("branch3x3dbl_2", 384, 3, padding=1)(_conv("branch3x3dbl_1", 448, 1)(x))
        bd = jnp.concatenate([_conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                              _conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd)], -1)
        pooled = _max_pool_3x3(x) if self.max_pool else _avg_pool_3x3(x)
        bp = _conv("branch_pool", 192, 1)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


class InceptionV3(nn.Module):
    """FID InceptionV3: x [N, 299, 299, 3] in [-1, 1] -> (pool3 [N, 2048], logits [N, 1008])."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = _conv("Conv2d_1a_3x3", 32, 3, strides=2)(x)
        x = _conv("Conv2d_2a_3x3", 32, 3)(x)
        x = _conv("Conv2d_2b_3x3", 64, 3, padding=1)(x)
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = _conv("Conv2d_3b_1x1", 80, 1)(x)
        x = _conv("Conv2d_4a_3x3", 192, 3)(x)
        x = nn.max_pool(x, (3, 3), (2, 2))
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
            x = InceptionC(c, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        pool3 = x.mean(axis=(1, 2))  # [N, 2048]
        return pool3, nn.Dense(NUM_CLASSES, name="fc")(pool3)


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 [N, H, W, C] (C = 1 or 3) -> float32 [N, 299, 299, 3] in [-1, 1], bilinear resize."""
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        # Half-pixel bilinear without antialiasing = torch F.interpolate(align_corners=False),
        # which pytorch-fid uses; published FIDs depend on this choice.
        x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear",
                             antialias=False)
    return x / 127.5 - 1.0


def variable_shapes() -> dict:
    """The {"params", "batch_stats"} tree of ShapeDtypeStructs, without computing anything."""
    # Parameter shapes do not depend on the spatial size; 75 is the smallest valid input.
    return jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


def init_variables(seed: int = 0) -> dict:
    """Random variables (He-normal kernels, random BatchNorm statistics), for tests/conversions."""
    # numpy instead of `InceptionV3().init`: compiling the init of 23.8M parameters takes ~40 s.
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = path[-1].key
        if name == "kernel":
            return rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape).astype(np.float32)
        if name in ("scale", "var"):
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        return rng.normal(0, 0.1, s.shape).astype(np.float32)  # bias, mean

    return jax.tree_util.tree_map_with_path(draw, variable_shapes())


def load_variables(path_or_url: str, cache_dir: str | None = None) -> dict:
    """FID Inception variables from a .npz/.msgpack in our layout or a pytorch-fid state dict.

    A .npz whose keys contain "." (e.g. "Mixed_5b.branch1x1.conv.weight") is taken to be the
    pytorch-fid `pt_inception-2015-12-05` state dict saved with numpy, and converted.
    """
    tree = weights_io.load_variables(path_or_url, cache_dir)
    if "params" not in tree:
        flat = traverse_util.flatten_dict(tree, sep="/")
        tree = from_torch_state_dict({k.replace("/", "."): v for k, v in flat.items()})
    expected = traverse_util.flatten_dict(variable_shapes(), sep="/")
    got = traverse_util.flatten_dict(tree, sep="/")
    for key in sorted(set(expected) | set(got)):
        if key not in got or key not in expected or got[key].shape != expected[key].shape:
            shape = got[key].shape if key in got else "missing"
            want = expected[key].shape if key in expected else "absent"
            raise UserError(f"Inception weights {path_or_url!r} do not match the FID network: "
                            f"{key} has shape {shape}, expected {want}.")
    return jax.tree.map(lambda a: np.asarray(a, np.float32), tree)


def from_torch_state_dict(state_dict: dict[str, np.ndarray]) -> dict:
    """Converts pytorch-fid FIDInceptionA/C/E names and layouts ([O, I, kh, kw]) to ours."""
    flat = {}
    for name, value in state_dict.items():
        *module, leaf = name.split(".")
        value = np.asarray(value)
        if leaf == "num_batches_tracked":
            continue
        if module[-1] == "conv" and leaf == "weight":
            flat[("params", *module, "kernel")] = value.transpose(2, 3, 1, 0)
        elif module[-1] == "fc" and leaf == "weight":
            flat[("params", *module, "kernel")] = value.T
        elif leaf in ("running_mean", "running_var"):
            flat[("batch_stats", *module, leaf[len("running_"):])] = value
        else:
            flat[("params", *module, {"weight": "scale"}.get(leaf, leaf))] = value
    return traverse_util.unflatten_dict(flat)


@functools.lru_cache(maxsize=1)
def _jitted_apply():
    return jax.jit(lambda variables, images: InceptionV3().apply(variables, preprocess(images)))


def apply(variables: dict, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, H, W, C] -> (pool3 [N, 2048], logits [N, 1008]) as float32 numpy."""
    pool3, logits = _jitted_apply()(variables, jnp.asarray(images))
    return np.asarray(pool3), np.asarray(logits)
