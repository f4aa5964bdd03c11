"""GPT: a decoder-only transformer (Radford et al., 2018, 2019), laid out as nanoGPT.

Pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP, learned absolute
positions (or RoPE, Su et al., 2021), the token embedding tied to the output projection, and
GPT-2's initialisation: N(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2 n_layer).
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

POSITIONS = ("learned", "rope")
Cache = tuple[tuple[jax.Array, jax.Array], ...]  # per layer (k, v), each [B, S_max, H, D_h]


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
    position: str = "learned"  # learned | rope
    rope_base: float = 10000.0
    dtype: Any = jnp.float32
    attention_impl: str | None = None  # None: cuDNN on GPUs when it applies, else XLA

    @property
    def head_dim(self) -> int:
        """D_h = n_embd / n_head."""
        return self.n_embd // self.n_head


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


def rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding of x [B, S, H, D_h] at integer positions [S] (rotate-half)."""
    half = x.shape[-1] // 2
    freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [D_h / 2]
    angles = positions.astype(jnp.float32)[:, None] * freqs  # [S, D_h / 2]
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with fused QKV and an optional key/value cache."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, deterministic: bool,
                 kv: tuple[jax.Array, jax.Array] | None = None, index: jax.Array | None = None):
        cfg = self.cfg
        b, s, _ = x.shape
        qkv = Dense(3 * cfg.n_embd, use_bias=cfg.bias, kernel_init=normal_init(),
                    dtype=cfg.dtype, name="c_attn")(x)  # [B, S, 3 D]
        q, k, v = jnp.split(qkv.reshape(b, s, 3 * cfg.n_head, cfg.head_dim), 3, axis=2)
        if cfg.position == "rope":
            q, k = rope(q, positions, cfg.rope_base), rope(k, positions, cfg.rope_base)
        if kv is not None:  # incremental decoding: write this chunk, attend to the filled part
            k_cache = jax.lax.dynamic_update_slice(kv[0], k.astype(kv[0].dtype), (0, index, 0, 0))
            v_cache = jax.lax.dynamic_update_slice(kv[1], v.astype(kv[1].dtype), (0, index, 0, 0))
            kv = (k_cache, v_cache)
            key_pos = jnp.arange(k_cache.shape[1])
            mask = key_pos[None, :] <= (index + jnp.arange(s))[:, None]  # [S, S_max]
            y = jax.nn.dot_product_attention(q, k_cache, v_cache, mask=mask[None, None],
                                             implementation=cfg.attention_impl)
        elif cfg.dropout > 0 and not deterministic:
            y = _attention_with_dropout(q, k, v, cfg.dropout)
        else:
            y = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                             implementation=cfg.attention_impl)
        y = y.reshape(b, s, cfg.n_embd)  # [B, S, D]
        y = Dense(cfg.n_embd, use_bias=cfg.bias, dtype=cfg.dtype, name="c_proj",
                  kernel_init=normal_init(0.02 / math.sqrt(2 * cfg.n_layer)))(y)
        return nn.Dropout(cfg.dropout)(y, deterministic=deterministic), kv


def _attention_with_dropout(q, k, v, rate: float) -> jax.Array:
    """softmax(q k^T / sqrt(D_h)) v, dropout on the probabilities (the fused kernel has none)."""
    s = q.shape[1]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
    causal = jnp.tril(jnp.ones((s, s), bool))
    probs = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1).astype(v.dtype)
    probs = nn.Dropout(rate)(probs, deterministic=False)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


class MLP(nn.Module):
    """Position-wise 4x GELU MLP."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.cfg
        h = Dense(4 * cfg.n_embd, use_bias=cfg.bias, kernel_init=normal_init(),
                  dtype=cfg.dtype, name="c_fc")(x)
        h = gelu(h)
        h = Dense(cfg.n_embd, use_bias=cfg.bias, dtype=cfg.dtype, name="c_proj",
                  kernel_init=normal_init(0.02 / math.sqrt(2 * cfg.n_layer)))(h)
        return nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


class Block(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    cfg: GPTConfig

    @nn.compact
    def __call__(self, x, positions, deterministic, kv=None, index=None):
        ln = dict(epsilon=1e-5, use_bias=self.cfg.bias, dtype=self.cfg.dtype)
        y, kv = CausalSelfAttention(self.cfg, name="attn")(
            nn.LayerNorm(name="ln_1", **ln)(x), positions, deterministic, kv, index)
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
        self.ln_f = nn.LayerNorm(epsilon=1e-5, use_bias=cfg.bias, dtype=cfg.dtype)

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
    shape = (batch, length or cfg.block_size, cfg.n_head, cfg.head_dim)
    return tuple((jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype))
                 for _ in range(cfg.n_layer))


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def config_from(model_cfg: ml_collections.ConfigDict, vocab_size: int) -> GPTConfig:
    """A GPTConfig from `config.model` and the tokenizer's vocabulary size (padded up to a
    multiple of `model.vocab_multiple`, as nanoGPT's 50257 -> 50304)."""
    multiple = max(int(model_cfg.get("vocab_multiple", 1)), 1)
    padded = -(-vocab_size // multiple) * multiple
    return GPTConfig(
        vocab_size=padded, block_size=int(model_cfg.block_size), n_layer=int(model_cfg.n_layer),
        n_head=int(model_cfg.n_head), n_embd=int(model_cfg.n_embd),
        dropout=float(model_cfg.dropout), bias=bool(model_cfg.bias),
        position=str(model_cfg.position), rope_base=float(model_cfg.rope_base),
        dtype=DTYPES[str(model_cfg.dtype)],
        attention_impl=str(model_cfg.attention_impl) or None)


def count_params(params) -> dict[str, int]:
    """Total parameters and nanoGPT's count, which leaves out the position embedding."""
    total = sum(int(p.size) for p in jax.tree.leaves(params))
    p = params.get("params", params)
    wpe = int(p["wpe"]["embedding"].size) if "wpe" in p else 0
    return {"total": total, "non_embedding": total - wpe}


def flops_per_token(cfg: GPTConfig, num_params: int) -> float:
    """Training FLOPs per token, 6N + 12 L T D (PaLM appendix B; nanoGPT's estimate_mfu)."""
    return 6.0 * num_params + 12.0 * cfg.n_layer * cfg.block_size * cfg.n_embd
