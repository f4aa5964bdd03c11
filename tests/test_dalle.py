"""The DALL-E prior: joint layout, loss weights, cached sampling, reranking, frozen components."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from aigc_jax import components, config_validation, parallel, train
from aigc_jax.data.words import EOT, PAD, SOT
from aigc_jax.errors import UserError
from aigc_jax.methods.dalle import sequence
from aigc_jax.methods.dalle.sampling import rerank, sample_codes, take_ranked
from aigc_jax.methods.lm.sampling import SamplerConfig
from aigc_jax.models.gpt import GPT, GPTConfig

LAYOUT = sequence.Layout(text_length=4, text_vocab=6, image_length=5, image_vocab=3)


def test_joint_sequence_is_text_then_offset_image_codes_with_kind_masks():
    text = jnp.asarray([[SOT, 4, EOT, PAD], [SOT, EOT, PAD, PAD]])
    codes = jnp.asarray([[0, 1, 2, 0, 1], [2, 2, 2, 2, 2]])
    seq = sequence.join(text, codes, LAYOUT)
    np.testing.assert_array_equal(seq[0], [SOT, 4, EOT, PAD, 6, 7, 8, 6, 7])
    np.testing.assert_array_equal(sequence.split_codes(seq, LAYOUT), codes)
    # Targets seq[1:]: 3 text slots (the last text input predicts the first code), 5 codes.
    np.testing.assert_array_equal(LAYOUT.is_image_target(), [0, 0, 0, 1, 1, 1, 1, 1])
    w_text, w_image = sequence.target_weights(seq, LAYOUT)
    np.testing.assert_array_equal(w_text, [[1, 1, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(w_image[0], [0, 0, 0, 1, 1, 1, 1, 1])
    allowed = LAYOUT.allowed()  # text positions see only text ids, image only codes
    assert allowed[:3, :6].all() and not allowed[:3, 6:].any()
    assert allowed[3:, 6:].all() and not allowed[3:, :6].any()


def test_loss_weights_apply_to_the_right_positions():
    rng = np.random.default_rng(0)
    seq = jnp.asarray([[SOT, 4, EOT, PAD, 6, 7, 8, 6, 7]])
    logits = rng.normal(size=(1, 8, 9)).astype(np.float32)
    weighted = jax.jit(sequence.weighted_loss, static_argnums=2)  # compiled: eager is slow
    loss, parts = weighted(logits, seq, LAYOUT, 1.0, 7.0)

    def logp(z):  # numpy log-softmax, the reference
        return z - z.max() - np.log(np.exp(z - z.max()).sum())

    # Text: positions 0, 1 over the 6 text ids; image: positions 3..7 over the 3 codes.
    text = -np.mean([logp(logits[0, i, :6])[int(seq[0, i + 1])] for i in (0, 1)])
    image = -np.mean([logp(logits[0, i, 6:])[int(seq[0, i + 1]) - 6] for i in range(3, 8)])
    np.testing.assert_allclose(parts["text_loss"], text, rtol=1e-5)
    np.testing.assert_allclose(parts["image_loss"], image, rtol=1e-5)
    np.testing.assert_allclose(loss, (text + 7 * image) / 8, rtol=1e-5)
    # Changing the logits of the pad target (position 2) or of the other kind changes nothing.
    moved = jnp.asarray(logits).at[0, 2].add(5.0).at[0, 4, :6].add(3.0).at[0, 0, 6:].add(3.0)
    np.testing.assert_allclose(weighted(moved, seq, LAYOUT, 1.0, 7.0)[0], loss, rtol=1e-6)
    # The gradient: nothing at the pad target, 7/8 of the image term's at image positions.
    grad_fn = jax.jit(jax.grad(lambda z, w_text, w_image: sequence.weighted_loss(
        z, seq, LAYOUT, w_text, w_image)[0]))

    def grad(w_text, w_image):
        return np.asarray(grad_fn(logits, w_text, w_image))

    g = grad(1.0, 7.0)
    assert float(np.abs(g[0, 2]).max()) == 0.0 and float(np.abs(g[0, 3:]).max()) > 0
    np.testing.assert_allclose(g[0, 3:], 7 / 8 * grad(0.0, 1.0)[0, 3:], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g[0, :2], 1 / 8 * grad(1.0, 0.0)[0, :2], rtol=1e-5,
                               atol=1e-8)


@pytest.fixture(scope="module")
def small_gpt():
    """A 2-layer GPT over LAYOUT's vocabulary, initialised (compiled: eager flax is slow)."""
    cfg = GPTConfig(vocab_size=LAYOUT.vocab_size, block_size=LAYOUT.length - 1, n_layer=2,
                    n_head=2, n_embd=16)
    model = GPT(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    # Sharper logits, so greedy choices are not near-ties.
    return model, jax.tree.map(lambda x: x * 4.0, params)


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_cached_image_sampling_equals_full_recomputation(small_gpt, guidance):
    model, params = small_gpt
    text = jnp.asarray([[SOT, 4, EOT, PAD], [SOT, 5, 4, EOT], [SOT, EOT, PAD, PAD]])
    empty = jnp.asarray([SOT, EOT, PAD, PAD])
    sc = SamplerConfig(max_new_tokens=5, temperature=0.0)
    codes = sample_codes(model, params, text, empty, jax.random.PRNGKey(1), sc, LAYOUT, guidance)
    # Reference: a full causal pass over the whole prefix for every code, no cache (one
    # compiled pass over L - 1 slots serves every prefix length: causal attention keeps the
    # zeros after the prefix out of the logits read at its last position).
    full = jax.jit(model.apply)
    seq = np.zeros((3, LAYOUT.length), np.int32)
    useq = np.zeros_like(seq)
    seq[:, :4], useq[:, :4] = np.asarray(text), np.asarray(empty)
    for i in range(5):
        z = full(params, jnp.asarray(seq[:, :-1]))[:, 3 + i, 6:]
        if guidance:
            zu = full(params, jnp.asarray(useq[:, :-1]))[:, 3 + i, 6:]
            z = (1 + guidance) * z - guidance * zu
        seq[:, 4 + i] = useq[:, 4 + i] = np.asarray(jnp.argmax(z, -1)) + 6
    np.testing.assert_array_equal(codes, seq[:, 4:] - 6)
    assert codes.shape == (3, 5) and codes.min() >= 0 and codes.max() < 3
    # Sampling at temperature 1 draws from the image vocabulary only.
    drawn = sample_codes(model, params, jnp.tile(text, (20, 1)), empty, jax.random.PRNGKey(2),
                         SamplerConfig(max_new_tokens=5, top_k=2), LAYOUT, guidance)
    assert drawn.min() >= 0 and drawn.max() < 3 and len(np.unique(np.asarray(drawn))) > 1


def test_rerank_orders_by_descending_score_stably():
    scores = jnp.asarray([[0.1, 0.9, 0.5, 0.9], [-1.0, 0.0, 2.0, 1.0]])
    order = rerank(scores)
    np.testing.assert_array_equal(order, [[1, 3, 2, 0], [2, 3, 1, 0]])
    ranked = take_ranked(scores, order)
    assert (jnp.diff(ranked, axis=1) <= 0).all()
    cands = jnp.arange(8).reshape(2, 4, 1, 1) * jnp.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(take_ranked(cands, order)[:, :, 0, 0], [[1, 3, 2, 0],
                                                                          [6, 7, 5, 4]])


# ------------------------------------------------------------------- end to end, tiny runs


def _vq_config():
    c = load_config("autoencoder", "tiny")
    c.data.name, c.data.image_size = "captioned_digits", 32
    c.data.num_train_examples, c.data.num_test_examples = 64, 32
    c.autoencoder.regularizer = "vq"
    c.model.ch_mult = (1, 2, 2, 2)  # f = 8: 4x4 codes
    c.eval.extractor = ""
    return c


def _step0_run(config, workdir: str, seed: int = 0) -> str:
    """`workdir` as a run whose only checkpoint is step 0, with random weights N(0, 0.05^2) in
    the state's shapes (traced, not compiled: the tests below check plumbing, not quality, and
    compiling the initialisers would cost more than everything the prior does)."""
    run = train.Run(config, workdir)
    try:
        rng = np.random.default_rng(seed)

        def fill(x):
            if jnp.issubdtype(x.dtype, jnp.floating):
                return jnp.asarray(0.05 * rng.standard_normal(x.shape), x.dtype)
            return jnp.zeros(x.shape, x.dtype)

        train.write_config(config, workdir, run.provenance)
        run.ckpt.save(jax.tree.map(fill, run.abstract_state()), run.checkpoint_meta(0),
                      force=True)
        run.ckpt.wait()
    finally:
        run.ckpt.close()
    return workdir


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> dict:
    """Tiny VQ and CLIP runs on captioned digits (random step-0 weights): the components."""
    clip = load_config("contrastive", "tiny")
    clip.data.num_train_examples = 64
    return {"vq": _step0_run(_vq_config(), str(tmp_path_factory.mktemp("vq"))),
            "clip": _step0_run(clip, str(tmp_path_factory.mktemp("clip")))}


def _prior_config(stage1: dict):
    c = load_config("dalle", "tiny")
    c.components.autoencoder.workdir = stage1["vq"]
    c.components.text_encoder.workdir = stage1["clip"]
    c.components.image_encoder.workdir = stage1["clip"]
    return c


def test_tiny_prior_trains_with_frozen_components_evaluates_and_reranks(stage1, tmp_path):
    c = _prior_config(stage1)
    workdir = str(tmp_path / "prior")
    train.train_and_evaluate(c, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if '"train"' in line]
    # Both loss terms are logged, and the loss is their 1:7 mix (the log's means keep it).
    assert len(rows) == 2
    for r in rows:
        np.testing.assert_allclose(r["loss"], (r["text_loss"] + 7 * r["image_loss"]) / 8,
                                   rtol=1e-5)
    mngr = components.read_only_manager(workdir)  # the prior's checkpoint holds no component
    saved = mngr.item_metadata(6)["state"]
    saved = saved.tree if hasattr(saved, "tree") else saved
    mngr.close()
    prior_sizes = {int(np.prod(m.shape)) for m in jax.tree.leaves(saved["params"])}
    with open(os.path.join(workdir, "config.json")) as f:
        prov = json.load(f)["provenance"]["components"]
    assert set(prov) == {"autoencoder", "text_encoder", "image_encoder"}

    # One more step in-process: the frozen weights enter the donated step unchanged, alive.
    run = train.Run(c, workdir)
    try:
        before = jax.device_get(run.frozen)
        vq_sizes = {x.size for x in jax.tree.leaves(before["autoencoder"])}
        assert max(vq_sizes) not in prior_sizes
        state, resumed = run.restore_or_init()
        assert resumed and int(state.step) == 6
        batch = parallel.shard_batch(run.mesh, run.train_ds.train_batch(6, 8, 0, 1))
        state, metrics = run.jit_train_step()(state, batch, run.frozen)
        assert np.isfinite(float(metrics["loss"])) and int(state.step) == 7
        assert not any(x.is_deleted() for x in jax.tree.leaves(run.frozen))
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.frozen), before)
    finally:
        run.ckpt.close()

    results = train.evaluate(_prior_config(stage1), workdir)
    assert results["log2_codebook_size"] == 4.0  # the tiny codebook's 16 codes
    assert 0 < results["image_bits_per_token"] < 8
    for n in (1, 2, 4):
        assert 0.0 <= results[f"full_prompt_accuracy_n{n}"] <= 1.0
        assert np.isfinite(results[f"fd_clip_n{n}"])
    # The best of more candidates cannot have a lower CLIP score.
    assert results["clip_cosine_n4"] >= results["clip_cosine_n2"] >= results["clip_cosine_n1"]

    files = train.sample(_prior_config(stage1), workdir, 4, prompt="a red 3")
    images = np.load([f for f in files if f.endswith(".npz")][0])["images"]
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    # Best first: the saved candidates' CLIP scores descend.
    from aigc_jax.methods.contrastive.components import clip_embeddings

    run, _ = train.load_trained(_prior_config(stage1), workdir)
    img, txt = clip_embeddings(run.components, run.frozen, images, ["a red 3"] * 4)
    assert (np.diff(np.sum(img * txt, -1)) <= 1e-6).all()
    with pytest.raises(UserError, match="outside the caption vocabulary: purple"):
        train.sample(_prior_config(stage1), workdir, 2, prompt="a purple 3")


