"""The DALL-E prior's joint sequence: [text tokens ; image codes in raster order].

Ramesh et al. (2021), "Zero-Shot Text-to-Image Generation", section 2.2: one decoder-only
transformer over the concatenation of T text tokens and the h x w image codes of a frozen
discrete autoencoder. Here both kinds share one GPT with offset vocabularies: text ids keep
[0, V_text), image code k becomes V_text + k. Each target position may only predict its own
kind (the other kind's logits are masked out), so the tied embedding acts as two separate
output heads, and with learned absolute positions over this fixed layout every position
embedding belongs to one kind. The loss is the paper's: cross-entropy normalised per kind,
weighted text:image 1:7 by default (text padding after <eot> is not scored).
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from aigc_jax.data.words import PAD

MASKED = -1e9  # logit of a token of the other kind (finite, so no inf - inf in gradients)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Lengths and vocabularies of the joint sequence (hashable: a static jit argument)."""

    text_length: int  # T, <sot> ... <eot> <pad>... (the caption tokenizer's max_length)
    text_vocab: int  # V_text
    image_length: int  # h * w codes
    image_vocab: int  # K, the autoencoder's codebook size

    @property
    def length(self) -> int:
        """L = T + h w tokens; the GPT reads L - 1 of them (block_size)."""
        return self.text_length + self.image_length

    @property
    def vocab_size(self) -> int:
        """V_text + K: the GPT's (offset) vocabulary."""
        return self.text_vocab + self.image_vocab

    def is_image_target(self) -> jax.Array:
        """bool [L - 1]: whether the target at each input position is an image code."""
        return jnp.arange(1, self.length) >= self.text_length

    def allowed(self) -> jax.Array:
        """bool [L - 1, V]: the vocabulary each position may predict (its target's kind)."""
        image_token = jnp.arange(self.vocab_size) >= self.text_vocab  # [V]
        return self.is_image_target()[:, None] == image_token[None, :]


def join(text_tokens: jax.Array, codes: jax.Array, layout: Layout) -> jax.Array:
    """int32 [B, L]: text ids [B, T] followed by the image codes [B, h, w] (raster order,
    offset by V_text)."""
    b = text_tokens.shape[0]
    image = codes.reshape(b, -1).astype(jnp.int32) + layout.text_vocab  # [B, h w]
    return jnp.concatenate([text_tokens.astype(jnp.int32), image], axis=1)


def split_codes(seq: jax.Array, layout: Layout) -> jax.Array:
    """The image codes int32 [B, h w] (0..K-1) of joint sequences [B, L]."""
    return seq[:, layout.text_length:] - layout.text_vocab


def target_weights(seq: jax.Array, layout: Layout) -> tuple[jax.Array, jax.Array]:
    """(text, image) float32 [B, L - 1] masks of the scored targets seq[:, 1:]: text targets
    that are not padding, and every image code."""
    targets = seq[:, 1:]
    image = jnp.broadcast_to(layout.is_image_target(), targets.shape)
    text = (~image) & (targets != PAD)
    return text.astype(jnp.float32), image.astype(jnp.float32)


def masked_logits(logits: jax.Array, layout: Layout) -> jax.Array:
    """logits [B, L - 1, V] with the other kind's vocabulary at MASKED at each position."""
    return jnp.where(layout.allowed()[None, : logits.shape[1]], logits, MASKED)


def losses(logits: jax.Array, seq: jax.Array, layout: Layout) -> dict[str, jax.Array]:
    """Per-example text and image cross-entropies (nats per scored token, [B]) of next-token
    logits [B, L - 1, V] for sequences [B, L]."""
    ce = optax.softmax_cross_entropy_with_integer_labels(masked_logits(logits, layout),
                                                         seq[:, 1:])  # [B, L - 1]
    w_text, w_image = target_weights(seq, layout)
    return {"text_loss": (ce * w_text).sum(-1) / jnp.maximum(w_text.sum(-1), 1.0),
            "image_loss": (ce * w_image).sum(-1) / w_image.sum(-1)}


def weighted_loss(logits: jax.Array, seq: jax.Array, layout: Layout, text_weight: float,
                  image_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DALL-E's objective: (w_t L_text + w_i L_image) / (w_t + w_i), each term normalised by
    its number of scored tokens in the batch; (loss, {text_loss, image_loss})."""
    ce = optax.softmax_cross_entropy_with_integer_labels(masked_logits(logits, layout),
                                                         seq[:, 1:])
    w_text, w_image = target_weights(seq, layout)
    text = (ce * w_text).sum() / jnp.maximum(w_text.sum(), 1.0)
    image = (ce * w_image).sum() / w_image.sum()
    loss = (text_weight * text + image_weight * image) / (text_weight + image_weight)
    return loss, {"text_loss": text, "image_loss": image}
