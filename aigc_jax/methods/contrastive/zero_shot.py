"""Evaluation of a CLIP run: zero-shot classification, retrieval, linear probes, temperature.

- Zero-shot classification (CLIP section 3.1.4) with prompt ensembles: the class embedding of
  value v is the normalised mean of the text embeddings of every prompt that says v; a
  template naming other attributes is filled with all their values (the ensemble marginalises
  them). Digit identity is scored on the plain test glyphs (sklearn digits' test split, or
  MNIST's t10k), each drawn white, large and centred on the canvas, with
  `clip.zero_shot_digit_templates`; each attribute of the captioned test split (one-digit
  examples) is scored with that split's templates (the held-out ones when
  `data.hold_out_templates`).
- Retrieval recall@1/5 between the test images and their captions, both directions; a
  retrieved caption (image) counts when its text equals the query's own caption, since the
  compositional captions repeat.
- Linear probes (logistic regression) on the frozen image tower's features, the upper bound.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from aigc_jax.data import captions as cap
from aigc_jax.data.words import WordTokenizer
from aigc_jax.models.clip import CLIP

ONE_DIGIT_SLOTS = {"digit": cap.DIGITS, "colour": cap.COLOUR_NAMES, "size": cap.SIZES,
                   "position": cap.POSITIONS}


def _batched(fn, x: np.ndarray, batch: int) -> np.ndarray:
    out = [np.asarray(fn(jnp.asarray(x[i:i + batch]))) for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0,))


class Encoders:
    """Jitted image/text encoders of one model and weights, over numpy batches."""

    def __init__(self, model: CLIP, params: Any, tokenizer: WordTokenizer):
        self.params, self.tokenizer = params, tokenizer
        self._image = jax.jit(lambda p, x: model.apply(p, x, method=CLIP.encode_image))
        self._text = jax.jit(lambda p, t: model.apply(p, t, method=CLIP.encode_text)[1])
        self._features = jax.jit(lambda p, x: model.apply(p, x, method=CLIP.image_features))

    def images(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] -> normalised embeddings [N, E]."""
        return _batched(functools.partial(self._image, self.params), images, 250)

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] -> image tower features before the projection [N, D]."""
        return _batched(functools.partial(self._features, self.params), images, 250)

    def tokens(self, tokens: np.ndarray) -> np.ndarray:
        """token ids [N, T] -> normalised embeddings [N, E]."""
        return _batched(functools.partial(self._text, self.params), tokens, 1024)

    def texts(self, texts: list[str]) -> np.ndarray:
        """captions -> normalised embeddings [N, E]."""
        return self.tokens(self.tokenizer.encode_batch(texts))


def class_embeddings(enc: Encoders, attribute: str, templates: list[str]) -> np.ndarray:
    """[num_values, E]: per value, the normalised mean embedding of every filling of every
    template naming `attribute` (other named attributes run over all their values)."""
    values = ONE_DIGIT_SLOTS[attribute]
    sums = np.zeros((len(values), 0))
    for t in templates:
        if "{" + attribute + "}" not in t:
            continue
        fills = cap.all_fillings(t)
        emb = enc.texts([c for _, c in fills])
        emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
        idx = np.array([slots[attribute] for slots, _ in fills])
        per = np.stack([emb[idx == v].mean(0) for v in range(len(values))])
        per /= np.linalg.norm(per, axis=-1, keepdims=True)  # each template weighs the same
        sums = per if sums.shape[1] == 0 else sums + per
    return sums / np.linalg.norm(sums, axis=-1, keepdims=True)


def recall_at(sim: np.ndarray, match: np.ndarray, ks=(1, 5)) -> dict[int, float]:
    """Share of queries (rows of sim [Q, K]) with a match (bool [Q, K]) in the top k."""
    order = np.argsort(-sim, axis=1)
    hits = np.take_along_axis(match, order, axis=1)
    return {k: float(hits[:, :k].any(1).mean()) for k in ks}


def plain_digits(ds: cap.CaptionedDigits) -> tuple[np.ndarray, np.ndarray]:
    """Every source glyph of a split drawn alone: white, large, centred (uint8 [N, H, W, 3])."""
    images = []
    for g in range(len(ds.glyphs)):
        r = np.full(cap.RECORD_LEN, -1, np.int32)
        r[:2] = (1, 0)
        r[3:8] = (ds.labels[g], cap.COLOUR_NAMES.index("white"), 1, 1, 1)
        images.append(ds.render(r, np.array([g, -1])))
    return np.stack(images), ds.labels


def linear_probe(train_x, train_y, test_x, test_y) -> float:
    """Test accuracy of a logistic regression on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(train_x), train_y)
    return float((clf.predict(scaler.transform(test_x)) == test_y).mean())


