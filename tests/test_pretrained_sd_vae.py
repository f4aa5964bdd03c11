"""Stable Diffusion's autoencoder in the diffusers AutoencoderKL layout (issue 22): the name
map at SD's real size, import -> export round trips, --mode=import as a component, errors.
PyTorch parity is experiments/pretrained_parity/sd_vae_parity.py (needs torch; not CI)."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from aigc_jax import components, export, parallel, pretrained, train
from aigc_jax.errors import UserError
from aigc_jax.methods.autoencoder.method import autoencoder_role
from aigc_jax.models.autoencoder import Autoencoder
from aigc_jax.pretrained import sd_vae
from configs.autoencoder import get_config

LAYOUT = os.path.join(os.path.dirname(__file__), "data", "sd_vae_kl_f8_layout.json")
TINY = {"image_channels": 3, "ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "z_channels": 4,
        "embed_dim": 4, "num_groups": 4, "scale_factor": 0.18215, "sample_size": 16}


def _model(arch: dict) -> Autoencoder:
    return Autoencoder(arch["image_channels"], arch["ch"], tuple(arch["ch_mult"]),
                       arch["num_res_blocks"], arch["z_channels"], arch["embed_dim"],
                       num_groups=arch["num_groups"])


@functools.cache
def _random_params(seed: int) -> dict:
    shapes = jax.eval_shape(_model(TINY).init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    rng = np.random.default_rng(seed)  # random norms and biases too, so every tensor matters
    return jax.tree.map(lambda x: (0.3 * rng.standard_normal(x.shape)).astype(np.float32),
                        shapes["params"])


def write_random_vae(directory: str, seed: int = 0) -> dict:
    """A random AutoencoderKL directory in diffusers' layout; returns our params for it."""
    params = _random_params(seed)
    sd_vae.write(directory, sd_vae.from_params(params, len(TINY["ch_mult"])),
                 sd_vae.hf_config(TINY))
    return params


def test_sd_kl_f8_names_and_shapes_match_diffusers():
    """diffusers' own tensor names and shapes for SD's KL-f8 (recorded from AutoencoderKL on
    the meta device) map onto exactly our model's parameter tree, nothing left over."""
    with open(LAYOUT) as f:
        layout = json.load(f)
    arch = sd_vae.architecture(layout["config"], "layout")
    assert (arch["ch"], arch["ch_mult"], arch["num_res_blocks"], arch["z_channels"]) == \
        (128, (1, 2, 4, 4), 2, 4)
    shapes = jax.eval_shape(_model(arch).init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 64, 64, 3)))["params"]
    shapes = jax.tree.map(lambda x: tuple(x.shape), shapes)
    zero = np.zeros((), np.float32)
    tensors = {k: np.broadcast_to(zero, v) for k, v in layout["tensors"].items()}
    loaded = sd_vae.to_params(tensors, shapes, 4, "layout")["params"]
    assert jax.tree.map(lambda x: tuple(x.shape), loaded) == shapes
    assert len(layout["tensors"]) == 248


def test_import_export_round_trip_is_identical(tmp_path):
    params = write_random_vae(str(tmp_path / "hf"))
    tensors, where = sd_vae.read_tensors(str(tmp_path / "hf"))
    shapes = jax.tree.map(lambda x: tuple(x.shape), params)
    back = sd_vae.to_params(tensors, shapes, 2, where)["params"]
    jax.tree.map(np.testing.assert_array_equal, back, params)
    again = sd_vae.from_params(back, 2)
    assert set(again) == set(tensors)
    for k, v in tensors.items():
        np.testing.assert_array_equal(again[k], v)
    assert again["encoder.down_blocks.1.resnets.0.conv_shortcut.weight"].shape == (16, 8, 1, 1)
    assert again["decoder.mid_block.attentions.0.to_q.weight"].shape == (16, 16)


def _import_config(hf: str):
    c = get_config("tiny")
    c.init_from.hf = hf
    c.data.image_size = 16
    return c


