"""Evaluation of a text-conditioned diffusion model on held-out prompts, per guidance scale.

The first `eval.num_prompts` test captions (the held-out templates of captioned digits) are
sampled once each at every scale of `eval.guidance_scales` (default: `sampler.guidance_scale`).
The attribute checker (`aigc_jax.evaluation.attributes`) scores each image against its
prompt's record: per-attribute accuracy and full-prompt accuracy (every stated attribute
right). With the CLIP run as `text_encoder` and `image_encoder` components: FD in CLIP image
embeddings against the test images of the same prompts, and CLIP score (Hessel et al., 2021).
The real test images get the same numbers, as the ceiling. Ho & Salimans' trade-off is the
accuracy / FD pair along the scales.
"""

from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from aigc_jax.evaluation.attributes import Checker, accuracy
from aigc_jax.evaluation.metrics import FeatureStats, frechet_distance
from aigc_jax.methods.contrastive.components import clip_embeddings


def fd(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between two sets of features [N, D]."""
    sa, sb = FeatureStats(a.shape[1]), FeatureStats(b.shape[1])
    sa.update(a)
    sb.update(b)
    return float(frechet_distance(*sa.mean_cov(), *sb.mean_cov()))


def scale_key(w: float) -> str:
    """The suffix of a guidance scale's metrics: 0.0 -> "w0", 2.5 -> "w2.5"."""
    return f"w{w:g}"


def text_evaluation(config: ml_collections.ConfigDict, info: dict, text, components: dict,
                    frozen: dict, test_ds, rng: jax.Array,
                    generate: Callable[[np.ndarray, jax.Array, float], np.ndarray],
                    sampler: dict) -> dict:
    """Accuracies, FD and CLIP score for each guidance scale (see the module docstring);
    `generate(tokens [M, T], key, w) -> uint8 images [M, H, W, C]`."""
    scales = [float(w) for w in config.eval.get("guidance_scales", ())] or [
        float(config.sampler.guidance_scale)]
    p = min(int(config.eval.num_prompts), int(test_ds.num_examples))
    batch = test_ds.examples(np.arange(p))
    prompts = test_ds.captions(np.arange(p))
    tokens = text.tokenize(prompts)
    records = np.asarray(batch["attributes"])
    checker = Checker("mnist" if info.get("glyphs") == "mnist" else "digits")
    use_clip = "image_encoder" in components and "text_encoder" in components
    out: dict = {"eval_prompts": p, "prompts": prompts, "guidance_scales": scales,
                 "sampling": sampler}
    real = np.asarray(batch["image"])
    for name, value in accuracy(checker.check(real, records)).items():
        out[f"real_{'full_prompt' if name == 'all' else name}_accuracy"] = value
    if use_clip:
        real_emb, real_txt = clip_embeddings(components, frozen, real, prompts)
        out["clip_score_real"] = float(100.0 * np.maximum(np.sum(real_emb * real_txt, -1),
                                                          0).mean())
    for w in scales:
        images = generate(tokens, jax.random.fold_in(rng, int(1000 * w)), w)
        key = scale_key(w)
        for name, value in accuracy(checker.check(images, records)).items():
            out[f"{'full_prompt' if name == 'all' else name}_accuracy_{key}"] = value
        if use_clip:
            emb, txt = clip_embeddings(components, frozen, images, prompts)
            out[f"clip_score_{key}"] = float(100.0 * np.maximum(np.sum(emb * txt, -1), 0).mean())
            out[f"fd_clip_{key}"] = fd(emb, real_emb)
        logging.info("text eval, guidance %g: full-prompt accuracy %.3f", w,
                     out[f"full_prompt_accuracy_{key}"])
    return out
