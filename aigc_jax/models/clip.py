"""CLIP: an image tower and a text tower mapped to one L2-normalised embedding space.

Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision",
laid out as big_vision's two-tower model (`proj/image_text/two_towers.py`):

- image tower: a ViT (patch embedding, class token, learned positions, pre-LN blocks, the class
  token's final state) or a small ResNet (the shared `ResBlock`s, global average pooling);
- text tower: the GPT blocks with a causal mask over learned-position token embeddings, the
  final LayerNorm's state at the end-of-text token as the pooled feature (as CLIP does);
- linear projections (no bias) to `embed_dim`, then L2 normalisation;
- a learnable logit scale t, initialised at log(1/0.07) and used as exp(min(t, log 100)); and a
  learnable logit bias (SigLIP's b; unused by InfoNCE).

Images are uint8 [B, H, W, C] scaled to [-1, 1]; tokens int32 [B, T] from `data.words`.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.data.words import EOT
from aigc_jax.models.gpt import Block, GPTConfig
from aigc_jax.models.layers import Dense, GroupNorm32, ResBlock, avg_pool2, normal_init
from aigc_jax.pixels import to_float

IMAGE_TOWERS = ("vit", "resnet")


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Both towers' shapes and the temperature's initial value and clamp."""

    vocab_size: int
    context_length: int
    image_size: int = 32
    embed_dim: int = 128
    image_tower: str = "vit"  # vit | resnet
    patch_size: int = 4
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    resnet_widths: tuple[int, ...] = (32, 64, 128)
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    init_logit_scale: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100.0)
    init_logit_bias: float = 0.0
    dtype: Any = jnp.float32

    def blocks(self, width: int, layers: int, heads: int, causal: bool) -> GPTConfig:
        """The GPT block shape of a tower."""
        return GPTConfig(vocab_size=self.vocab_size, block_size=self.context_length,
                         n_layer=layers, n_head=heads, n_embd=width, bias=True,
                         dtype=self.dtype, causal=causal)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """x / ||x|| along the last axis, in float32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, -1, keepdims=True) + eps)


class VisionTransformer(nn.Module):
    """images [B, H, W, C] in [-1, 1] -> class-token features [B, width] (ViT, Dosovitskiy
    et al., 2021), built from the GPT blocks without the causal mask."""

    cfg: CLIPConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, p = self.cfg, self.cfg.patch_size
        bcfg = cfg.blocks(cfg.vision_width, cfg.vision_layers, cfg.vision_heads, causal=False)
        x = nn.Conv(cfg.vision_width, (p, p), (p, p), use_bias=False, dtype=cfg.dtype,
                    name="patch_embed")(x.astype(cfg.dtype))
        b, h, w, d = x.shape
        x = x.reshape(b, h * w, d)  # [B, N, D]
        cls = self.param("cls", normal_init(), (1, 1, d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], 1)
        pos = self.param("pos_embed", normal_init(), (1, h * w + 1, d))
        x = nn.LayerNorm(epsilon=1e-5, dtype=cfg.dtype, name="ln_pre")(x + pos.astype(x.dtype))
        positions = jnp.arange(h * w + 1)
        for i in range(cfg.vision_layers):
            x, _ = Block(bcfg, name=f"h_{i}")(x, positions, True)
        return nn.LayerNorm(epsilon=1e-5, dtype=cfg.dtype, name="ln_post")(x[:, 0])


class ResNet(nn.Module):
    """images [B, H, W, C] in [-1, 1] -> globally pooled features [B, widths[-1]]: a 3x3 stem,
    then per width a residual block and 2x2 average pooling (all but the last)."""

    cfg: CLIPConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.cfg
        x = nn.Conv(cfg.resnet_widths[0], (3, 3), dtype=cfg.dtype, name="stem")(
            x.astype(cfg.dtype))
        for i, width in enumerate(cfg.resnet_widths):
            x = ResBlock(width, num_groups=8, dtype=cfg.dtype, name=f"res_{i}")(x)
            if i < len(cfg.resnet_widths) - 1:
                x = avg_pool2(x)
        return nn.swish(GroupNorm32(8, name="norm_out")(x)).mean(axis=(1, 2))


class TextTransformer(nn.Module):
    """tokens [B, T] -> (states [B, T, width] after the final LayerNorm, features at the first
    end-of-text token [B, width]); causal, so the state at <eot> has read the whole caption."""

    cfg: CLIPConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.cfg
        bcfg = cfg.blocks(cfg.text_width, cfg.text_layers, cfg.text_heads, causal=True)
        t = tokens.shape[1]
        x = nn.Embed(cfg.vocab_size, cfg.text_width, embedding_init=normal_init(),
                     dtype=cfg.dtype, name="wte")(tokens)
        x = x + nn.Embed(cfg.context_length, cfg.text_width, embedding_init=normal_init(0.01),
                         dtype=cfg.dtype, name="wpe")(jnp.arange(t))[None]
        positions = jnp.arange(t)
        for i in range(cfg.text_layers):
            x, _ = Block(bcfg, name=f"h_{i}")(x, positions, True)
        states = nn.LayerNorm(epsilon=1e-5, dtype=cfg.dtype, name="ln_final")(x)
        eot = jnp.argmax(tokens == EOT, axis=-1)  # [B]: first <eot>
        pooled = jnp.take_along_axis(states, eot[:, None, None], axis=1)[:, 0]
        return states, pooled


class CLIP(nn.Module):
    """Two towers with projections and the logit scale/bias; see the module docstring."""

    cfg: CLIPConfig

    def setup(self):
        cfg = self.cfg
        self.visual = VisionTransformer(cfg) if cfg.image_tower == "vit" else ResNet(cfg)
        self.text = TextTransformer(cfg)
        self.image_proj = Dense(cfg.embed_dim, use_bias=False, dtype=cfg.dtype,
                                kernel_init=nn.initializers.lecun_normal())
        self.text_proj = Dense(cfg.embed_dim, use_bias=False, dtype=cfg.dtype,
                               kernel_init=nn.initializers.lecun_normal())
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(
            cfg.init_logit_scale), ())
        self.logit_bias = self.param("logit_bias", nn.initializers.constant(
            cfg.init_logit_bias), ())

    def image_features(self, images: jax.Array) -> jax.Array:
        """uint8 images [B, H, W, C] -> the image tower's features before the projection."""
        return self.visual(to_float(images))

    def encode_image(self, images: jax.Array) -> jax.Array:
        """uint8 images [B, H, W, C] -> L2-normalised embeddings [B, embed_dim]."""
        return l2_normalize(self.image_proj(self.image_features(images)))

    def encode_text(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """tokens [B, T] -> (states [B, T, text_width], L2-normalised embeddings [B, E])."""
        states, pooled = self.text(tokens)
        return states, l2_normalize(self.text_proj(pooled))

    def scale_and_bias(self) -> tuple[jax.Array, jax.Array]:
        """(exp(min(t, log 100)), b): the clamped logit scale (1 / temperature) and the bias."""
        return (jnp.exp(jnp.minimum(self.logit_scale, self.cfg.max_logit_scale)),
                self.logit_bias)

    def __call__(self, images: jax.Array, tokens: jax.Array):
        """(image embeddings [B, E], text embeddings [B, E], logit scale, logit bias)."""
        scale, bias = self.scale_and_bias()
        return self.encode_image(images), self.encode_text(tokens)[1], scale, bias
