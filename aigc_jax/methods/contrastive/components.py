"""What a trained CLIP run serves to other runs: a TextEncoder, an ImageEncoder, CLIP score.

`TextEncoder.encode(w, tokens)` returns the text tower's per-token states [B, T, text_width]
(for cross-attention conditioning, as latent diffusion uses CLIP's) and the pooled, projected,
L2-normalised embedding [B, embed_dim] (for CLIP score and reranking); `ImageEncoder.encode`
returns the image embedding in the same space. Both take the run's weights pytree first
(`components.load` restores it), so they can be jitted with the weights as an argument.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax.components import ImageEncoder, TextEncoder
from aigc_jax.data.words import WordTokenizer
from aigc_jax.methods.contrastive.method import clip_config
from aigc_jax.models.clip import CLIP


def text_encoder(config: ml_collections.ConfigDict, info: dict, workdir: str) -> TextEncoder:
    """The run's text tower and tokenizer as a TextEncoder (an empty prompt is allowed; a word
    outside the vocabulary is a UserError)."""
    cfg = clip_config(config, info)
    model = CLIP(cfg)
    tok = WordTokenizer.from_info(info["tokenizer"])

    def tokenize(prompts: Sequence[str]) -> np.ndarray:
        return tok.encode_batch(list(prompts), strict=True)

    def encode(w, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        return model.apply(w, tokens.astype(jnp.int32), method=CLIP.encode_text)

    return TextEncoder(tokenize=tokenize, encode=encode, max_length=tok.max_length,
                       width=cfg.text_width)


def image_encoder(config: ml_collections.ConfigDict, info: dict, workdir: str) -> ImageEncoder:
    """The run's image tower as an ImageEncoder: uint8 [B, H, W, C] -> [B, embed_dim]."""
    cfg = clip_config(config, info)
    model = CLIP(cfg)

    def encode(w, images: jax.Array) -> jax.Array:
        return model.apply(w, images, method=CLIP.encode_image)

    return ImageEncoder(encode=encode, image_shape=tuple(info["image_shape"]),
                        width=cfg.embed_dim)


def clip_score(image_embeddings: jax.Array, text_embeddings: jax.Array,
               weight: float = 100.0) -> jax.Array:
    """CLIPScore per pair [B] (Hessel et al., 2021; torchmetrics' scale): weight * max(cos, 0)
    of normalised image and text embeddings [B, E] (`ImageEncoder.encode`, pooled text)."""
    cos = jnp.sum(image_embeddings * text_embeddings, -1)
    return weight * jnp.maximum(cos, 0.0)


ROLES = {"text_encoder": text_encoder, "image_encoder": image_encoder}
