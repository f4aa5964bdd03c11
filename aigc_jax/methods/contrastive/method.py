"""The contrastive family: CLIP / SigLIP image-text pre-training and its zero-shot evaluation.

Radford et al. (2021), "Learning Transferable Visual Models From Natural Language Supervision";
Zhai et al. (2023), "Sigmoid Loss for Language Image Pre-Training". The loss is an entry of
`losses.LOSSES` (`clip.loss`); the step sees the whole global batch (see `losses`).
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from aigc_jax.data.words import WordTokenizer
from aigc_jax.errors import UserError
from aigc_jax.methods.base import Method
from aigc_jax.methods.contrastive import zero_shot
from aigc_jax.methods.contrastive.losses import LOSSES
from aigc_jax.models.clip import CLIP, IMAGE_TOWERS, CLIPConfig
from aigc_jax.models.layers import count_params, resolve_dtype
from aigc_jax.optim import create_optimizer, create_schedule
from aigc_jax.state import TrainState, apply_gradients, create_state, global_norm, step_rng

DUPLICATES = ("negative", "positive")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError for impossible CLIP settings."""
    c = config.clip
    if c.loss not in LOSSES:
        raise UserError(f"config.clip.loss={c.loss!r} is unknown; known losses: {sorted(LOSSES)}.")
    if c.image_tower not in IMAGE_TOWERS:
        raise UserError(f"config.clip.image_tower={c.image_tower!r} is unknown; expected one of "
                        f"{IMAGE_TOWERS}.")
    if c.duplicate_captions not in DUPLICATES:
        raise UserError(f"config.clip.duplicate_captions={c.duplicate_captions!r} is unknown; "
                        f"expected one of {DUPLICATES}.")
    for tower in ("vision", "text"):
        width, heads = int(c[f"{tower}_width"]), int(c[f"{tower}_heads"])
        if width % heads:
            raise UserError(f"config.clip.{tower}_width={width} must be a multiple of "
                            f"clip.{tower}_heads={heads}.")
    image_size = int(config.data.image_size or 32)
    if c.image_tower == "vit" and image_size % int(c.patch_size):
        raise UserError(f"config.clip.patch_size={c.patch_size} must divide the image size "
                        f"{image_size}.")
    resolve_dtype(str(c.dtype), "clip.dtype")
    for group in c.hard_negative_groups:
        if len(str(group).split()) < 2:
            raise UserError(f"config.clip.hard_negative_groups has {group!r}: each group names "
                            "two or more interchangeable words, separated by spaces.")
    if int(c.hard_negative_copies) < 1:
        raise UserError(f"config.clip.hard_negative_copies={c.hard_negative_copies} must be >= 1.")


def clip_config(config: ml_collections.ConfigDict, info: dict) -> CLIPConfig:
    """The CLIPConfig of a run from `config.clip` and the data info (vocabulary, image size)."""
    c = config.clip
    loss = LOSSES[c.loss]
    tok = info["tokenizer"]
    scale = float(c.init_logit_scale) if float(c.init_logit_scale) else loss.init_logit_scale
    return CLIPConfig(
        vocab_size=len(tok["vocab"]), context_length=int(tok["max_length"]),
        image_size=int(info["image_shape"][0]), embed_dim=int(c.embed_dim),
        image_tower=str(c.image_tower), patch_size=int(c.patch_size),
        vision_width=int(c.vision_width), vision_layers=int(c.vision_layers),
        vision_heads=int(c.vision_heads), resnet_widths=tuple(int(w) for w in c.resnet_widths),
        text_width=int(c.text_width), text_layers=int(c.text_layers),
        text_heads=int(c.text_heads), init_logit_scale=scale,
        max_logit_scale=math.log(float(c.max_logit_scale)),
        init_logit_bias=loss.init_logit_bias, dtype=resolve_dtype(str(c.dtype), "clip.dtype"))


def positives_mask(tokens: jax.Array, duplicates: str) -> jax.Array | None:
    """[B, B] pairs counted as matches: None (the diagonal), or every pair of identical captions."""
    if duplicates == "negative":
        return None
    return jnp.all(tokens[:, None, :] == tokens[None, :, :], axis=-1)


def word_groups(groups, tokenizer: WordTokenizer) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Tables for `swap_words`: per vocabulary id its group (-1: none) and place in it, and
    the groups' members [G, K] (padded) with their sizes [G]."""
    vocab = tokenizer.vocab_size
    group_of, place = [-1] * vocab, [0] * vocab
    members = [tokenizer_ids(str(g), tokenizer) for g in groups]
    width = max((len(m) for m in members), default=1)
    for g, ids in enumerate(members):
        for k, i in enumerate(ids):
            group_of[i], place[i] = g, k
    table = [m + [m[0]] * (width - len(m)) for m in members] or [[0]]
    return (jnp.asarray(group_of, jnp.int32), jnp.asarray(place, jnp.int32),
            jnp.asarray(table, jnp.int32), jnp.asarray([len(m) for m in members] or [1]))


