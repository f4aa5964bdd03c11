"""CLIP: the losses against hand computations, the temperature clamp, the global-batch loss on
8 devices, a tiny end-to-end run with its evaluation, and the exported components."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import REPO, load_config

from aigc_jax import components, parallel, train
from aigc_jax.data import captions, create_dataset
from aigc_jax.data.words import WordTokenizer
from aigc_jax.errors import UserError
from aigc_jax.methods import contrastive
from aigc_jax.methods.contrastive import losses
from aigc_jax.methods.contrastive.method import clip_config, swap_words, validate, word_groups
from aigc_jax.models.clip import CLIP


def _unit(rng, shape):
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_infonce_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    img, txt, scale = _unit(rng, (5, 4)), _unit(rng, (5, 4)), 7.0
    expected = []
    for i in range(5):
        row = [scale * img[i] @ txt[j] for j in range(5)]
        col = [scale * img[j] @ txt[i] for j in range(5)]
        i2t = -row[i] + math.log(sum(math.exp(v) for v in row))
        t2i = -col[i] + math.log(sum(math.exp(v) for v in col))
        expected.append((i2t + t2i) / 2)
    got = losses.infonce(jnp.asarray(img), jnp.asarray(txt), scale, 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Identical captions as positives: the duplicated pair shares the target mass.
    pos = np.eye(5, dtype=bool)
    pos[0, 1] = pos[1, 0] = True
    got = losses.infonce(jnp.asarray(img), jnp.asarray(txt), scale, 0.0, jnp.asarray(pos))
    row0 = scale * img[0] @ txt.T
    lse = math.log(np.exp(row0).sum())
    col0 = scale * img @ txt[0]
    i2t = -(0.5 * row0[0] + 0.5 * row0[1]) + lse
    t2i = -(0.5 * col0[0] + 0.5 * col0[1]) + math.log(np.exp(col0).sum())
    np.testing.assert_allclose(got[0], (i2t + t2i) / 2, rtol=1e-5)


def test_hard_negative_texts_join_only_the_image_to_text_side():
    rng = np.random.default_rng(2)
    img, txt, extra, scale = (_unit(rng, (4, 3)), _unit(rng, (4, 3)), _unit(rng, (2, 3)), 5.0)
    got = losses.infonce(jnp.asarray(img), jnp.asarray(txt), scale, 0.0,
                         extra_txt=jnp.asarray(extra))
    cols = np.concatenate([txt, extra])
    for i in range(4):
        row, col = scale * img[i] @ cols.T, scale * img @ txt[i]
        i2t = -row[i] + math.log(np.exp(row).sum())  # 4 + 2 candidates
        t2i = -col[i] + math.log(np.exp(col).sum())  # the 4 images only
        np.testing.assert_allclose(got[i], (i2t + t2i) / 2, rtol=1e-5)
    # A hard negative equal to image 0's caption counts as one of its positives.
    both = np.zeros((4, 2), bool)
    both[0, 1] = True
    got = losses.infonce(jnp.asarray(img), jnp.asarray(txt), scale, 0.0,
                         extra_txt=jnp.asarray(extra), extra_positives=jnp.asarray(both))
    row = scale * img[0] @ cols.T
    i2t = -(row[0] + row[5]) / 2 + math.log(np.exp(row).sum())
    col = scale * img @ txt[0]
    np.testing.assert_allclose(got[0], (i2t - col[0] + math.log(np.exp(col).sum())) / 2,
                               rtol=1e-5)
    sig = losses.sigmoid(jnp.asarray(img), jnp.asarray(txt), scale, -1.0,
                         extra_txt=jnp.asarray(extra))
    logits = scale * img @ cols.T - 1.0
    z = np.where(np.eye(4, 6, dtype=bool), 1.0, -1.0)
    np.testing.assert_allclose(sig, -np.log(1 / (1 + np.exp(-z * logits))).sum(1), rtol=1e-5)


def test_swap_words_replaces_each_group_word_with_another_of_its_group():
    tok = WordTokenizer(captions.caption_words(), 16)
    tables = word_groups(("0 1 2 3 4 5 6 7 8 9", "red blue"), tok)
    texts = ["a red 7 in the top left", "a 3 left of a 9", "a blue 0"] * 20
    tokens = jnp.asarray(tok.encode_batch(texts))
    hard = np.asarray(swap_words(jax.random.PRNGKey(0), tokens, tables))
    digits = {tok.index[str(d)] for d in range(10)}
    colours = {tok.index["red"], tok.index["blue"]}
    for before, after in zip(np.asarray(tokens), hard, strict=True):
        for a, b in zip(before, after, strict=True):
            if a in digits:
                assert b in digits and b != a
            elif a in colours:
                assert b in colours and b != a
            else:
                assert a == b
    assert len({tuple(h) for h in hard[0::3]}) > 5  # the swaps are drawn, not fixed
    nine = np.asarray(swap_words(jax.random.PRNGKey(1), tokens[:1], tables, copies=9))
    seven = tok.index["7"]
    assert sorted(nine[:, list(tokens[0]).index(seven)]) == sorted(digits - {seven})
    with pytest.raises(UserError, match="purple not in the caption vocabulary"):
        word_groups(("red purple",), tok)


def test_siglip_matches_a_hand_computation():
    rng = np.random.default_rng(1)
    img, txt, scale, bias = _unit(rng, (4, 3)), _unit(rng, (4, 3)), 10.0, -3.0
    expected = [-sum(math.log(1 / (1 + math.exp(-(1 if i == j else -1) *
                                                 (scale * img[i] @ txt[j] + bias))))
                     for j in range(4)) for i in range(4)]
    got = losses.sigmoid(jnp.asarray(img), jnp.asarray(txt), scale, bias)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert set(losses.LOSSES) == {"infonce", "siglip"}
    assert losses.LOSSES["siglip"].init_logit_bias == -10.0


def _tiny(**clip):
    c = load_config("contrastive", "tiny")
    c.clip.update(clip)
    c.train.tensorboard = False
    return c


def _model_and_batch(c, n=16):
    ds = create_dataset(c, "train")
    model = CLIP(clip_config(c, ds.info()))
    batch = ds.train_batch(0, n)
    params = model.init(jax.random.PRNGKey(0), batch["image"][:1], batch["tokens"][:1])
    return model, params, batch


def test_temperature_starts_at_007_and_is_clamped_at_100():
    model, params, batch = _model_and_batch(_tiny())
    scale, _ = model.apply(params, method=CLIP.scale_and_bias)
    np.testing.assert_allclose(scale, 1 / 0.07, rtol=1e-5)
    big = jax.tree.map(lambda x: x, params)
    big["params"]["logit_scale"] = jnp.asarray(9.0)  # exp(9) = 8103 > 100
    scale, _ = model.apply(big, method=CLIP.scale_and_bias)
    np.testing.assert_allclose(scale, 100.0, rtol=1e-5)
    img, txt, *_ = model.apply(params, batch["image"], batch["tokens"])
    np.testing.assert_allclose(jnp.linalg.norm(img, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(txt, axis=-1), 1.0, rtol=1e-5)


def test_text_tower_is_causal_and_pools_at_end_of_text():
    model, params, batch = _model_and_batch(_tiny())
    tokens = np.asarray(batch["tokens"][:2])
    states, pooled = model.apply(params, tokens, method=CLIP.encode_text)
    changed = tokens.copy()
    changed[:, -1] = 5  # a token after <eot>, in the padding: changes nothing pooled
    states2, pooled2 = model.apply(params, changed, method=CLIP.encode_text)
    np.testing.assert_allclose(pooled, pooled2, atol=1e-6)
    np.testing.assert_allclose(states[:, :-1], states2[:, :-1], atol=1e-6)
    assert not np.allclose(states[:, -1], states2[:, -1])


def test_validate_names_bad_keys():
    with pytest.raises(UserError, match="clip.loss"):
        validate(_tiny(loss="triplet"))
    with pytest.raises(UserError, match="clip.image_tower"):
        validate(_tiny(image_tower="mlp"))
    with pytest.raises(UserError, match="patch_size"):
        validate(_tiny(patch_size=5))


_EIGHT_DEVICES = r"""
import jax, jax.numpy as jnp, numpy as np, sys
sys.path.insert(0, {repo!r})
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from conftest import load_config
from aigc_jax.data import create_dataset
from aigc_jax.methods.contrastive import losses
from aigc_jax.methods.contrastive.method import clip_config
from aigc_jax.models.clip import CLIP
assert jax.device_count() == 8
c = load_config("contrastive", "tiny")
ds = create_dataset(c, "train")
model = CLIP(clip_config(c, ds.info()))
batch = ds.train_batch(0, 32)
params = model.init(jax.random.PRNGKey(0), batch["image"][:1], batch["tokens"][:1])
out = {{}}
for name in ("infonce", "siglip"):
    def loss(p, b):
        img, txt, s, bias = model.apply(p, b["image"], b["tokens"])
        return losses.LOSSES[name].fn(img, txt, s, bias).mean()
    fn = jax.jit(jax.value_and_grad(loss))
    one = fn(params, {{k: jax.device_put(v, jax.devices()[0]) for k, v in batch.items()}})
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = {{k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}}
    assert len(sharded["image"].sharding.device_set) == 8
    eight = fn(jax.device_put(params, NamedSharding(mesh, P())), sharded)
    # The 8-device loss is the global-batch loss, not a mean of per-device 4-example losses.
    per_device = np.mean([float(loss(params, {{k: v[i * 4:(i + 1) * 4] for k, v in batch.items()}}))
                          for i in range(8)])
    gdiff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max() /
                      (np.abs(np.asarray(a)).max() + 1e-12))
                for a, b in zip(jax.tree.leaves(one[1]), jax.tree.leaves(eight[1])))
    print(name, float(one[0]), float(eight[0]), per_device, gdiff)
