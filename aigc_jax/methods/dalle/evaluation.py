"""DALL-E's reranking evaluation on held-out prompts (Ramesh et al., 2021, Fig. 6 in miniature).

For the first `eval.num_prompts` test captions (the held-out templates), N_max candidates are
drawn per prompt; for each N in `eval.rerank_candidates` the CLIP component picks the best of
the first N, and the attribute checker (`aigc_jax.evaluation.attributes`) scores it against
the prompt's attribute record. N = 1 is the prior without reranking; `mean_candidate_*` is the
expected accuracy of one unreranked candidate over all N_max. FD is measured in the CLIP image
embedding space against the test images of the same prompts, and CLIP score (Hessel et al.,
2021) of the chosen candidates beside that of the real images.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from aigc_jax.evaluation.attributes import ATTRIBUTES, Checker
from aigc_jax.evaluation.metrics import FeatureStats, frechet_distance
from aigc_jax.methods.contrastive.components import clip_embeddings
from aigc_jax.methods.dalle.sampling import rerank


def full_prompt_correct(checks: dict[str, np.ndarray]) -> np.ndarray:
    """bool [M]: every attribute the prompt states holds (`Checker.check` output)."""
    return np.all(np.stack([v != 0 for v in checks.values()]), axis=0)


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = FeatureStats(a.shape[1]), FeatureStats(b.shape[1])
    sa.update(a)
    sb.update(b)
    return frechet_distance(*sa.mean_cov(), *sb.mean_cov())


def rerank_evaluation(config: ml_collections.ConfigDict, info: dict, components: dict,
                      frozen: dict, test_ds, rng: jax.Array,
                      generate: Callable[[np.ndarray, jax.Array], np.ndarray]) -> dict:
    """Accuracies for each N of `eval.rerank_candidates`, FD and CLIP score (see module doc);
    `generate(tokens [M, T], key) -> uint8 images [M, H, W, C]`."""
    ns = tuple(int(n) for n in config.eval.rerank_candidates)
    n_max = ns[-1]
    p = min(int(config.eval.num_prompts), int(test_ds.num_examples))
    batch = test_ds.examples(np.arange(p))
    prompts = test_ds.captions(np.arange(p))
    tokens = np.repeat(np.asarray(batch["tokens"]), n_max, 0)  # [P N, T], prompt-major
    images = generate(tokens, rng)  # [P N, H, W, C]
    logging.info("dalle eval: %d prompts x %d candidates sampled", p, n_max)
    records = np.repeat(np.asarray(batch["attributes"]), n_max, 0)
    checker = Checker("mnist" if info.get("glyphs") == "mnist" else "digits")
    checks = checker.check(images, records)  # {attribute: [P N]}
    correct = full_prompt_correct(checks).reshape(p, n_max)
    img_emb, txt_emb = clip_embeddings(components, frozen, images, list(np.repeat(prompts, n_max)))
    cos = np.sum(img_emb * txt_emb, -1).reshape(p, n_max)
    real_emb, real_txt = clip_embeddings(components, frozen, np.asarray(batch["image"]), prompts)
    out: dict = {"eval_prompts": p, "candidates": n_max,
                 "mean_candidate_full_prompt_accuracy": float(correct.mean())}
    rows = np.arange(p)
    for n in ns:
        best = np.asarray(rerank(jnp.asarray(cos[:, :n])))[:, 0]  # [P]
        out[f"full_prompt_accuracy_n{n}"] = float(correct[rows, best].mean())
        for a in ATTRIBUTES:
            v = checks[a].reshape(p, n_max)[rows, best]
            if (v >= 0).any():
                out[f"{a}_accuracy_n{n}"] = float(v[v >= 0].mean())
        out[f"clip_cosine_n{n}"] = float(cos[rows, best].mean())
        out[f"clip_score_n{n}"] = float(100.0 * np.maximum(cos[rows, best], 0).mean())
        out[f"fd_clip_n{n}"] = _fd(img_emb.reshape(p, n_max, -1)[rows, best], real_emb)
    out["clip_score_real"] = float(100.0 * np.maximum(np.sum(real_emb * real_txt, -1), 0).mean())
    real_checks = checker.check(np.asarray(batch["image"]), np.asarray(batch["attributes"]))
    out["real_full_prompt_accuracy"] = float(full_prompt_correct(real_checks).mean())
    return out