def evaluate(model: CLIP, params: Any, config: ml_collections.ConfigDict, info: dict,
             tokenizer: WordTokenizer, test_ds: Any) -> dict[str, Any]:
    """Zero-shot accuracies, retrieval recalls, linear probes and the learned temperature."""
    enc = Encoders(model, params, tokenizer)
    scale = float(jnp.exp(jnp.minimum(params["params"]["logit_scale"],
                                      np.log(float(config.clip.max_logit_scale)))))
    out: dict[str, Any] = {"temperature": 1.0 / scale, "logit_scale": scale,
                           "logit_bias": float(params["params"]["logit_bias"])}
    n = min(int(config.clip.eval_examples), test_ds.num_examples)
    batch = test_ds.examples(np.arange(n)) if hasattr(test_ds, "examples") else \
        next(test_ds.eval_batches(n))
    img_emb = enc.images(batch["image"])
    txt_emb = enc.tokens(batch["tokens"])
    same = np.all(batch["tokens"][:, None] == batch["tokens"][None], -1)
    sim = img_emb @ txt_emb.T
    for direction, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        for k, v in recall_at(s, same).items():
            out[f"{direction}_r{k}"] = v
    out["retrieval_examples"] = n
    if not isinstance(test_ds, cap.CaptionedDigits):
        return out

    templates = [cap.TEMPLATES[t] for t in test_ds.templates if t not in cap.TWO_DIGIT_TEMPLATES]
    digit_templates = list(config.clip.zero_shot_digit_templates)
    out["templates"] = {"captioned_test": templates, "plain_digits": digit_templates}
    recs = batch["attributes"]
    one = recs[:, 0] == 1
    columns = {"digit": [cap.field_index(0, "digit")], "colour": [cap.field_index(0, "colour")],
               "size": [cap.field_index(0, "size")],
               "position": [cap.field_index(0, "row"), cap.field_index(0, "col")]}
    for attribute, cols in columns.items():
        if not any("{" + attribute + "}" in t for t in templates):
            continue
        classes = class_embeddings(enc, attribute, templates)
        pred = (img_emb[one] @ classes.T).argmax(1)
        truth = recs[one][:, cols[0]] * 3 + recs[one][:, cols[1]] if len(cols) == 2 \
            else recs[one][:, cols[0]]
        out[f"zero_shot_{attribute}_captioned"] = float((pred == truth).mean())
    out["zero_shot_captioned_examples"] = int(one.sum())

    # Plain test glyphs, and the probes' training data from the train glyphs.
    data_cfg = ml_collections.ConfigDict(config.data.to_dict())
    data_cfg.hold_out_templates = False
    train_ds = cap.create_captioned_digits(data_cfg, "train", int(config.seed))
    plain_x, plain_y = plain_digits(test_ds)
    digit_classes = class_embeddings(enc, "digit", digit_templates)
    pred = (enc.images(plain_x) @ digit_classes.T).argmax(1)
    out["zero_shot_digit_plain"] = float((pred == plain_y).mean())
    out["zero_shot_digit_plain_confusion"] = _confusion(plain_y, pred, 10).tolist()
    out["plain_examples"] = len(plain_y)
    train_plain_x, train_plain_y = plain_digits(train_ds)
    out["linear_probe_digit_plain"] = linear_probe(
        enc.features(train_plain_x), train_plain_y, enc.features(plain_x), plain_y)
    probe = train_ds.examples(np.arange(min(int(config.clip.probe_examples),
                                            train_ds.num_examples)))
    p_one = probe["attributes"][:, 0] == 1
    out["linear_probe_digit_captioned"] = linear_probe(
        enc.features(probe["image"][p_one]), probe["label"][p_one],
        enc.features(batch["image"][one]), batch["label"][one])
    return out


def _confusion(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (truth, pred), 1)
    return m
