"""Tests of the GPT family: model, KV-cache sampling, filters, tokenizers, data, training."""

import functools
import json
import math
import os
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import train
from aigc_jax.data import text as text_lib
from aigc_jax.data import tokenizers
from aigc_jax.errors import UserError
from aigc_jax.logging import read_metrics
from aigc_jax.methods.lm import method as lm
from aigc_jax.methods.lm.sampling import (
    SamplerConfig,
    banned_ngram_tokens,
    generate,
    top_k_filter,
    top_p_filter,
)
from aigc_jax.models import layers
from aigc_jax.models.gpt import GPT, GPTConfig, config_from, init_cache, non_embedding_params
from aigc_jax.models.layers import count_params
from configs.lm import get_config

SMALL = dict(vocab_size=37, block_size=12, n_layer=2, n_head=2, n_embd=16)


def _corpus() -> str:
    rng = np.random.default_rng(0)
    words = ["the", "king", "queen", "lord", "speak", "now", "thou", "art", "my", "good"]
    lines = [" ".join(rng.choice(words, 6)).capitalize() + "." for _ in range(400)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text(_corpus(), encoding="utf-8")
    return str(path)


def _tiny_config(path: str, **train_overrides):
    c = get_config("tiny")
    c.data.path = path
    c.model.n_layer, c.model.n_embd, c.model.block_size = 1, 16, 16
    c.train.tensorboard = False
    c.train.async_checkpoint = False
    for k, v in train_overrides.items():
        c.train[k] = v
    return c


@functools.cache
def _init(cfg: GPTConfig, seed: int = 0):
    """Model, params and jitted forward/decode (compiled once per config: tests stay fast)."""
    model = GPT(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(seed),
                                 jnp.zeros((1, cfg.block_size), jnp.int32))
    decode = jax.jit(functools.partial(model.apply, method=GPT.decode))
    return model, params, jax.jit(model.apply), decode


# --------------------------------------------------------------------------------- model


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_causal_mask(position):
    _, params, apply, _ = _init(GPTConfig(**SMALL, position=position))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, 37)
    logits = apply(params, tokens)
    chex.assert_shape(logits, (2, 12, 37))
    for t in (0, 5, 10):
        changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 7) % 37)
        other = apply(params, changed)
        chex.assert_trees_all_close(other[:, :t + 1], logits[:, :t + 1], atol=1e-6)
        assert not np.allclose(other[:, t + 1:], logits[:, t + 1:], atol=1e-4)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_kv_cache_logits_match_full_forward(position):
    cfg = GPTConfig(**SMALL, position=position)
    _, params, apply, decode = _init(cfg)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 37)
    full = apply(params, tokens)
    cache = init_cache(cfg, 2)
    prefill, cache = decode(params, tokens[:, :5], cache, 0)
    steps = [prefill]
    for i in range(5, 12):  # the test's own loop; generation itself is one lax.scan
        out, cache = decode(params, tokens[:, i:i + 1], cache, i)
        steps.append(out)
    chex.assert_trees_all_close(jnp.concatenate(steps, 1), full, atol=1e-5)


def _greedy_reference(apply, params, prompt: np.ndarray, new: int, block: int) -> np.ndarray:
    """nanoGPT's generate: a full forward over the last `block` tokens for every new token."""
    seq = np.asarray(prompt)
    for _ in range(new):
        window = seq[:, -block:]
        # Right-padded to a fixed shape so one compile serves every length (causality).
        padded = np.pad(window, ((0, 0), (0, block - window.shape[1])))
        logits = apply(params, jnp.asarray(padded))[:, window.shape[1] - 1]
        seq = np.concatenate([seq, np.asarray(jnp.argmax(logits, -1))[:, None]], 1)
    return seq


