"""What a trained CLIP run serves to other runs: a TextEncoder, an ImageEncoder, CLIP score, and
the embeddings of images and prompts that reranking and text-to-image evaluation use.

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
from aigc_jax.errors import UserError
from aigc_jax.methods.common import padded_chunks
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


def clip_embeddings(components: dict, frozen: dict, images: np.ndarray, prompts: list[str],
                    batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Normalised CLIP embeddings of images [M, ...] and of prompts [M] (each distinct prompt
    encoded once), from the text_encoder and image_encoder components."""
    if "image_encoder" not in components or "text_encoder" not in components:
        raise UserError("CLIP embeddings (reranking, CLIP score, FD in CLIP features) need the "
                        "CLIP run as config.components.text_encoder and image_encoder (both the "
                        "same contrastive workdir).")
    img_enc, txt_enc = components["image_encoder"].bundle, components["text_encoder"].bundle
    img_fn = jax.jit(img_enc.encode)
    txt_fn = jax.jit(lambda w, t: txt_enc.encode(w, t)[1])
    img = []
    for _, chunk, n in padded_chunks(images, batch):
        img.append(np.asarray(img_fn(frozen["image_encoder"], jnp.asarray(chunk)))[:n])
    distinct = list(dict.fromkeys(prompts))
    emb = np.asarray(txt_fn(frozen["text_encoder"], jnp.asarray(txt_enc.tokenize(distinct))))
    row = {p: i for i, p in enumerate(distinct)}
    return np.concatenate(img), emb[[row[p] for p in prompts]]
