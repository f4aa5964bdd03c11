"""The DALL-E family: a GPT prior over [caption tokens ; frozen VQ codes], reranked by CLIP.

Ramesh et al. (2021), "Zero-Shot Text-to-Image Generation", in miniature: stage 1 is a trained
discrete autoencoder (`config.components.autoencoder`, a VQ/FSQ run of the autoencoder
family), stage 2 is the GPT family's model (`models/gpt.py`, unchanged) trained on the joint
sequence (`sequence.py`), and a trained CLIP run (`components.text_encoder` and
`components.image_encoder`, the contrastive family) reranks the N candidates drawn for each
prompt (`sampling.py`). Classifier-free guidance needs captions dropped to the empty prompt in
training (`dalle.prompt_dropout`).
"""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from aigc_jax.data.words import WordTokenizer
from aigc_jax.errors import UserError
from aigc_jax.methods.base import Frozen, Method
from aigc_jax.methods.common import padded_chunks, to_uint8
from aigc_jax.methods.dalle import sequence
from aigc_jax.methods.dalle.sampling import rerank, sample_codes, take_ranked
from aigc_jax.methods.lm import method as lm_method
from aigc_jax.methods.lm.sampling import SamplerConfig
from aigc_jax.models.gpt import GPT, config_from, flops_per_token, non_embedding_params
from aigc_jax.models.layers import count_params
from aigc_jax.optim import create_optimizer, create_schedule
from aigc_jax.state import TrainState, apply_gradients, create_state, global_norm, step_rng

