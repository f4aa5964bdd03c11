"""GPT: a decoder-only transformer (Radford et al., 2018, 2019), laid out as nanoGPT.

Pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP (exact, or GPT-2's
tanh approximation: `gelu`), learned absolute positions (or RoPE, Su et al., 2021), the token
embedding tied to the output projection, and GPT-2's initialisation: N(0, 0.02) everywhere,
residual projections scaled by 1/sqrt(2 n_layer).
Parameters are float32; `dtype` sets the compute precision (bfloat16 on accelerators).

`GPT.__call__` scores whole sequences; `GPT.decode` appends tokens to a key/value cache so each
new token costs one position (see `init_cache`).
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax.models.layers import (
    GELUS,
    Cache,
    Dense,
    MultiHeadAttention,
    count_params,
    init_kv_cache,
    normal_init,
    resolve_dtype,
)

POSITIONS = ("learned", "rope")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The model's shape; `vocab_size` is the embedding size (tokenizer vocab, maybe padded)."""

    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    ln_epsilon: float = 1e-5  # LayerNorm's epsilon (GPT-2: config.json's layer_norm_epsilon)
    gelu: str = "exact"  # exact | tanh (GPT-2's released weights use tanh)
    position: str = "learned"  # learned | rope
    rope_base: float = 10000.0
    dtype: Any = jnp.float32
    attention_impl: str | None = None  # None: jax's default (XLA in jax 0.10-0.12)
    causal: bool = True  # False: the same blocks as a bidirectional encoder (CLIP's ViT)

    @property
    def head_dim(self) -> int:
        """D_h = n_embd / n_head."""
        return self.n_embd // self.n_head


class MLP(nn.Module):
    """Position-wise 4x GELU MLP."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.cfg
        h = Dense(4 * cfg.n_embd, use_bias=cfg.bias, kernel_init=normal_init(),
                  dtype=cfg.dtype, name="c_fc")(x)
        h = GELUS[cfg.gelu](h)
        h = Dense(cfg.n_embd, use_bias=cfg.bias, dtype=cfg.dtype, name="c_proj",
                  kernel_init=normal_init(0.02 / math.sqrt(2 * cfg.n_layer)))(h)
        return nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x, positions, deterministic, kv=None, index=None):
        ln = dict(epsilon=self.cfg.ln_epsilon, use_bias=self.cfg.bias, dtype=self.cfg.dtype)
        cfg = self.cfg
        y, kv = MultiHeadAttention(
            cfg.n_head, use_bias=cfg.bias, causal=cfg.causal, dropout=cfg.dropout,
            position="rope" if cfg.position == "rope" else "none", rope_base=cfg.rope_base,
            out_kernel_init=normal_init(0.02 / math.sqrt(2 * cfg.n_layer)), dtype=cfg.dtype,
            implementation=cfg.attention_impl, name="attn")(
                nn.LayerNorm(name="ln_1", **ln)(x), positions=positions,
                deterministic=deterministic, kv=kv, index=index)
        x = x + y
        x = x + MLP(self.cfg, name="mlp")(nn.LayerNorm(name="ln_2", **ln)(x), deterministic)
        return x, kv


class GPT(nn.Module):
    """tokens int [B, S] -> logits float32 [B, S, V]."""

    cfg: GPTConfig

    def setup(self):
        cfg = self.cfg
        self.wte = nn.Embed(cfg.vocab_size, cfg.n_embd, embedding_init=normal_init(),
                            dtype=cfg.dtype)
        if cfg.position == "learned":
            self.wpe = nn.Embed(cfg.block_size, cfg.n_embd, embedding_init=normal_init(),
                                dtype=cfg.dtype)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = [Block(cfg, name=f"h_{i}") for i in range(cfg.n_layer)]
        self.ln_f = nn.LayerNorm(epsilon=cfg.ln_epsilon, use_bias=cfg.bias, dtype=cfg.dtype)

    def _forward(self, tokens, start, deterministic, cache):
        positions = start + jnp.arange(tokens.shape[1])  # [S]
        x = self.wte(tokens)  # [B, S, D]
        if self.cfg.position == "learned":
            x = x + self.wpe(positions)[None]
        x = self.drop(x, deterministic=deterministic)
        new_cache = []
        for i, block in enumerate(self.h):
            x, kv = block(x, positions, deterministic, None if cache is None else cache[i],
                          None if cache is None else start)
            new_cache.append(kv)
        x = self.ln_f(x)
        b, s, d = x.shape  # weight tying; as a matrix for the reason `Dense` gives
        logits = self.wte.attend(x.reshape(b * s, d)).reshape(b, s, -1)  # [B, S, V]
        logits = logits.astype(jnp.float32)
        return logits, (None if cache is None else tuple(new_cache))

    def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
        """Logits [B, S, V] of next tokens at every position of tokens [B, S] (S <= block)."""
        return self._forward(tokens, 0, deterministic, None)[0]

    def decode(self, tokens: jax.Array, cache: Cache, index: jax.Array
               ) -> tuple[jax.Array, Cache]:
        """Logits [B, S, V] for tokens [B, S] at positions index..index+S-1, using and filling
        the cache (positions < index must already be in it)."""
        return self._forward(tokens, index, True, cache)


def init_cache(cfg: GPTConfig, batch: int, length: int | None = None) -> Cache:
    """An empty key/value cache for `batch` sequences of up to `length` (block_size) tokens."""
    return init_kv_cache(cfg.n_layer, batch, length or cfg.block_size, cfg.n_head, cfg.head_dim,
                         cfg.dtype)


def config_from(model_cfg: ml_collections.ConfigDict, vocab_size: int) -> GPTConfig:
    """A GPTConfig from `config.model` and the tokenizer's vocabulary size (padded up to a
    multiple of `model.vocab_multiple`, as nanoGPT's 50257 -> 50304)."""
    multiple = max(int(model_cfg.get("vocab_multiple", 1)), 1)
    padded = -(-vocab_size // multiple) * multiple
    return GPTConfig(
        vocab_size=padded, block_size=int(model_cfg.block_size), n_layer=int(model_cfg.n_layer),
        n_head=int(model_cfg.n_head), n_embd=int(model_cfg.n_embd),
        dropout=float(model_cfg.dropout), bias=bool(model_cfg.bias),
        ln_epsilon=float(model_cfg.get("ln_epsilon", 1e-5)),
        gelu=str(model_cfg.get("gelu", "exact")),
        position=str(model_cfg.position), rope_base=float(model_cfg.rope_base),
        dtype=resolve_dtype(str(model_cfg.dtype)),
        attention_impl=str(model_cfg.attention_impl) or None)


def non_embedding_params(params) -> int:
    """nanoGPT's parameter count: all but the position embedding (the tied token embedding
    counts, as it is also the output layer)."""
    p = params.get("params", params)
    wpe = math.prod(p["wpe"]["embedding"].shape) if "wpe" in p else 0
    return count_params(params) - wpe


def flops_per_token(cfg: GPTConfig, num_params: int) -> float:
    """Training FLOPs per token, 6N + 12 L T D (PaLM appendix B; nanoGPT's estimate_mfu)."""
    return 6.0 * num_params + 12.0 * cfg.n_layer * cfg.block_size * cfg.n_embd