def test_mode_import_gives_a_component_with_the_scaling_factor(tmp_path):
    """--mode=import writes step 0 with the checkpoint's weights; the Autoencoder component
    divides by scaling_factor once before decoding; export writes the same tensors back."""
    hf, run = str(tmp_path / "hf"), str(tmp_path / "run")
    params = write_random_vae(hf, seed=3)
    train.import_pretrained(_import_config(hf), run)
    with open(os.path.join(run, "latent_stats.json")) as f:
        assert json.load(f)["scale_factor"] == pytest.approx(0.18215)
    config, info = components.read_run(run, "test")
    assert config.model.ch == 8 and tuple(config.model.ch_mult) == (1, 2)
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["provenance"]["init_from"]["hf"] == os.path.abspath(hf)
    weights = components.restore_weights(run, 0, "ema", parallel.create_mesh(), "test")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(weights["autoencoder"]), params)
    role = autoencoder_role(config, info, run)
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4))
    direct = _model(TINY).apply({"params": params}, z, method="decode")[0]
    np.testing.assert_allclose(role.decode(weights, z * 0.18215), direct, atol=1e-5)
    with pytest.raises(UserError, match="already holds checkpoints"):
        train.import_pretrained(_import_config(hf), run)
    out = str(tmp_path / "export")
    export.export(run, out, "hf")
    original, written = load_file(os.path.join(hf, sd_vae.WEIGHTS_FILE)), \
        load_file(os.path.join(out, sd_vae.WEIGHTS_FILE))
    assert set(original) == set(written)
    for k in original:
        np.testing.assert_array_equal(original[k], written[k])
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["scaling_factor"] == pytest.approx(0.18215)


def test_legacy_attention_names_import(tmp_path):
    hf = str(tmp_path / "hf")
    params = write_random_vae(hf)
    path = os.path.join(hf, sd_vae.WEIGHTS_FILE)
    renamed = {k.replace("to_q.", "query.").replace("to_out.0.", "proj_attn."): v
               for k, v in load_file(path).items()}
    save_file(renamed, path)
    tensors, where = sd_vae.read_tensors(hf)
    back = sd_vae.to_params(tensors, jax.tree.map(lambda x: tuple(x.shape), params), 2, where)
    jax.tree.map(np.testing.assert_array_equal, back["params"], params)


def _edit_tensor(hf: str, name: str, fn) -> None:
    path = os.path.join(hf, sd_vae.WEIGHTS_FILE)
    tensors = load_file(path)
    fn(tensors, name)
    save_file(tensors, path)


@pytest.mark.parametrize("case, expected", [
    ("missing_weights", "diffusion_pytorch_model.safetensors is missing"),
    ("bad_shape", "tensor 'encoder.conv_in.weight' gives shape"),
    ("missing_tensor", "has no tensor 'decoder.conv_out.bias'"),
    ("extra_tensor", "tensor 'encoder.extra' is not part of"),
    ("act_fn", "act_fn='gelu' is not supported"),
    ("shift", "shift_factor=0.1159 is not supported"),
    ("class", "_class_name='UNet2DModel' is an unknown architecture"),
])
def test_import_errors_are_one_line(tmp_path, case, expected):
    hf = str(tmp_path / "hf")
    write_random_vae(hf)
    cfg_path = os.path.join(hf, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if case == "missing_weights":
        os.remove(os.path.join(hf, sd_vae.WEIGHTS_FILE))
    elif case == "bad_shape":
        _edit_tensor(hf, "encoder.conv_in.weight",
                     lambda t, n: t.__setitem__(n, np.zeros((8, 3, 5, 5), np.float32)))
    elif case == "missing_tensor":
        _edit_tensor(hf, "decoder.conv_out.bias", lambda t, n: t.pop(n))
    elif case == "extra_tensor":
        _edit_tensor(hf, "encoder.extra",
                     lambda t, n: t.__setitem__(n, np.zeros((2,), np.float32)))
    else:
        cfg.update({"act_fn": {"act_fn": "gelu"}, "shift": {"shift_factor": 0.1159},
                    "class": {"_class_name": "UNet2DModel"}}[case])
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
    with pytest.raises(UserError, match=expected) as err:  # from config + header, no compile
        pretrained.resolve_config(_import_config(hf))
    assert "\n" not in str(err.value)


def test_export_refuses_what_autoencoderkl_cannot_express(tmp_path):
    c = get_config("digits_vq")
    assert "autoencoder.regularizer='vq'" in pretrained.autoencoder_export_blockers(c)[0]
    c = get_config("tiny")
    c.model.num_groups = 32  # ch 8: GroupNorm32 would use 8 groups, diffusers exactly 32
    assert "model.num_groups=32" in pretrained.autoencoder_export_blockers(c)[0]
