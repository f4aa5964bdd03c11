"""Captioned digits: real handwritten glyphs placed on an RGB canvas with instance-level captions.

Each example holds one or two digit glyphs (scikit-learn's 8x8 digits, or MNIST from IDX files
at `data.path`), each with a colour, a size and a place on a 3x3 grid; two digits also stand in
a relation ("left of", "above"). The caption comes from one of several templates, and
`data.hold_out_templates` keeps some templates out of training (the test split then uses only
those), so evaluation asks about compositions phrased in ways the model never read. Example i
of a split is a pure function of (seed, split, i); train and test draw from disjoint glyphs
(the `digits` source's split, or MNIST's train/t10k files). The attribute record is part of
the batch (`attributes`, int32 [RECORD_LEN], -1 where an attribute does not apply), so an
attribute checker can score any image against it (`aigc_jax.evaluation.attributes`).
"""

import itertools
from collections.abc import Sequence

import ml_collections
import numpy as np
from PIL import Image

from aigc_jax.data import images as image_lib
from aigc_jax.data.base import Batch, IndexedExamples, rng_for
from aigc_jax.data.words import WordTokenizer
from aigc_jax.errors import UserError

COLOURS = {  # name -> RGB in [0, 1]; all have a channel at 1, so hue survives scaling
    "red": (1.0, 0.0, 0.0), "orange": (1.0, 0.5, 0.0), "yellow": (1.0, 1.0, 0.0),
    "green": (0.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "blue": (0.0, 0.0, 1.0),
    "magenta": (1.0, 0.0, 1.0), "white": (1.0, 1.0, 1.0),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right",
             "bottom left", "bottom", "bottom right")  # index = 3 * row + col
RELATIONS = ("left of", "above")
DIGITS = tuple(str(d) for d in range(10))

# Templates: one-digit ones use {digit} {colour} {size} {position}; two-digit ones the same
# names with 0/1 suffixes and {relation} (digit 0 stands in the relation to digit 1).
TEMPLATES = (
    "a {size} {colour} {digit} in the {position}",
    "a {colour} {digit}",
    "the digit {digit} in {colour}",
    "a {size} {digit} at the {position}",
    "a {colour} {digit} in the {position}",
    "{position}: a {size} {colour} {digit}",
    "a {size} digit {digit}, {colour}, at the {position}",
    "two digits: a {colour0} {digit0} {relation} a {colour1} {digit1}",
    "a {size0} {colour0} {digit0} {relation} a {size1} {colour1} {digit1}",
    "a {digit0} {relation} a {digit1}",
    "two digits: a {size0} {digit0} {relation} a {size1} {digit1}",
)
TWO_DIGIT_TEMPLATES = tuple(i for i, t in enumerate(TEMPLATES) if "{relation}" in t)
HELDOUT_TEMPLATES = (5, 10)  # default `data.heldout_templates`

# The attribute record: int32 [RECORD_LEN]; -1 marks "absent" (second digit of a one-digit
# example) or "not stated" (a record parsed from a caption that leaves an attribute out).
FIELDS = ("digit", "colour", "size", "row", "col")
RECORD_HEAD = ("num_digits", "template", "relation")
RECORD_LEN = len(RECORD_HEAD) + 2 * len(FIELDS)


def field_index(instance: int, field: str) -> int:
    """Column of `field` of digit `instance` (0 or 1) in an attribute record."""
    return len(RECORD_HEAD) + instance * len(FIELDS) + FIELDS.index(field)


def glyph_sizes(canvas: int) -> tuple[int, int]:
    """(small, large) glyph sides in pixels on a `canvas`-pixel image: 8 and 14 at 32."""
    return canvas // 4, canvas * 7 // 16


def cell_origin(index: int, size: int, canvas: int) -> int:
    """Top/left pixel of a glyph of `size` in grid row/column `index` (0, 1, 2): flush with the
    edge, centred, flush with the other edge."""
    return int(round(index * (canvas - size) / 2))


def caption_words() -> list[str]:
    """Every word any template can produce: the fixed caption vocabulary."""
    values = {"digit": DIGITS, "colour": COLOUR_NAMES, "size": SIZES, "position": POSITIONS,
              "relation": RELATIONS}
    text = " ".join(TEMPLATES) + " " + " ".join(" ".join(v) for v in values.values())
    for name in list(values) + [f"{n}{i}" for n in values for i in (0, 1)]:
        text = text.replace("{" + name + "}", " ")
    return sorted(set(WordTokenizer.split(text)))


def render_caption(record: np.ndarray) -> str:
    """The caption of an attribute record, in the record's template."""
    r = record
    slots = {}
    for i in range(int(r[0])):
        suffix = "" if r[0] == 1 else str(i)
        slots["digit" + suffix] = DIGITS[r[field_index(i, "digit")]]
        slots["colour" + suffix] = COLOUR_NAMES[r[field_index(i, "colour")]]
        slots["size" + suffix] = SIZES[r[field_index(i, "size")]]
        slots["position" + suffix] = POSITIONS[3 * r[field_index(i, "row")] +
                                               r[field_index(i, "col")]]
    if r[0] == 2:
        slots["relation"] = RELATIONS[r[2]]
    return TEMPLATES[int(r[1])].format(**slots)


def parse_caption(caption: str) -> np.ndarray:
    """The attribute record a caption states (-1 for attributes it leaves out); the inverse of
    `render_caption` on the attributes a template mentions. Unparseable text is a UserError."""
    text = " ".join(WordTokenizer.split(caption))
    record = np.full(RECORD_LEN, -1, np.int32)
    relation = next((i for i, rel in enumerate(RELATIONS) if f" {rel} " in f" {text} "), -1)
    parts = [text]
    if relation >= 0:
        parts = [p.strip() for p in f" {text} ".split(f" {RELATIONS[relation]} ", 1)]
        record[2] = relation
    record[0] = len(parts)
    for i, part in enumerate(parts):
        words = part.split()
        digits = [w for w in words if w in DIGITS]
        if len(digits) != 1:
            raise UserError(f"caption {caption!r} names {len(digits)} digits where one per "
                            "object was expected.")
        record[field_index(i, "digit")] = DIGITS.index(digits[0])
        colours = [w for w in words if w in COLOURS]
        if colours:
            record[field_index(i, "colour")] = COLOUR_NAMES.index(colours[0])
        sizes = [w for w in words if w in SIZES]
        if sizes:
            record[field_index(i, "size")] = SIZES.index(sizes[0])
        padded = f" {part} "
        for p, name in sorted(enumerate(POSITIONS), key=lambda x: -len(x[1])):
            if f" {name} " in padded:  # longest name first: "top left" before "top"
                record[field_index(i, "row")], record[field_index(i, "col")] = divmod(p, 3)
                break
    return record


def resize_glyphs(glyphs: np.ndarray, size: int) -> np.ndarray:
    """uint8 glyphs [N, h, w] -> float32 [N, size, size] in [0, 1] (bilinear)."""
    out = [np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in glyphs]
    return np.stack(out).astype(np.float32) / 255.0


class CaptionedDigits(IndexedExamples):
    """One split of captioned digits: examples rendered on demand from (seed, split, index)."""

    def __init__(self, glyphs: np.ndarray, labels: np.ndarray, *, num_examples: int, seed: int,
                 split: str, canvas: int = 32, two_digit_fraction: float = 0.3,
                 templates: Sequence[int] = tuple(range(len(TEMPLATES))), source: str = "digits"):
        self.glyphs, self.labels = glyphs, labels.astype(np.int32)  # uint8 [N, h, w], [N]
        self.num_examples, self.seed, self.split = num_examples, seed, split
        self.canvas, self.two_digit_fraction = canvas, two_digit_fraction
        self.templates = tuple(int(t) for t in templates)
        self.single = [t for t in self.templates if t not in TWO_DIGIT_TEMPLATES]
        self.double = [t for t in self.templates if t in TWO_DIGIT_TEMPLATES]
        if not self.single:
            raise UserError("data.heldout_templates leaves no one-digit template for this split.")
        self.source = source
        self.sized = [resize_glyphs(glyphs, s) for s in glyph_sizes(canvas)]
        self.tokenizer = WordTokenizer(caption_words(), max_length=max_caption_tokens())
        self.num_classes = 10

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """[H, W, 3] of one image."""
        return (self.canvas, self.canvas, 3)

    def info(self) -> dict:
        """Shapes, vocabulary, templates and attribute names (saved as data_info.json)."""
        return {"kind": "image_text", "source": "captioned_digits", "glyphs": self.source,
                "image_shape": list(self.image_shape), "num_classes": 10,
                "tokenizer": self.tokenizer.to_info(), "templates": list(TEMPLATES),
                "split_templates": list(self.templates), "colours": list(COLOUR_NAMES),
                "sizes": list(SIZES), "positions": list(POSITIONS), "relations": list(RELATIONS),
                "record_fields": list(RECORD_HEAD) + [f"{f}{i}" for i in (0, 1) for f in FIELDS],
                "example_spec": {"image": [list(self.image_shape), "uint8"],
                                 "tokens": [[self.tokenizer.max_length], "int32"],
                                 "label": [[], "int32"],
                                 "attributes": [[RECORD_LEN], "int32"]}}

    def record(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(attribute record int32 [RECORD_LEN], glyph indices [2] (-1: none)) of example
        `index`: a pure function of (seed, split, index)."""
        rng = rng_for(self.seed, 7, {"train": 0, "test": 1}[self.split], index)
        s_small, s_large = glyph_sizes(self.canvas)
        two = rng.random() < self.two_digit_fraction and self.double
        n = 2 if two else 1
        r = np.full(RECORD_LEN, -1, np.int32)
        r[0] = n
        r[1] = rng.choice(self.double if two else self.single)
        glyph_idx = np.full(2, -1, np.int64)
        for i in range(n):
            glyph_idx[i] = rng.integers(len(self.glyphs))
            r[field_index(i, "digit")] = self.labels[glyph_idx[i]]
            r[field_index(i, "colour")] = rng.integers(len(COLOURS))
            r[field_index(i, "size")] = rng.integers(2)
        if n == 1:
            r[field_index(0, "row")], r[field_index(0, "col")] = divmod(rng.integers(9), 3)
            return r, glyph_idx
        r[2] = rng.integers(len(RELATIONS))
        for attempt in range(100):  # cells that keep the relation and do not overlap
            if attempt == 50:  # two small glyphs in distinct cells never overlap
                r[field_index(0, "size")] = r[field_index(1, "size")] = 0
            cells = rng.choice(9, 2, replace=False)
            (ra, ca), (rb, cb) = divmod(int(cells[0]), 3), divmod(int(cells[1]), 3)
            if (r[2] == 0 and ca >= cb) or (r[2] == 1 and ra >= rb):
                continue
            sides = [(s_small, s_large)[r[field_index(i, "size")]] for i in (0, 1)]
            boxes = [(cell_origin(row, s, self.canvas), cell_origin(col, s, self.canvas), s)
                     for (row, col), s in zip(((ra, ca), (rb, cb)), sides, strict=True)]
            if not _overlap(boxes[0], boxes[1], margin=max(self.canvas // 16, 2)):
                break
        r[field_index(0, "row")], r[field_index(0, "col")] = ra, ca
        r[field_index(1, "row")], r[field_index(1, "col")] = rb, cb
        return r, glyph_idx

    def render(self, record: np.ndarray, glyph_idx: np.ndarray) -> np.ndarray:
        """The uint8 [H, W, 3] image of a record drawn with the given source glyphs."""
        canvas = np.zeros((self.canvas, self.canvas, 3), np.float32)
        for i in range(int(record[0])):
            size_id = record[field_index(i, "size")]
            g = self.sized[size_id][glyph_idx[i]]  # [s, s] in [0, 1]
            s = g.shape[0]
            y = cell_origin(record[field_index(i, "row")], s, self.canvas)
            x = cell_origin(record[field_index(i, "col")], s, self.canvas)
            colour = np.asarray(COLOURS[COLOUR_NAMES[record[field_index(i, "colour")]]])
            region = canvas[y:y + s, x:x + s]
            np.maximum(region, g[..., None] * colour, out=region)
        return np.round(canvas * 255.0).astype(np.uint8)

    def examples(self, indices: np.ndarray) -> Batch:
        """The batch of examples `indices`: image, tokens, label (first digit), attributes."""
        imgs, recs = [], []
        for i in indices:
            r, g = self.record(int(i))
            imgs.append(self.render(r, g))
            recs.append(r)
        recs = np.stack(recs)
        tokens = self.tokenizer.encode_batch([render_caption(r) for r in recs])
        return {"image": np.stack(imgs), "tokens": tokens,
                "label": recs[:, field_index(0, "digit")].astype(np.int32), "attributes": recs}

    def captions(self, indices: np.ndarray) -> list[str]:
        """Caption strings of examples `indices`."""
        return [render_caption(self.record(int(i))[0]) for i in indices]


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int], margin: int) -> bool:
    (ya, xa, sa), (yb, xb, sb) = a, b
    return (ya < yb + sb + margin and yb < ya + sa + margin and
            xa < xb + sb + margin and xb < xa + sa + margin)


def max_caption_tokens() -> int:
    """Token budget of every caption (start and end tokens included), a multiple of 4."""
    longest = 0
    values = {"digit": "0", "colour": "magenta", "size": "small", "position": "bottom right",
              "relation": "left of"}
    for t in TEMPLATES:
        slots = {k + s: v for k, v in values.items() for s in ("", "0", "1")}
        longest = max(longest, len(WordTokenizer.split(t.format(**slots))))
    return -(-(longest + 2) // 4) * 4


def source_glyphs(cfg: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 glyphs [N, h, w], labels [N], source name) of a split: `digits` splits as the
    `digits` image source does; MNIST (data.glyphs="mnist") from the IDX files at data.path."""
    kind = str(cfg.get("glyphs", "digits"))
    if kind == "digits":
        images, labels, _ = image_lib.load_digits()
        images, labels = image_lib._holdout(images, labels, split, 1 / 6)
    elif kind == "mnist":
        images, labels, _ = image_lib.load_idx(str(cfg.path), split)
    else:
        raise UserError(f"data.glyphs={kind!r} is unknown; expected 'digits' or 'mnist'.")
    return images[..., 0], labels, kind


def create_captioned_digits(cfg: ml_collections.ConfigDict, split: str,
                            seed: int) -> CaptionedDigits:
    """The `split` of `data.name=captioned_digits` described by `config.data`."""
    canvas = int(cfg.get("image_size", 0) or 32)
    if canvas not in (32, 64):
        raise UserError(f"data.image_size={canvas} is not supported by captioned_digits; "
                        "expected 32 or 64.")
    heldout = tuple(int(t) for t in cfg.get("heldout_templates", HELDOUT_TEMPLATES))
    bad = [t for t in heldout if not 0 <= t < len(TEMPLATES)]
    if bad:
        raise UserError(f"data.heldout_templates has {bad}; templates are 0..{len(TEMPLATES) - 1}.")
    everything = tuple(range(len(TEMPLATES)))
    if bool(cfg.get("hold_out_templates", True)):
        templates = (tuple(t for t in everything if t not in heldout) if split == "train"
                     else heldout)
    else:
        templates = everything
    glyphs, labels, source = source_glyphs(cfg, split)
    n = int(cfg.get(f"num_{split}_examples", 50_000 if split == "train" else 1000))
    # The test split does not move with the run's seed, so test numbers compare across runs.
    return CaptionedDigits(glyphs, labels, num_examples=n,
                           seed=seed if split == "train" else image_lib.SPLIT_SEED,
                           split=split, canvas=canvas,
                           two_digit_fraction=float(cfg.get("two_digit_fraction", 0.3)),
                           templates=templates, source=source)


def all_fillings(template: str) -> list[tuple[dict, str]]:
    """Every (slot values by index, caption) of a one-digit template: prompt ensembles."""
    names = [n for n in ("digit", "colour", "size", "position") if "{" + n + "}" in template]
    choices = {"digit": DIGITS, "colour": COLOUR_NAMES, "size": SIZES, "position": POSITIONS}
    out = []
    for combo in itertools.product(*(range(len(choices[n])) for n in names)):
        slots = {n: choices[n][c] for n, c in zip(names, combo, strict=True)}
        out.append((dict(zip(names, combo, strict=True)), template.format(**slots)))
    return out