def tokenizer_ids(group: str, tokenizer: WordTokenizer) -> list[int]:
    """The ids of a hard-negative group's words; a word outside the vocabulary is an error."""
    unknown = [w for w in group.split() if w not in tokenizer.index]
    if unknown:
        raise UserError(f"config.clip.hard_negative_groups: {', '.join(unknown)} not in the "
                        "caption vocabulary.")
    return [tokenizer.index[w] for w in group.split()]


def swap_words(rng: jax.Array, tokens: jax.Array, tables, copies: int = 1) -> jax.Array:
    """Hard-negative captions [copies * B, T]: every word of a group replaced by another word
    of its group (NegCLIP's swaps); other tokens are kept. Copy j of a caption shifts each
    such word by r + j places in its group (r random per word), so up to size - 1 copies
    name distinct other words: with 9 copies a one-digit caption meets every other digit."""
    group_of, place, members, sizes = tables
    g = group_of[tokens]
    size = sizes[jnp.maximum(g, 0)]
    others = jnp.maximum(size - 1, 1)
    r = jax.random.randint(rng, tokens.shape, 0, others)
    out = []
    for j in range(copies):
        shift = 1 + (r + j) % others
        other = members[jnp.maximum(g, 0), (place[tokens] + shift) % size]
        out.append(jnp.where(g >= 0, other, tokens))
    return jnp.concatenate(out, 0)


def create(config: ml_collections.ConfigDict, info: dict, components=None) -> Method:
    """The contrastive Method for `config` on the image-text data described by `info`."""
    cfg = clip_config(config, info)
    model = CLIP(cfg)
    loss_fn = LOSSES[config.clip.loss].fn
    duplicates = str(config.clip.duplicate_captions)
    num_steps = int(config.train.num_steps)
    tx = create_optimizer(config.optimizer, num_steps)
    schedule = create_schedule(config.optimizer, num_steps)
    ema_decay = float(config.train.ema_decay)
    tokenizer = WordTokenizer.from_info(info["tokenizer"])

    groups = tuple(config.clip.hard_negative_groups)
    tables = word_groups(groups, tokenizer)
    copies = int(config.clip.hard_negative_copies)

    def losses(params, batch, rng=None):
        tokens = batch["tokens"]
        img, txt, scale, bias = model.apply(params, batch["image"], tokens)
        extra = {}
        if groups and rng is not None:  # training only: eval scores the plain loss
            hard = swap_words(rng, tokens, tables, copies)
            extra = {"extra_txt": model.apply(params, hard, method=CLIP.encode_text)[1],
                     "extra_positives": jnp.all(tokens[:, None] == hard[None], -1)}
        per_example = loss_fn(img, txt, scale, bias, positives_mask(tokens, duplicates),
                              **extra)
        logits = img @ txt.T
        pos = positives_mask(batch["tokens"], "positive")
        i2t = jnp.take_along_axis(pos, logits.argmax(1)[:, None], 1)[:, 0]
        return per_example, {"i2t_top1": i2t.astype(jnp.float32), "logit_scale": scale,
                             "logit_bias": bias, "temperature": 1.0 / scale}

    def loss_and_aux(params, batch, rng):
        per_example, aux = losses(params, batch, rng)
        return per_example.mean(), aux

    grad_fn = jax.value_and_grad(loss_and_aux, has_aux=True)

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        params = model.init(rng, batch["image"][:1], batch["tokens"][:1].astype(jnp.int32))
        return create_state(params, tx, jax.random.fold_in(rng, 1))

    def train_step(state: TrainState, batch: dict, frozen=None):
        (loss, aux), grads = grad_fn(state.params, batch, step_rng(state))
        metrics = {"loss": loss, "grad_norm": global_norm(grads),
                   "learning_rate": schedule(state.step), **aux,
                   "i2t_top1": aux["i2t_top1"].mean()}
        return apply_gradients(state, grads, tx, ema_decay), metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen=None) -> dict:
        per_example, aux = losses(state.ema_params, batch)
        return {"loss": per_example, "i2t_top1": aux["i2t_top1"],
                "temperature": aux["temperature"]}

    def evaluate(state: TrainState, test_ds, rng, num_samples=None, frozen=None) -> dict:
        return zero_shot.evaluate(model, state.ema_params, config, info, tokenizer, test_ds)

    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, *info["image_shape"]), jnp.uint8),
                            jnp.zeros((1, cfg.context_length), jnp.int32))
    p = shapes["params"]
    logging.info("CLIP (%s loss): image tower %s %.2fM, text tower %.2fM parameters",
                 config.clip.loss, cfg.image_tower, count_params(p["visual"]) / 1e6,
                 count_params(p["text"]) / 1e6)
    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  evaluate=evaluate)