"""


def test_eight_devices_see_the_global_batch():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", _EIGHT_DEVICES.format(repo=os.path.join(
        REPO, "tests"))], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split() for line in r.stdout.strip().splitlines()]
    assert [row[0] for row in rows] == ["infonce", "siglip"]
    for _, one, eight, per_device, gdiff in rows:
        assert abs(float(one) - float(eight)) < 1e-5 * abs(float(one))
        assert abs(float(one) - float(per_device)) > 0.1  # a per-device loss would differ
        assert float(gdiff) < 1e-4  # gradients too, relative to each array's largest entry


def test_resnet_tower_with_siglip_learns_a_batch():
    c = _tiny(image_tower="resnet", loss="siglip")
    model, params, batch = _model_and_batch(c)
    _, _, scale, bias = model.apply(params, batch["image"], batch["tokens"])
    np.testing.assert_allclose([scale, bias], [10.0, -10.0], rtol=1e-5)

    def loss(p):
        img, txt, s, b = model.apply(p, batch["image"], batch["tokens"])
        return losses.sigmoid(img, txt, s, b).mean()

    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(p, o):
        value, grads = jax.value_and_grad(loss)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, value

    first = None
    for _ in range(15):
        params, opt, value = step(params, opt)
        first = value if first is None else first
    assert float(value) < float(first)


def test_tiny_run_evaluates_and_exports_components(tmp_path):
    c = _tiny()
    workdir = str(tmp_path / "clip")
    train.train_and_evaluate(c, workdir)
    results = train.evaluate(c, workdir)
    with open(os.path.join(workdir, "eval", "6.json")) as f:
        saved = json.load(f)
    for key in ("zero_shot_digit_plain", "zero_shot_colour_captioned", "image_to_text_r1",
                "text_to_image_r5", "linear_probe_digit_plain", "temperature"):
        assert 0.0 <= saved[key] <= (1.0 if key != "temperature" else 1.0) and key in results
    assert saved["templates"]["captioned_test"] and saved["templates"]["plain_digits"]
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert "temperature" in rows[0] and rows[0]["split"] == "train"

    mesh = parallel.create_mesh()
    spec = ml_collections.ConfigDict({"workdir": workdir, "weights": "params"})
    text = components.load("text_encoder", spec, mesh)
    image = components.load("image_encoder", spec, mesh)
    tokens = text.bundle.tokenize(["a red 7", ""])
    assert tokens.shape == (2, text.bundle.max_length) and tokens.dtype == np.int32
    states, pooled = text.bundle.encode(text.weights, jnp.asarray(tokens))
    assert states.shape == (2, text.bundle.max_length, text.bundle.width)
    with pytest.raises(UserError, match="vocabulary: zebra"):
        text.bundle.tokenize(["a zebra"])
    images = create_dataset(c, "test").examples(np.arange(2))["image"]
    emb = image.bundle.encode(image.weights, jnp.asarray(images))
    assert emb.shape == pooled.shape == (2, image.bundle.width)
    score = contrastive.clip_score(emb, pooled)
    np.testing.assert_allclose(score, 100 * np.maximum((emb * pooled).sum(-1), 0), rtol=1e-5)
