"""The GPT family: next-token cross-entropy, gradient accumulation, text sampling, MFU.

Radford et al. (2019), "Language Models are Unsupervised Multitask Learners"; training as
nanoGPT: AdamW with decoupled weight decay on matrices, warmup + cosine, global-norm clipping.
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from aigc_jax.data import text, tokenizers
from aigc_jax.errors import UserError
from aigc_jax.methods.base import Frozen, Method
from aigc_jax.methods.lm.sampling import SamplerConfig, generate
from aigc_jax.models.gpt import GPT, POSITIONS, config_from, flops_per_token, non_embedding_params
from aigc_jax.models.layers import GELUS, count_params
from aigc_jax.optim import create_optimizer, create_schedule
from aigc_jax.parallel import peak_flops
from aigc_jax.state import TrainState, apply_gradients, create_state, global_norm, step_rng

SAMPLE_SEPARATOR = "\n" + "-" * 40 + "\n"


ATTENTION_IMPLS = ("", "xla", "cudnn")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError for impossible model, data or sampler settings."""
    m, s = config.model, config.sampler
    for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_multiple"):
        if int(m[key]) < 1:
            raise UserError(f"model.{key}={m[key]} must be a positive integer.")
    if m.n_embd % m.n_head:
        raise UserError(f"model.n_embd={m.n_embd} must be a multiple of model.n_head={m.n_head}.")
    if m.position not in POSITIONS:
        raise UserError(f"model.position={m.position!r} is unknown; expected one of {POSITIONS}.")
    if m.position == "rope" and (m.n_embd // m.n_head) % 2:
        raise UserError(f"RoPE needs an even head size; n_embd / n_head = {m.n_embd // m.n_head}.")
    if m.get("gelu", "exact") not in GELUS:
        raise UserError(f"model.gelu={m.gelu!r} is unknown; expected one of {sorted(GELUS)}.")
    if not float(m.get("ln_epsilon", 1e-5)) > 0:
        raise UserError(f"model.ln_epsilon={m.ln_epsilon} must be positive.")
    if m.dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"model.dtype={m.dtype!r} must be float32, bfloat16 or float16.")
    if m.attention_impl not in ATTENTION_IMPLS:
        raise UserError(f"model.attention_impl={m.attention_impl!r} is unknown; expected one of "
                        f"{ATTENTION_IMPLS} ('': jax picks).")
    if m.attention_impl == "cudnn" and jax.default_backend() != "gpu":
        raise UserError(f"model.attention_impl='cudnn' needs a GPU; this run is on "
                        f"{jax.default_backend()}. Use '' or 'xla'.")
    if config.data.tokenizer not in tokenizers.KINDS:
        raise UserError(f"data.tokenizer={config.data.tokenizer!r} is unknown; expected one of "
                        f"{tokenizers.KINDS}.")
    if config.data.tokenizer == "gpt2" and not text.tokenizer_path(config):
        raise UserError("data.tokenizer='gpt2' needs data.tokenizer_path (a directory with "
                        "tokenizer.json or vocab.json + merges.txt) or init_from.hf.")
    accum, batch = int(config.optimizer.grad_accum_steps), int(config.train.batch_size)
    if accum < 1 or batch % accum:
        raise UserError(f"train.batch_size={batch} must be a multiple of "
                        f"optimizer.grad_accum_steps={accum} (>= 1).")
    if s.temperature < 0 or s.top_k < 0 or not 0 < s.top_p <= 1 or s.max_new_tokens < 1:
        raise UserError(f"sampler settings need temperature >= 0, top_k >= 0, 0 < top_p <= 1 "
                        f"and max_new_tokens >= 1; got {s.to_dict()}.")


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Next-token negative log-likelihood in nats: logits [B, T, V], targets [B, T] -> [B, T]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