ACCEPTS = ("autoencoder", "text_encoder", "image_encoder")
CLIP_ROLES = ("text_encoder", "image_encoder")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise a UserError for impossible model, loss, sampler or component settings."""
    lm_config = ml_collections.ConfigDict(config.to_dict())
    lm_config.data.tokenizer = "char"  # the GPT checks that do not concern the text source
    lm_config.model.block_size = max(int(config.model.block_size), 1)
    lm_config.sampler.max_new_tokens = 1
    lm_method.validate(lm_config)
    d, s = config.dalle, config.sampler
    if not (float(d.text_weight) >= 0 and float(d.image_weight) > 0):
        raise UserError(f"config.dalle.text_weight={d.text_weight} must be >= 0 and "
                        f"dalle.image_weight={d.image_weight} > 0.")
    if not 0.0 <= float(d.prompt_dropout) < 1.0:
        raise UserError(f"config.dalle.prompt_dropout={d.prompt_dropout} must be in [0, 1).")
    if float(s.guidance_scale) < 0:
        raise UserError(f"config.sampler.guidance_scale={s.guidance_scale} must be >= 0 "
                        "(0: no guidance).")
    if float(s.guidance_scale) > 0 and float(d.prompt_dropout) == 0:
        raise UserError(f"config.sampler.guidance_scale={s.guidance_scale} needs a prior trained "
                        "with the empty prompt (dalle.prompt_dropout > 0).")
    ns = tuple(int(n) for n in config.eval.rerank_candidates)
    if not ns or min(ns) < 1 or list(ns) != sorted(set(ns)):
        raise UserError(f"config.eval.rerank_candidates={ns} must be increasing positive "
                        "integers, e.g. (1, 8, 32).")
    if int(config.eval.num_prompts) < 1 or int(config.eval.sample_batch) < 1:
        raise UserError("config.eval.num_prompts and eval.sample_batch must be positive.")
    if not str(config.components.autoencoder.workdir):
        raise UserError("config.components.autoencoder.workdir is empty; the prior needs a "
                        "trained VQ run (configs/autoencoder.py:captioned_digits_vq).")
    clip = {r: str(config.components[r].workdir) for r in CLIP_ROLES}
    if bool(clip["text_encoder"]) != bool(clip["image_encoder"]):
        raise UserError("config.components.text_encoder and image_encoder must both name the "
                        f"CLIP run used for reranking, or neither; got {clip}.")


def layout_for(info: dict, ae) -> sequence.Layout:
    """The joint sequence for the caption tokenizer in `info` and the autoencoder role `ae`."""
    tok = info["tokenizer"]
    return sequence.Layout(text_length=int(tok["max_length"]), text_vocab=len(tok["vocab"]),
                           image_length=int(np.prod(ae.latent_shape[:-1])),
                           image_vocab=int(ae.codebook_size))


def check_components(config: ml_collections.ConfigDict, info: dict, components: dict) -> None:
    """The autoencoder must be discrete and fit the data; CLIP must fit the images."""
    if info.get("kind") != "image_text":
        raise UserError(f"config.data.name={config.data.name!r} has no captions; the prior "
                        "needs image-text pairs (captioned_digits).")
    if "autoencoder" not in components:
        raise UserError("config.components.autoencoder.workdir is empty; the prior needs a "
                        "trained VQ run.")
    ae = components["autoencoder"].bundle
    workdir = str(config.components.autoencoder.workdir)
    if not ae.codebook_size:
        raise UserError(f"config.components.autoencoder.workdir={workdir!r} is a continuous "
                        "(KL) autoencoder; the prior needs code indices (regularizer vq or fsq).")
    for role in ("autoencoder", "image_encoder"):
        if role in components:
            shape = tuple(components[role].bundle.image_shape)
            if shape != tuple(info["image_shape"]):
                raise UserError(f"config.components.{role}.workdir="
                                f"{str(config.components[role].workdir)!r} was trained on "
                                f"{'x'.join(map(str, shape))} images, but this run's data is "
                                f"{'x'.join(map(str, info['image_shape']))}.")


def create(config: ml_collections.ConfigDict, info: dict,
           components: dict | None = None) -> Method:
    """The DALL-E Method for captioned images `info` with the loaded `components`."""
    components = components or {}
    validate(config)
    check_components(config, info, components)
    ae = components["autoencoder"].bundle
    layout = layout_for(info, ae)
    model_cfg = ml_collections.ConfigDict(config.model.to_dict())
    model_cfg.block_size = layout.length - 1
    gcfg = config_from(model_cfg, layout.vocab_size)
    model = GPT(gcfg)
    tok = WordTokenizer.from_info(info["tokenizer"])
    empty = jnp.asarray(tok.encode(""), jnp.int32)  # [T]: <sot> <eot> <pad>...
    num_steps = int(config.train.num_steps)
    tx = create_optimizer(config.optimizer, num_steps)
    schedule = create_schedule(config.optimizer, num_steps)
    ema_decay = float(config.train.ema_decay)
    d = config.dalle
    w_text, w_image, p_drop = float(d.text_weight), float(d.image_weight), float(d.prompt_dropout)
    sc = SamplerConfig(max_new_tokens=layout.image_length,
                       temperature=float(config.sampler.temperature),
                       top_k=int(config.sampler.top_k), top_p=float(config.sampler.top_p))
    guidance = float(config.sampler.guidance_scale)
    latent_hw = tuple(ae.latent_shape[:-1])
    log2_k = math.log2(layout.image_vocab)

    def joint(batch: dict, frozen: dict, rng: jax.Array | None) -> jax.Array:
        codes = jax.lax.stop_gradient(ae.encode_indices(frozen["autoencoder"], batch["image"]))
        text = batch["tokens"].astype(jnp.int32)  # [B, T]
        if rng is not None and p_drop > 0:  # the empty prompt, for classifier-free guidance
            drop = jax.random.bernoulli(rng, p_drop, (text.shape[0], 1))
            text = jnp.where(drop, empty[None], text)
        return sequence.join(text, codes, layout)  # [B, L]

    def loss_fn(params, seq: jax.Array, rng: jax.Array):
        logits = model.apply(params, seq[:, :-1], deterministic=gcfg.dropout == 0,
                             rngs={"dropout": rng})  # [B, L - 1, V]
        return sequence.weighted_loss(logits, seq, layout, w_text, w_image)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def init_state(rng: jax.Array, batch: dict) -> TrainState:
        params = model.init(rng, jnp.zeros((1, layout.length - 1), jnp.int32))
        return create_state(params, tx, jax.random.fold_in(rng, 1))

    def train_step(state: TrainState, batch: dict, frozen: Frozen = None):
        seq = joint(batch, frozen, step_rng(state, 1))
        (loss, parts), grads = grad_fn(state.params, seq, step_rng(state, 2))
        metrics = {"loss": loss, **parts,
                   "image_bits_per_token": parts["image_loss"] / math.log(2.0),
                   "grad_norm": global_norm(grads), "learning_rate": schedule(state.step)}
        return apply_gradients(state, grads, tx, ema_decay), metrics

    def eval_step(state: TrainState, batch: dict, rng: jax.Array, frozen: Frozen = None) -> dict:
        seq = joint(batch, frozen, None)
        logits = model.apply(state.ema_params, seq[:, :-1])
        per = sequence.losses(logits, seq, layout)  # [B] each
        loss = (w_text * per["text_loss"] + w_image * per["image_loss"]) / (w_text + w_image)
        return {"loss": loss, **per, "image_bits_per_token": per["image_loss"] / math.log(2.0),
                "log2_codebook_size": jnp.full_like(loss, log2_k)}

    def encode_prompts(prompts: list[str]) -> np.ndarray:
        for p in prompts:
            unknown = tok.unknown_words(p)
            if unknown:
                raise UserError(f"prompt {p!r} has words outside the caption vocabulary: "
                                f"{', '.join(unknown)}.")
        return tok.encode_batch(prompts)

    decode = jax.jit(lambda w, codes: to_uint8(ae.decode_indices(
        w, codes.reshape(codes.shape[0], *latent_hw))))

    def generate(params, frozen: dict, tokens: np.ndarray, rng: jax.Array,
                 batch: int) -> np.ndarray:
        """uint8 images [M, H, W, C] for prompt tokens [M, T], `batch` sequences at a time."""
        out = []
        for s, chunk, n in padded_chunks(tokens, batch):
            codes = sample_codes(model, params, jnp.asarray(chunk), empty,
                                 jax.random.fold_in(rng, s), sc, layout, guidance)
            out.append(np.asarray(decode(frozen["autoencoder"], codes))[:n])
        return np.concatenate(out)

    def clip_scores(frozen: dict, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        """cos(image, prompt) [M] of images [M, ...] and their prompts (the CLIP component)."""
        from aigc_jax.methods.contrastive.components import clip_embeddings

        img, txt = clip_embeddings(components, frozen, images, prompts)
        return np.sum(img * txt, -1)

    def sample(state: TrainState, rng: jax.Array, num: int, prompt: str | None = None,
               frozen: Frozen = None):
        """`num` candidates for one prompt, best CLIP score first when CLIP is loaded."""
        prompt = str(config.prompt) if prompt is None else prompt
        tokens = np.repeat(encode_prompts([prompt]), num, 0)
        images = generate(state.ema_params, frozen, tokens, rng,
                          min(num, int(config.eval.sample_batch)))
        if all(r in components for r in CLIP_ROLES):
            scores = clip_scores(frozen, images, [prompt] * num)
            order = np.asarray(rerank(jnp.asarray(scores)[None]))[0]
            images = images[order]
            logging.info("prompt %r: %d candidates, CLIP cosine best %.3f, worst %.3f",
                         prompt, num, scores[order[0]], scores[order[-1]])
        return images

    def evaluate(state: TrainState, test_ds, rng: jax.Array, num_samples: int | None,
                 frozen: Frozen = None) -> dict:
        from aigc_jax.methods.dalle.evaluation import rerank_evaluation

        return {"log2_codebook_size": log2_k,
                **rerank_evaluation(config, info, components, frozen, test_ds, rng,
                                    lambda tokens, key: generate(
                                        state.ema_params, frozen, tokens, key,
                                        int(config.eval.sample_batch)))}

    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, layout.length - 1), jnp.int32))
    tokens_per_step = int(config.train.batch_size) * (layout.length - 1)
    flops = flops_per_token(gcfg, non_embedding_params(shapes)) * tokens_per_step
    logging.info("DALL-E prior: GPT %d x %d, vocab %d text + %d image codes, sequence %d + %d, "
                 "%.2fM parameters", gcfg.n_layer, gcfg.n_embd, layout.text_vocab,
                 layout.image_vocab, layout.text_length, layout.image_length,
                 count_params(shapes) / 1e6)
    return Method(init_state=init_state, train_step=train_step, eval_step=eval_step,
                  sample=sample, evaluate=evaluate, tokens_per_step=float(tokens_per_step),
                  flops_per_step=float(flops))


# Re-exported for scripts and tests: the pieces a caller composes by hand.
__all__ = ["ACCEPTS", "create", "layout_for", "rerank", "sample_codes", "take_ranked",
           "validate"]
