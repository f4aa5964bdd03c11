"""Contrastive image-text losses, one registry: CLIP's symmetric InfoNCE and SigLIP's sigmoid.

Each loss takes L2-normalised embeddings of the *global* batch, img and txt [B, E], the logit
scale and bias, and an optional `positives` mask [B, B] (pairs to treat as matches: the
diagonal by default; identical captions too when `clip.duplicate_captions="positive"`, which
removes the false negatives of repeated captions). Under data parallelism the step is jitted
over globally sharded arrays, so `img @ txt.T` is the full B x B similarity: XLA gathers the
embeddings across devices, as big_vision's all-gather does by hand.

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


def infonce(img: jax.Array, txt: jax.Array, scale: jax.Array, bias: jax.Array,
            positives: jax.Array | None = None) -> jax.Array:
    """Per-example symmetric cross-entropy [B]: (CE(image -> texts) + CE(text -> images)) / 2
    with logits scale * img @ txt.T; several positives share the target mass equally."""
    del bias  # InfoNCE is invariant to a shared shift of the logits
    logits = scale * img @ txt.T  # [B_img, B_txt]
    pos = _positives(img.shape[0], positives).astype(jnp.float32)
    i2t = -(pos / pos.sum(1, keepdims=True) * jax.nn.log_softmax(logits, 1)).sum(1)
    t2i = -(pos / pos.sum(0, keepdims=True) * jax.nn.log_softmax(logits, 0)).sum(0)
    return 0.5 * (i2t + t2i)


def sigmoid(img: jax.Array, txt: jax.Array, scale: jax.Array, bias: jax.Array,
            positives: jax.Array | None = None) -> jax.Array:
    """Per-image SigLIP loss [B]: -sum_j log sigmoid(z_ij (scale img_i . txt_j + bias)), z = +1
    on positives and -1 elsewhere; its mean over images is the paper's loss (sum / B)."""
    logits = scale * img @ txt.T + bias
    z = jnp.where(_positives(img.shape[0], positives), 1.0, -1.0)
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