def encode_prompt(tok: tokenizers.Tokenizer, prompt: str) -> np.ndarray:
    """Prompt ids [P]; characters the tokenizer cannot represent are a UserError."""
    if not prompt:
        raise UserError("--prompt is empty; give at least one character (the default is \\n).")
    unknown = tok.unknown_chars(prompt)
    if unknown:
        raise UserError(f"the prompt has characters outside the tokenizer's vocabulary: "
                        f"{''.join(unknown)!r} ({', '.join(repr(c) for c in unknown)}).")
    return tok.encode(prompt)


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict | None = None) -> Method:
    """The LM Method for `config` on the text described by `info` (vocabulary, tokenizer)."""
    tok = tokenizers.from_info(info["tokenizer"])
    vocab_size = int(info["vocab_size"])
    gcfg = config_from(config.model, vocab_size)
    model = GPT(gcfg)
    num_steps = int(config.train.num_steps)
    accum = int(config.optimizer.grad_accum_steps)
    opt_cfg = ml_collections.ConfigDict(config.optimizer.to_dict())
    opt_cfg.grad_accum_steps = 1  # accumulated inside train_step with a scan
    tx = create_optimizer(opt_cfg, num_steps)
    schedule = create_schedule(opt_cfg, num_steps)
    ema_decay = float(config.train.ema_decay)
    tokens_per_step = int(config.train.batch_size) * gcfg.block_size
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, gcfg.block_size), jnp.int32))
    counts = {"total": count_params(shapes), "non_embedding": non_embedding_params(shapes)}
    flops_per_step = flops_per_token(gcfg, counts["non_embedding"]) * tokens_per_step
    sc = SamplerConfig(**{k: type(v)(config.sampler[k]) for k, v in
                          SamplerConfig().__dict__.items()})

    def loss_fn(params, tokens: jax.Array, rng: jax.Array) -> jax.Array:
        logits = model.apply(params, tokens[:, :-1], deterministic=gcfg.dropout == 0,
                             rngs={"dropout": rng})  # [B, T, V]
        return cross_entropy(logits, tokens[:, 1:]).mean()

    grad_fn = jax.value_and_grad(loss_fn)

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        params = model.init(rng, batch["tokens"][:1, :-1].astype(jnp.int32))
        return create_state(params, tx, jax.random.fold_in(rng, 1))

    def train_step(state: TrainState, batch: dict, frozen: Frozen = None):
        tokens = batch["tokens"].astype(jnp.int32)  # [B, T + 1]
        rng = step_rng(state)
        if accum == 1:
            loss, grads = grad_fn(state.params, tokens, rng)
        else:  # micro-batches [accum, B / accum, T + 1]; rows stay on their device
            micro = tokens.reshape(-1, accum, tokens.shape[-1]).swapaxes(0, 1)

            def body(carry, xs):
                i, mb = xs
                loss, grads = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
                return jax.tree.map(jnp.add, carry, (loss, grads)), None

            zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, state.params))
            (loss, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
            loss, grads = jax.tree.map(lambda x: x / accum, (loss, grads))
        metrics = {"loss": loss, "grad_norm": global_norm(grads),
                   "learning_rate": schedule(state.step)}
        return apply_gradients(state, grads, tx, ema_decay), metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen: Frozen = None) -> dict:
        tokens = batch["tokens"].astype(jnp.int32)
        logits = model.apply(state.ema_params, tokens[:, :-1])
        loss = cross_entropy(logits, tokens[:, 1:]).mean(-1)  # [B]
        return {"loss": loss, "bits_per_token": loss / math.log(2.0)}

    def sample(state: TrainState, rng: jax.Array, num: int, prompt: str | None = None,
               frozen: Frozen = None):
        ids = encode_prompt(tok, config.prompt if prompt is None else prompt)
        prompt_ids = jnp.asarray(np.broadcast_to(ids, (num, len(ids))), jnp.int32)
        return generate(model, state.ema_params, prompt_ids, rng, sc, vocab_size)

    def write_samples(samples, path_stem: str) -> list[str]:
        texts = [tok.decode(row) for row in np.asarray(samples)]
        path = path_stem + ".txt"
        with open(path, "w", encoding="utf-8") as f:
            f.write(SAMPLE_SEPARATOR.join(texts) + "\n")
        logging.info("wrote %d samples to %s", len(texts), path)
        return [path]

    peak = peak_flops(config)
    logging.info("MFU = steps_per_sec x flops_per_step (%.3g) / peak FLOP/s (%s)",
                 flops_per_step, f"{peak:.3g}" if peak else "unknown: set config.peak_flops")
    logging.info("GPT %d layers, %d heads, %d dims, vocab %d: %.2fM parameters (%.2fM without "
                 "position embeddings, as nanoGPT counts); %.3g training FLOPs/token",
                 gcfg.n_layer, gcfg.n_head, gcfg.n_embd, gcfg.vocab_size, counts["total"] / 1e6,
                 counts["non_embedding"] / 1e6,
                 flops_per_token(gcfg, counts["non_embedding"]))
    # Static per-step numbers: tokens/s and MFU follow from the loop's steps_per_sec.
    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  sample=sample, write_samples=write_samples,
                  tokens_per_step=float(tokens_per_step), flops_per_step=float(flops_per_step))