@pytest.mark.parametrize("prompt_len", [3, 14])
def test_greedy_generation_with_cache_equals_full_recomputation(prompt_len):
    cfg = GPTConfig(**SMALL)
    model, params, apply, _ = _init(cfg)
    params = jax.tree.map(lambda p: p * 20.0, params)  # sharper logits: no near-ties
    prompt = np.asarray(jax.random.randint(jax.random.PRNGKey(4), (2, prompt_len), 0, 37))
    sc = SamplerConfig(max_new_tokens=16, temperature=0.0)  # runs past block_size=12
    out = generate(model, params, jnp.asarray(prompt), jax.random.PRNGKey(0), sc, 37)
    chex.assert_shape(out, (2, prompt_len + 16))
    np.testing.assert_array_equal(out, _greedy_reference(apply, params, prompt, 16, 12))


def test_gelu_and_its_custom_gradient_equal_the_exact_erf_gelu():
    x = jnp.linspace(-9.0, 9.0, 1001)
    np.testing.assert_allclose(layers.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
    ours = jax.vmap(jax.grad(layers.gelu))(x)
    autodiff = jax.vmap(jax.grad(functools.partial(jax.nn.gelu, approximate=False)))(x)
    np.testing.assert_allclose(ours, autodiff, atol=1e-6)
    assert float(jnp.abs(ours - jax.vmap(jax.grad(jax.nn.gelu))(x)).max()) > 1e-4  # not tanh


def test_flattened_dense_is_nn_dense():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 8))
    ours = layers.Dense(6)
    params = ours.init(jax.random.PRNGKey(1), x)
    chex.assert_trees_all_equal_shapes(params, nn.Dense(6).init(jax.random.PRNGKey(1), x))
    np.testing.assert_allclose(ours.apply(params, x), nn.Dense(6).apply(params, x), atol=1e-6)


