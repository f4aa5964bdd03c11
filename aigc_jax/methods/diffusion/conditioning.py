"""Text conditioning for diffusion: prompts -> the UNet's cross-attention context.

`config.diffusion.text` picks the encoder (Rombach et al., 2022, section 3.3):
- `frozen`: the `text_encoder` component (a trained CLIP run's text tower), its per-token states
  [B, T, D] under stop_gradient, as Stable Diffusion uses CLIP's;
- `joint`: a causal text transformer (CLIP's text tower, `models/clip.py`) trained with the
  UNet from scratch, as LDM's text-to-image model trains its BERT;
- `none`: no text (pixel or latent diffusion, optionally class-conditional).
Padding tokens are masked out of the cross-attention. The empty prompt ("<sot> <eot>") is
the unconditional input that prompt dropout trains and classifier-free guidance subtracts.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax.data.words import PAD, SPECIALS, WordTokenizer
from aigc_jax.errors import UserError
from aigc_jax.models.clip import CLIPConfig, TextTransformer
from aigc_jax.models.layers import resolve_dtype

TEXT_ENCODERS = ("none", "frozen", "joint")


@dataclasses.dataclass(frozen=True)
class TextConditioning:
    """Prompts to context. `encode(params, frozen, tokens [B, T]) -> states [B, T, width]`
    (params: the run's trainable tree, read only by a joint encoder); `init(rng)` gives a joint
    encoder's parameters (None when frozen)."""

    mode: str
    tokenizer: WordTokenizer
    width: int
    encode: Callable[[Any, Any, jax.Array], jax.Array]
    init: Callable[[jax.Array], Any] | None

    @property
    def empty(self) -> np.ndarray:
        """int32 [T]: the empty prompt, the unconditional input."""
        return self.tokenizer.encode("")

    def tokenize(self, prompts: Sequence[str]) -> np.ndarray:
        """int32 [N, T] ids; a word outside the caption vocabulary is one UserError."""
        return self.tokenizer.encode_batch(list(prompts), strict=True)


def context_mask(tokens: jax.Array) -> jax.Array:
    """bool [B, T]: the tokens cross-attention may read (everything but padding)."""
    return tokens != PAD


def check_vocabulary(tok: WordTokenizer, encoder, workdir: str) -> None:
    """The text encoder component must read this run's captions exactly as its data does."""
    words = [w for w in tok.vocab if w not in SPECIALS]
    try:
        theirs = np.asarray(encoder.tokenize(words))
    except UserError as e:
        raise UserError(f"config.components.text_encoder.workdir={workdir!r} has another "
                        f"vocabulary than this run's captions ({e})") from None
    ours = tok.encode_batch(words)
    if encoder.max_length != tok.max_length or theirs.shape != ours.shape or (
            theirs != ours).any():
        raise UserError(f"config.components.text_encoder.workdir={workdir!r} tokenizes this "
                        "run's captions differently (other word ids or length); train it on the "
                        "same caption data.")


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict) -> TextConditioning | None:
    """The text conditioning `config.diffusion.text` names, or None for `none`."""
    mode = str(config.diffusion.text)
    if mode == "none":
        if "text_encoder" in components:
            raise UserError("config.components.text_encoder is set but config.diffusion.text="
                            "'none'; set diffusion.text='frozen' to condition on it.")
        return None
    if info.get("kind") != "image_text" or "tokenizer" not in info:
        raise UserError(f"config.diffusion.text={mode!r} needs captioned images, but "
                        f"config.data.name={config.data.name!r} has no captions (try "
                        "captioned_digits).")
    tok = WordTokenizer.from_info(info["tokenizer"])
    if mode == "frozen":
        if "text_encoder" not in components:
            raise UserError("config.diffusion.text='frozen' needs a trained CLIP run as "
                            "config.components.text_encoder.workdir.")
        enc = components["text_encoder"].bundle
        check_vocabulary(tok, enc, str(config.components.text_encoder.workdir))

        def encode_frozen(params, frozen, tokens):
            return jax.lax.stop_gradient(enc.encode(frozen["text_encoder"], tokens)[0])

        return TextConditioning(mode, tok, int(enc.width), encode_frozen, None)
    m = config.model
    cfg = CLIPConfig(vocab_size=tok.vocab_size, context_length=tok.max_length,
                     text_width=int(m.text_width), text_layers=int(m.text_layers),
                     text_heads=int(m.text_heads), dtype=resolve_dtype(str(m.dtype)))
    model = TextTransformer(cfg)

    def encode_joint(params, frozen, tokens):
        return model.apply(params["text"], tokens.astype(jnp.int32))[0]

    return TextConditioning(mode, tok, cfg.text_width, encode_joint, lambda rng: model.init(
        rng, jnp.zeros((1, tok.max_length), jnp.int32)))
