"""Contrastive image-text losses, one registry: CLIP's symmetric InfoNCE and SigLIP's sigmoid.

Each loss takes L2-normalised embeddings of the *global* batch, img and txt [B, E], the logit
scale and bias, and an optional `positives` mask [B, B] (pairs to treat as matches: the
diagonal by default; identical captions too when `clip.duplicate_captions="positive"`, which
removes the false negatives of repeated captions). Under data parallelism the step is jitted
over globally sharded arrays, so `img @ txt.T` is the full B x B similarity: XLA gathers the
embeddings across devices, as big_vision's all-gather does by hand.

Hard negatives (Yuksekgonul et al., 2023, NegCLIP): `extra_txt` [B', E] are texts with no
image of their own (a caption with one word swapped), added as further columns of the
image -> text side only; `extra_positives` [B, B'] marks any that happen to match an image.

Radford et al. (2021), CLIP, eq. in Fig. 3; Zhai et al. (2023), "Sigmoid Loss for Language
Image Pre-Training", Algorithm 1 (t' = log 10, b = -10 at initialisation).
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def _positives(b: int, positives: jax.Array | None) -> jax.Array:
    return jnp.eye(b, dtype=bool) if positives is None else positives


def _with_extra(img: jax.Array, txt: jax.Array, positives: jax.Array,
                extra_txt: jax.Array | None, extra_positives: jax.Array | None):
    """(image -> text columns [B + B', E], their positives [B, B + B'])."""
    if extra_txt is None:
        return txt, positives
    extra_pos = (jnp.zeros((img.shape[0], extra_txt.shape[0]), bool)
                 if extra_positives is None else extra_positives)
    return (jnp.concatenate([txt, extra_txt], 0),
            jnp.concatenate([positives, extra_pos], 1))


def infonce(img: jax.Array, txt: jax.Array, scale: jax.Array, bias: jax.Array,
            positives: jax.Array | None = None, extra_txt: jax.Array | None = None,
            extra_positives: jax.Array | None = None) -> jax.Array:
    """Per-example symmetric cross-entropy [B]: (CE(image -> texts) + CE(text -> images)) / 2
    with logits scale * img @ txt.T; several positives share the target mass equally."""
    del bias  # InfoNCE is invariant to a shared shift of the logits
    b = img.shape[0]
    pos = _positives(b, positives)
    cols, cols_pos = _with_extra(img, txt, pos, extra_txt, extra_positives)
    logits = scale * img @ cols.T  # [B_img, B_txt (+ B')]
    cols_pos = cols_pos.astype(jnp.float32)
    i2t = -(cols_pos / cols_pos.sum(1, keepdims=True) * jax.nn.log_softmax(logits, 1)).sum(1)
    pos = pos.astype(jnp.float32)
    t2i = -(pos / pos.sum(0, keepdims=True) * jax.nn.log_softmax(logits[:, :b], 0)).sum(0)
    return 0.5 * (i2t + t2i)


def sigmoid(img: jax.Array, txt: jax.Array, scale: jax.Array, bias: jax.Array,
            positives: jax.Array | None = None, extra_txt: jax.Array | None = None,
            extra_positives: jax.Array | None = None) -> jax.Array:
    """Per-image SigLIP loss [B]: -sum_j log sigmoid(z_ij (scale img_i . txt_j + bias)), z = +1
    on positives and -1 elsewhere; its mean over images is the paper's loss (sum / B)."""
    cols, cols_pos = _with_extra(img, txt, _positives(img.shape[0], positives), extra_txt,
                                 extra_positives)
    logits = scale * img @ cols.T + bias
    z = jnp.where(cols_pos, 1.0, -1.0)
    return -jax.nn.log_sigmoid(z * logits).sum(1)


@dataclasses.dataclass(frozen=True)
class ContrastiveLoss:
    """A loss with the logit scale and bias it starts from."""

    fn: Callable[..., jax.Array]
    init_logit_scale: float
    init_logit_bias: float


LOSSES = {
    "infonce": ContrastiveLoss(infonce, math.log(1 / 0.07), 0.0),
    "siglip": ContrastiveLoss(sigmoid, math.log(10.0), -10.0),
}