def test_gpt2_small_parameter_count():
    c = get_config("gpt2_small")
    cfg = config_from(c.model, 50257)
    assert cfg.vocab_size == 50304
    shapes = jax.eval_shape(GPT(cfg).init, jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    total = count_params(shapes)
    assert 123e6 < total < 126e6, total
    assert total - non_embedding_params(shapes) == 1024 * 768


# --------------------------------------------------------------------------------- sampling


def test_top_k_keeps_exactly_the_k_largest():
    logits = jnp.array([[0.1, 2.0, -1.0, 3.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    kept = np.isfinite(np.asarray(top_k_filter(logits, 2)))
    np.testing.assert_array_equal(kept, [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(np.asarray(top_k_filter(logits, 0)), np.asarray(logits))


def test_top_p_keeps_the_smallest_nucleus():
    probs = np.array([[0.5, 0.05, 0.3, 0.15], [0.9, 0.04, 0.03, 0.03]])
    logits = jnp.log(jnp.asarray(probs))
    # p=0.8: {0.5, 0.3} reaches 0.8; p=0.81 needs 0.15 too; row 2 reaches it with the top one.
    kept = np.isfinite(np.asarray(top_p_filter(logits, 0.79)))
    np.testing.assert_array_equal(kept, [[1, 0, 1, 0], [1, 0, 0, 0]])
    kept = np.isfinite(np.asarray(top_p_filter(logits, 0.81)))
    np.testing.assert_array_equal(kept, [[1, 0, 1, 1], [1, 0, 0, 0]])


def test_banned_ngrams():
    seq = jnp.array([[1, 2, 3, 1, 2, 0, 0]])  # 5 tokens so far; last is 2
    banned = np.asarray(banned_ngram_tokens(seq, jnp.asarray(5), 2, 6))
    np.testing.assert_array_equal(np.nonzero(banned[0])[0], [3])  # "2 3" exists
    banned = np.asarray(banned_ngram_tokens(seq, jnp.asarray(5), 3, 6))
    np.testing.assert_array_equal(np.nonzero(banned[0])[0], [3])  # "1 2 3" exists


def test_no_repeat_ngram_never_repeats_nor_samples_padding():
    model, params, _, _ = _init(GPTConfig(**SMALL))
    prompt = jnp.array([[1, 2, 3]] * 4, jnp.int32)
    sc = SamplerConfig(max_new_tokens=30, temperature=2.0, no_repeat_ngram_size=2)
    # Vocabulary 30 inside an embedding of 37: ids 30..36 are padding and never drawn.
    out = np.asarray(generate(model, params, prompt, jax.random.PRNGKey(1), sc, 30))
    assert out.max() < 30
    for row in out:
        bigrams = list(zip(row[:-1], row[1:], strict=True))
        assert len(bigrams) == len(set(bigrams)), row


# --------------------------------------------------------------------------------- tokenizers


def test_char_and_byte_tokenizers_round_trip():
    text = "First Citizen:\nBefore we proceed, hear me speak.\n"
    char = tokenizers.CharTokenizer.from_text(text)
    assert char.vocab_size == len(set(text))
    assert char.decode(char.encode(text)) == text
    rebuilt = tokenizers.from_info(json.loads(json.dumps(char.to_info())))
    np.testing.assert_array_equal(rebuilt.encode(text), char.encode(text))
    with pytest.raises(UserError, match="Z"):
        char.encode("Zebra")
    byte = tokenizers.ByteTokenizer()
    s = "naïve café – ok\n"
    assert byte.decode(byte.encode(s)) == s
    assert byte.encode(s).max() < 256


def test_sentencepiece_trains_caches_and_round_trips(tmp_path):
    text = _corpus()
    tok = tokenizers.build("sentencepiece", text, 400, str(tmp_path))
    assert os.path.exists(tok.path) and tok.path.startswith(str(tmp_path))
    sample = "Thou art my good lord.\nSpeak now, queen!\n  é"
    assert tok.decode(tok.encode(sample)) == sample  # byte fallback covers unseen characters
    assert len(tok.encode("the king")) < len("the king")
    again = tokenizers.build("sentencepiece", text, 400, str(tmp_path))  # from the cache
    assert again.model_proto == tok.model_proto
    rebuilt = tokenizers.from_info(json.loads(json.dumps(tok.to_info())))
    np.testing.assert_array_equal(rebuilt.encode(sample), tok.encode(sample))


# --------------------------------------------------------------------------------- data


def test_text_dataset_split_batches_and_errors(text_file):
    c = _tiny_config(text_file)
    train_ds = text_lib.create_text_dataset(c, "train")
    val_ds = text_lib.create_text_dataset(c, "test")
    n = len(_corpus())
    assert train_ds.num_tokens == int(n * 0.9) and val_ds.num_tokens == n - int(n * 0.9)
    b = train_ds.train_batch(3, 8)
    chex.assert_shape(b["tokens"], (8, 17))
    assert b["tokens"].dtype == np.int32
    np.testing.assert_array_equal(b["tokens"], train_ds.train_batch(3, 8)["tokens"])
    halves = [train_ds.train_batch(3, 8, i, 2)["tokens"] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), b["tokens"])
    first = list(val_ds.eval_batches(8, max_batches=2))
    again = list(val_ds.eval_batches(8, max_batches=2))
    chex.assert_trees_all_equal(first, again)
    full = list(val_ds.eval_batches(8))
    assert sum(int(x["mask"].sum()) for x in full) == val_ds.num_examples
    assert full[-1]["mask"].dtype == bool
    info = json.loads(json.dumps(train_ds.info()))
    tok = tokenizers.from_info(info["tokenizer"])
    assert tok.decode(b["tokens"][0]) in _corpus()
    c.data.path = os.path.join(os.path.dirname(text_file), "missing.txt")
    with pytest.raises(UserError, match="missing.txt"):
        text_lib.create_text_dataset(c, "train")


def test_tfds_tiny_shakespeare_with_mock_data():
    import tensorflow_datasets as tfds

    c = get_config("tiny")
    c.data.name = "tiny_shakespeare"
    c.model.block_size = 8
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        text_lib.read_tfds_text.cache_clear()
        ds = text_lib.create_text_dataset(c, "train")
        val = text_lib.create_text_dataset(c, "test")
    text_lib.read_tfds_text.cache_clear()
    assert ds.info()["tokenizer"]["kind"] == "char"
    chex.assert_shape(ds.train_batch(0, 4)["tokens"], (4, 9))
    assert next(iter(val.eval_batches(4)))["tokens"].shape == (4, 9)


# --------------------------------------------------------------------------------- training


def test_gradient_accumulation_matches_one_big_batch(text_file):
    c = _tiny_config(text_file)
    ds = text_lib.create_text_dataset(c, "train")
    batch = {"tokens": jnp.asarray(ds.train_batch(0, 8)["tokens"])}
    results = []
    for accum in (1, 4):
        c.optimizer.grad_accum_steps = accum
        m = lm.create(c, ds.info())
        state = m.init_state(jax.random.PRNGKey(0), batch)
        results.append(jax.jit(m.train_step)(state, batch))
    (s1, m1), (s4, m4) = results
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-4)
    chex.assert_trees_all_close(s1.params, s4.params, atol=1e-6)


def test_out_of_vocabulary_prompt_is_a_user_error(text_file):
    c = _tiny_config(text_file)
    m = lm.create(c, text_lib.create_text_dataset(c, "train").info())
    with pytest.raises(UserError, match="€"):
        m.sample(None, jax.random.PRNGKey(0), 2, prompt="The king€ speaks")


@pytest.fixture(scope="module")
def trained(text_file, tmp_path_factory):
    """A 40-step run (checkpoints at 20 and 40), and the same run resumed from step 20."""
    workdir = str(tmp_path_factory.mktemp("gpt_run"))
    c = _tiny_config(text_file, num_steps=40, log_every=10, eval_every=20,
                     checkpoint_every=20, sample_every=0)
    c.optimizer.learning_rate, c.optimizer.min_lr = 1e-2, 1e-3  # visible progress in 40 steps
    c.peak_flops = 1e12  # a stated peak, so the logs carry MFU on a CPU too
    final = jax.device_get(train.train_and_evaluate(c, workdir))
    metrics = read_metrics(workdir)
    resumed_dir = str(tmp_path_factory.mktemp("gpt_resumed"))
    shutil.copytree(workdir, resumed_dir, dirs_exist_ok=True)
    shutil.rmtree(os.path.join(resumed_dir, "checkpoints", "40"))
    resumed = jax.device_get(train.train_and_evaluate(c, resumed_dir))
    return c, workdir, final, metrics, resumed


def test_short_training_lowers_the_loss(trained):
    c, workdir, _, metrics, _ = trained
    losses = [r["loss"] for r in metrics if r["split"] == "train"]
    evals = [r["loss"] for r in metrics if r["split"] == "eval"]
    assert losses[-1] < losses[0] - 0.3, losses
    assert evals[-1] < math.log(len(set(_corpus()))) - 0.3, evals
    rows = [r for r in metrics if r["split"] == "train"]
    with open(os.path.join(workdir, "data_info.json")) as f:
        flops = lm.create(c, json.load(f)).flops_per_step
    assert flops > 0 and not any("flops_per_step" in r for r in rows)  # static, not metrics
    for r in rows:  # tokens/s and MFU are logged, and follow from steps/s
        assert r["tokens_per_sec"] == pytest.approx(r["steps_per_sec"] * 8 * 16)
        assert r["mfu"] == pytest.approx(r["steps_per_sec"] * flops / 1e12)


def test_resume_gives_the_same_parameters(trained):
    _, _, final, _, resumed = trained
    assert int(resumed.step) == int(final.step) == 40
    chex.assert_trees_all_close(resumed.params, final.params, atol=0, rtol=0)


def test_sample_mode_writes_text_without_the_data(trained, tmp_path):
    c, workdir, _, _, _ = trained
    c = c.copy_and_resolve_references()
    c.data.path = str(tmp_path / "gone.txt")  # sample mode must not read the corpus
    files = train.sample(c, workdir, 3, prompt="The king")
    assert files == [os.path.join(workdir, "samples.txt")]
    samples = open(files[0], encoding="utf-8").read().split(lm.SAMPLE_SEPARATOR)
    assert len(samples) == 3 and all(s.startswith("The king") for s in samples)
    assert all(len(s.rstrip("\n")) >= len("The king") + 20 for s in samples)
