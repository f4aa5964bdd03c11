"""Text-conditioned latent diffusion (configs/ldm.py): cross-attention, guidance, frozen
autoencoder and CLIP components, the latent scale factor, prompts. (8 fake devices with
FSDP: checked by hand, see README "Latent diffusion"; too slow for the CI budget.)"""

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from aigc_jax import components, parallel, train
from aigc_jax import data as data_lib
from aigc_jax.errors import UserError
from aigc_jax.methods import create as create_method
from aigc_jax.methods.autoencoder.method import autoencoder_role
from aigc_jax.methods.diffusion import method as diffusion_method
from aigc_jax.methods.diffusion import samplers
from aigc_jax.methods.diffusion import schedules as ds
from aigc_jax.methods.diffusion.method import latent_codec
from aigc_jax.models.layers import SpatialTransformer, sincos_2d
from aigc_jax.models.unet import UNet


@functools.partial(jax.jit, static_argnums=1)
def _perturbed(params, scale: float = 0.5):
    """Every parameter moved off its initial value (the zero-initialised output projections
    would otherwise hide what the blocks compute)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys, strict=True)])


def test_cross_attention_output_changes_with_the_context_and_not_without_it():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8))
    ctx = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 6))
    other = ctx.at[:, :3].set(jax.random.normal(jax.random.PRNGKey(2), (2, 3, 6)))
    padded = ctx.at[:, 3:].set(100.0)
    mask = jnp.asarray([[1, 1, 1, 0, 0]] * 2, bool)
    block = SpatialTransformer(num_heads=2, depth=1, num_groups=4)
    params = _perturbed(jax.jit(block.init)(jax.random.PRNGKey(3), x, ctx, mask))
    out, out_other, out_padded = jax.jit(jax.vmap(
        lambda c: block.apply(params, x, c, mask)))(jnp.stack([ctx, other, padded]))
    assert out.shape == x.shape
    # A different context (its visible tokens) changes the output ...
    assert float(jnp.abs(out_other - out).max()) > 1e-3
    # ... masked (padding) tokens do not.
    np.testing.assert_allclose(out_padded, out, atol=1e-5)
    # A UNet without context_dim has no cross-attention: any context leaves it unchanged.
    unet = UNet(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(4,), out_ch=8,
                num_groups=4, dropout=0.0)
    t = jnp.asarray([3, 9])
    def names(module, **kwargs) -> str:
        shapes = jax.eval_shape(module.init, jax.random.PRNGKey(4), x, t, **kwargs)
        return " ".join(str(path) for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0])

    assert "attn2" not in names(unet) and "AttnBlock" in names(unet)
    # With context_dim, every attention site is a SpatialTransformer reading the context.
    text = names(unet.clone(context_dim=6, transformer_heads=2), context=ctx, context_mask=mask)
    sites = set(re.findall(r"SpatialTransformer_\d+", text))
    assert "AttnBlock" not in text and len(sites) == 4  # 1 down, the middle, 2 up


def test_sincos_position_lets_the_transformer_tell_tokens_apart():
    # A spatially constant input stays constant through LDM's position-blind transformer and
    # varies over the grid with the 2D sin-cos embedding (the same parameters: it has none).
    x = jnp.ones((1, 4, 4, 8))
    ctx = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 6))
    blind = SpatialTransformer(num_heads=2, depth=1, num_groups=4)
    params = _perturbed(jax.jit(blind.init)(jax.random.PRNGKey(3), x, ctx))
    out_blind = blind.apply(params, x, ctx)
    out_pos = blind.clone(position="sincos").apply(params, x, ctx)
    assert float(jnp.ptp(out_blind, axis=(1, 2)).max()) < 1e-4
    assert float(jnp.ptp(out_pos, axis=(1, 2)).max()) > 1e-2
    emb = np.asarray(sincos_2d(4, 4, 8))
    assert emb.shape == (16, 8) and len({tuple(np.round(r, 5)) for r in emb}) == 16


def test_guidance_scale_minus_one_and_zero_are_the_unconditional_and_conditional_model():
    # sampler.guidance_scale w: (1 + w) out(cond) - w out(null). Stable Diffusion's scale
    # s = 1 + w, so its s = 0 (unconditional) is w = -1 and its s = 1 (conditional) is w = 0.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    t = jnp.asarray([10, 40])
    ctx = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 6))
    calls = []

    def apply(x, t, cond):  # a network whose output depends on x, t and the context
        calls.append(x.shape[0])
        feat = (cond["context"] * cond["mask"][..., None]).sum((1, 2))
        return jnp.tanh(x * feat[:, None, None, None] + t[:, None, None, None] / 50.0)

    cond = {"context": ctx, "mask": jnp.ones((2, 5), bool)}
    null = {"context": jnp.zeros_like(ctx), "mask": cond["mask"]}
    c_out, u_out = apply(x, t, cond), apply(x, t, null)
    assert float(jnp.abs(c_out - u_out).max()) > 1e-3
    calls.clear()
    np.testing.assert_array_equal(samplers.guided(apply, cond, null, 0.0, 3)(x, t), c_out)
    assert calls == [2]  # w = 0: one conditional pass, no unconditional batch
    np.testing.assert_allclose(samplers.guided(apply, cond, null, -1.0, 3)(x, t), u_out,
                               atol=1e-6)
    assert calls[-1] == 4  # guided: the conditional and null rows in one batch
    np.testing.assert_allclose(samplers.guided(apply, cond, null, 2.0, 3)(x, t),
                               3 * c_out - 2 * u_out, atol=1e-5)


def test_scaled_linear_schedule_is_ldms():
    betas = ds.scaled_linear_betas(1000, 0.00085, 0.012)
    np.testing.assert_allclose(betas[[0, -1]], [0.00085, 0.012], rtol=1e-12)
    np.testing.assert_allclose(np.diff(np.sqrt(betas)), np.diff(np.sqrt(betas))[0], rtol=1e-9)
    c = load_config("ldm", "tiny")
    sched = ds.create_schedule(c.diffusion)  # T = 50: rescaled by 1000 / T, as linear is
    assert sched.num_timesteps == 50
    np.testing.assert_allclose(sched.betas[0], 0.00085 * 20, rtol=1e-6)


def test_zero_terminal_snr_ends_in_pure_noise_and_needs_v_or_x0():
    c = load_config("ldm", "tiny")
    plain = ds.float64_tables(ds.create_schedule(c.diffusion))["alphas_cumprod"]
    c.diffusion.zero_terminal_snr = True
    ac = ds.float64_tables(ds.create_schedule(c.diffusion))["alphas_cumprod"]
    assert ac[-1] == 0.0 and ac[0] == pytest.approx(plain[0], rel=1e-12)
    assert np.all(np.diff(ac) < 0)
    # sqrt(alphas_cumprod) is the old one shifted and scaled (Lin et al., Algorithm 1).
    k = np.sqrt(plain[0]) / (np.sqrt(plain[0]) - np.sqrt(plain[-1]))
    np.testing.assert_allclose(np.sqrt(ac), (np.sqrt(plain) - np.sqrt(plain[-1])) * k,
                               atol=1e-12)
    with pytest.raises(UserError, match="zero_terminal_snr=True needs objective v or x0"):
        diffusion_method.validate(c)  # the tiny config predicts eps
    c.diffusion.objective = "v"
    diffusion_method.validate(c)
    d = diffusion_method.diffusion_from_config(c)
    steps = samplers.make_steps(d, "ddim", 5, 0.0)
    assert steps.t[-1] == c.diffusion.num_timesteps - 1  # the first step starts at SNR 0
    x_T = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    for clip in (False, True):  # a v-model's chain stays finite from pure noise
        x0 = samplers.sample_loop(d, lambda x, t: 0.5 * x, steps, x_T, jax.random.PRNGKey(1),
                                  clip)
        assert bool(jnp.all(jnp.isfinite(x0)))


# ------------------------------------------------------------------------- stage 1 runs


def _ae_config():
    c = load_config("autoencoder", "tiny")
    c.data.name, c.data.image_size = "captioned_digits", 32
    c.data.num_train_examples, c.data.num_test_examples = 64, 16
    c.model.ch_mult = (1, 2, 2, 2)  # f = 8: 4x4x2 latents
    c.eval.extractor = ""
    return c


def _save_initialised(config, workdir: str) -> None:
    """A run holding its initial weights as checkpoint 0 (a stand-in for a trained stage-1 run:
    the tests here check plumbing, not what stage 1 learned)."""
    run = train.Run(config, workdir)
    try:
        state = run.init_state()
        train.write_config(config, workdir)
        run.ckpt.save(state, run.checkpoint_meta(0), force=True)
        run.ckpt.wait()
    finally:
        run.ckpt.close()


SCALE = 0.25


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> dict:
    """A KL autoencoder (with latent_stats.json saying scale 0.25) and a CLIP run."""
    ae = str(tmp_path_factory.mktemp("ae"))
    _save_initialised(_ae_config(), ae)
    with open(os.path.join(ae, "latent_stats.json"), "w") as f:
        json.dump({"scale_factor": SCALE}, f)
    clip = str(tmp_path_factory.mktemp("clip"))
    _save_initialised(load_config("contrastive", "tiny"), clip)
    return {"ae": ae, "clip": clip}


def _ldm_config(stage1: dict):
    c = load_config("ldm", "tiny")
    c.components.autoencoder.workdir = stage1["ae"]
    c.components.text_encoder.workdir = stage1["clip"]
    c.components.image_encoder.workdir = stage1["clip"]
    return c


def test_latent_scale_factor_is_applied_once_on_encode_and_undone_once_on_decode(stage1):
    config, info = components.read_run(stage1["ae"], "autoencoder")
    spec = load_config("ldm", "tiny").components.autoencoder
    spec.workdir = stage1["ae"]
    loaded = components.load("autoencoder", spec, parallel.create_mesh(config))
    scaled = loaded.bundle
    plain = autoencoder_role(config, info, str(os.path.dirname(stage1["ae"])))  # no stats
    assert scaled.scale_factor == SCALE and plain.scale_factor == 1.0
    images = jnp.asarray(data_lib.create_dataset(config, "test").examples(np.arange(4))["image"])
    to_x0, to_images = latent_codec(scaled, (4, 4, 2))
    plain_images = latent_codec(plain, (4, 4, 2))[1]

    @jax.jit
    def run(frozen):
        z = plain.encode(frozen["autoencoder"], images)  # unscaled posterior mean
        x0 = to_x0(images, frozen)
        return z, x0, to_images(x0, frozen), plain_images(z, frozen)

    z, x0, decoded, decoded_plain = run({"autoencoder": loaded.weights})
    assert float(jnp.abs(z).max()) > 1e-3
    np.testing.assert_allclose(x0, SCALE * z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(decoded, decoded_plain)
    assert decoded.dtype == jnp.uint8
    # The pixel path (no autoencoder) is the identity map to [-1, 1] and back.
    px_x0, px_images = latent_codec(None, (32, 32, 3))
    np.testing.assert_array_equal(px_images(px_x0(images, None), None), images)


def test_frozen_components_are_unchanged_by_training_and_samples_keep_their_prompts(
        stage1, tmp_path):
    c = _ldm_config(stage1)
    c.eval.guidance_scales = (2.0,)  # = sampler.guidance_scale: sample and eval share a compile
    c.eval.num_prompts = c.eval.sample_batch = 4
    run = train.Run(c, str(tmp_path / "ldm"))
    before = jax.device_get(run.frozen)
    assert set(before) == {"autoencoder", "text_encoder", "image_encoder"}
    state, _ = run.restore_or_init()
    step = run.jit_train_step()
    for s in range(3):
        batch = parallel.shard_batch(run.mesh, run.train_ds.train_batch(s, 8, 0, 1))
        state, metrics = step(state, batch, run.frozen)
    assert np.isfinite(float(metrics["loss"]))
    assert not any(x.is_deleted() for x in jax.tree.leaves(run.frozen))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.frozen), before)
    # The checkpoint holds the UNet only: no autoencoder or CLIP arrays.
    run.ckpt.save(state, run.checkpoint_meta(3), force=True)
    run.ckpt.wait()
    mngr = components.read_only_manager(str(tmp_path / "ldm"))
    saved = mngr.item_metadata(3)["state"]
    saved = saved.tree if hasattr(saved, "tree") else saved
    mngr.close()
    def paths(tree) -> set[str]:
        return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}

    assert paths(saved["params"]) == paths(jax.device_get(state.params))  # the UNet's only
    assert "['params']['conv_in']['kernel']" in paths(saved["params"])
    assert not any("encoder" in p or "visual" in p or "text" in p for p in paths(saved))

    # Samples: N per prompt, written with their prompts; --prompts_file style lists work.
    out = run.method.sample(state, jax.random.PRNGKey(0), 2, frozen=run.frozen,
                            prompts=["a red 3", "a large blue 7 in the top left"])
    assert out["images"].shape == (4, 32, 32, 3) and out["images"].dtype == jnp.uint8
    files = run.method.write_samples(jax.device_get(out), str(tmp_path / "samples"))
    with open(str(tmp_path / "samples.txt")) as f:
        lines = f.read().splitlines()
    assert lines == ["0\ta red 3", "1\ta red 3", "2\ta large blue 7 in the top left",
                     "3\ta large blue 7 in the top left"]
    npz = np.load([f for f in files if f.endswith(".npz")][0])
    assert list(npz["prompts"]) == [ln.split("\t")[1] for ln in lines]

    # The text evaluation: accuracies per guidance scale, FD and CLIP score, with the prompts.
    res = run.method.evaluate(state, run.test_dataset(), jax.random.PRNGKey(1), None,
                              run.frozen)
    run.ckpt.close()
    assert res["guidance_scales"] == [2.0] and len(res["prompts"]) == 4
    assert 0.0 <= res["full_prompt_accuracy_w2"] <= res["digit_accuracy_w2"] <= 1.0
    assert np.isfinite(res["fd_clip_w2"]) and res["clip_score_w2"] >= 0
    assert res["real_colour_accuracy"] == 1.0  # the checker reads the real images' colours
    assert res["sampling"]["sampler"] == "ddim"
    assert res["sampling"]["zero_terminal_snr"] is False
    assert res["sampling"]["loss_weighting"] == "none"


def _pixel_text_method():
    """Pixel-space text diffusion with a jointly trained text encoder (no components)."""
    c = load_config("ldm", "tiny")
    c.diffusion.text = "joint"
    c.model.ch_mult, c.model.attn_resolutions = (1,), ()  # 32x32, one transformer (middle)
    info = data_lib.create_dataset(c, "train").info()
    return c, info, create_method(c, info)


def test_unknown_prompt_words_are_one_error_before_anything_compiles_and_joint_text_trains():
    c, info, method = _pixel_text_method()
    state = jax.jit(method.init_state)(jax.random.PRNGKey(0), {})
    assert set(state.params) == {"unet", "text"}  # the joint text encoder trains with the UNet
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *a, **k: compiles.append(name) if "compile" in name else None)
    with pytest.raises(UserError, match="outside the text encoder's vocabulary: purple") as e:
        method.sample(state, jax.random.PRNGKey(0), 2, prompt="a purple 3")
    assert "\n" not in str(e.value) and not compiles
    c.prompts = ("a red 3", "a purpel 3")
    with pytest.raises(UserError, match="purpel"):  # a config prompt: when the method is built
        create_method(c, info)
    c.prompts = ("a red 3",)
    c.sampler.guidance_scale, c.diffusion.prompt_dropout = 2.0, 0.0
    with pytest.raises(UserError, match="prompt_dropout > 0"):
        create_method(c, info)

    # Training moves the text encoder's parameters (gradients reach it by cross-attention).
    ds_train = data_lib.create_dataset(c, "train")
    batch = jax.tree.map(jnp.asarray, ds_train.train_batch(0, 8, 0, 1))
    step = jax.jit(method.train_step)
    new = state
    # Step 0 has lr 0 (warmup); then the zero-initialised conv_out moves, then the
    # transformer's zero-initialised proj_out, and only then does the text encoder get gradients.
    for _ in range(4):
        new, metrics = step(new, batch)
    assert np.isfinite(float(metrics["loss"]))
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params["text"],
                         state.params["text"])
    assert max(jax.tree.leaves(moved)) > 0


def test_text_config_errors_are_one_line(stage1, tmp_path):
    c = _ldm_config(stage1)
    c.components.text_encoder.workdir = ""
    with pytest.raises(UserError, match="needs a trained CLIP run"):
        train.Run(c, str(tmp_path / "a"))
    c = _ldm_config(stage1)
    c.model.transformer_heads = 3
    with pytest.raises(UserError, match="transformer_heads=3 must divide"):
        train.Run(c, str(tmp_path / "b"))
    c = _ldm_config(stage1)
    c.model.transformer_position = "learned"
    with pytest.raises(UserError, match="transformer_position='learned' is unknown"):
        train.Run(c, str(tmp_path / "b2"))
    c = load_config("diffusion", "tiny")
    c.diffusion.text = "frozen"
    with pytest.raises(UserError, match="has no captions"):
        train.Run(c, str(tmp_path / "c"))
    c = load_config("diffusion", "tiny")
    c.sampler.guidance_scale = 1.0
    with pytest.raises(UserError, match="need a class-conditional or text-conditioned"):
        train.Run(c, str(tmp_path / "d"))
    c = load_config("diffusion", "tiny")
    m = create_method(c, data_lib.create_dataset(c, "train").info())
    with pytest.raises(UserError, match="need a text-conditioned model"):
        m.sample(None, jax.random.PRNGKey(0), 2, prompt="a red 3")


def test_pixel_variant_bounds_its_eval_vlb():
    """--mode=eval on the pixel variant estimates bits/dim from a few timesteps on a few test
    images; the full 1,000-step VLB over the test split had not finished after 18 minutes on a
    2-core CPU."""
    c = load_config("ldm", "captioned_digits_pixel")
    assert 0 < c.eval.vlb_max_timesteps < c.diffusion.num_timesteps
    assert 0 < c.eval.final_max_examples < c.data.num_test_examples