def test_prior_errors_are_one_line_before_anything_compiles(stage1, tmp_path):
    c = _prior_config(stage1)
    c.components.autoencoder.workdir = stage1["clip"]
    with pytest.raises(UserError, match="cannot serve as 'autoencoder'"):
        train.Run(c, str(tmp_path / "a"))
    # The config-only checks run before any workdir or component is touched (as `main` does).
    c = _prior_config(stage1)
    c.sampler.guidance_scale, c.dalle.prompt_dropout = 3.0, 0.0
    with pytest.raises(UserError, match="prompt_dropout > 0"):
        config_validation.validate(c)
    c = _prior_config(stage1)
    c.components.image_encoder.workdir = ""
    with pytest.raises(UserError, match="both name the CLIP run"):
        config_validation.validate(c)
    c = _prior_config(stage1)
    c.eval.rerank_candidates = (8, 1)
    with pytest.raises(UserError, match="rerank_candidates"):
        config_validation.validate(c)
    config_validation.validate(_prior_config(stage1))  # and the unchanged config passes


def test_tokenizer_eval_scores_reconstructions_with_the_attribute_checker(stage1):
    # The autoencoder's --mode=eval on captioned data: the checker reads real test images
    # (near 1) and the random step-0 tokenizer's reconstructions (which carry no glyphs).
    c = _vq_config()
    c.eval.latent_stats_examples = 16
    results = train.evaluate(c, stage1["vq"])
    assert results["checker_all_accuracy_real"] > 0.9
    assert 0.0 <= results["checker_digit_accuracy_recon"] < 0.5
    assert {f"checker_{a}_accuracy_recon" for a in ("colour", "size", "position")} <= set(results)
