"""The attribute checker: does an image show what its prompt says? (GenEval / T2I-CompBench).

Given images and attribute records of captioned digits (`aigc_jax.data.captions`; or captions,
parsed back with `parse_caption`), it finds the digit glyphs (foreground pixels, connected
components, split in two for two-digit prompts) and checks each stated attribute:

- digit: the shipped digits/MNIST classifier on the glyph's square crop, as gray;
- colour: the nearest named colour to the glyph's bright pixels, normalised by their maximum;
- size: the longer side of the glyph's bounding box against the small/large midpoint;
- position: the grid cell of the glyph's intensity centroid;
- relation: the order of the two centroids along x ("left of") or y ("above").

For two digits, the detected glyphs are matched to the prompt's objects in the way that agrees
on more of digit, colour and size, then positions and the relation are read off that match.
`accuracy` reports each attribute's share of correct checks and the share of images with
every stated attribute right ("all").
"""

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from aigc_jax.data import captions as cap
from aigc_jax.evaluation.classifier import LoadedClassifier, load_classifier

ATTRIBUTES = ("digit", "colour", "size", "position", "relation")
FOREGROUND = 48  # uint8 level (max over channels) above which a pixel is ink
PALETTE = np.asarray([cap.COLOURS[n] for n in cap.COLOUR_NAMES], np.float32)  # [8, 3]


def find_glyphs(image: np.ndarray, num: int) -> list[np.ndarray]:
    """Boolean masks [H, W] of the `num` glyphs of a uint8 [H, W, 3] image (fewer if the image
    has no ink): ink grouped by connected components of its dilation (so a glyph's broken
    strokes stay one), the two largest groups kept and the rest given to the nearer one."""
    ink = image.max(-1) > FOREGROUND
    if num == 1 or not ink.any():
        return [ink] if ink.any() else []
    grown = ndimage.binary_dilation(ink, np.ones((3, 3)), iterations=max(image.shape[0] // 32, 1))
    labels, n = ndimage.label(grown, structure=np.ones((3, 3)))
    labels = labels * ink
    if n < 2:
        return _split_in_two(ink)
    sizes = ndimage.sum(ink, labels, range(1, n + 1))
    order = np.argsort(-sizes) + 1
    seeds = [labels == order[0], labels == order[1]]
    centres = [np.argwhere(s).mean(0) for s in seeds]
    for lab in order[2:]:
        comp = labels == lab
        if comp.any():
            c = np.argwhere(comp).mean(0)
            k = int(np.argmin([np.linalg.norm(c - m) for m in centres]))
            seeds[k] = seeds[k] | comp
    return seeds


def _split_in_two(ink: np.ndarray) -> list[np.ndarray]:
    """Two-means on the ink's pixel coordinates (two touching glyphs)."""
    pts = np.argwhere(ink).astype(np.float32)
    spread = pts.max(0) - pts.min(0)
    axis = int(np.argmax(spread))
    centres = np.stack([pts[pts[:, axis].argmin()], pts[pts[:, axis].argmax()]])
    for _ in range(10):
        assign = np.linalg.norm(pts[:, None] - centres[None], axis=-1).argmin(1)
        centres = np.stack([pts[assign == k].mean(0) if (assign == k).any() else centres[k]
                            for k in (0, 1)])
    masks = []
    for k in (0, 1):
        m = np.zeros_like(ink)
        sel = pts[assign == k].astype(int)
        m[sel[:, 0], sel[:, 1]] = True
        masks.append(m)
    return masks


def glyph_attributes(image: np.ndarray, mask: np.ndarray,
                     others: np.ndarray | None = None) -> dict[str, float]:
    """Colour index, bounding-box side, centroid (y, x) and the square gray crop of one glyph
    (`others`: the other glyphs' ink, blanked out of the crop)."""
    # Faint edge pixels below the ink threshold still shape the digit: keep all but the
    # neighbourhood of the other glyphs.
    gray = image.max(-1).astype(np.float32)  # [H, W]
    if others is not None and others.any():
        gray = gray * ~ndimage.binary_dilation(others, np.ones((3, 3)),
                                               iterations=max(image.shape[0] // 16, 1))
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(y1 - y0, x1 - x0)
    pix = image[mask].astype(np.float32)  # [P, 3]
    bright = pix[pix.max(-1) >= 0.5 * pix.max()]
    rgb = bright.mean(0) / max(bright.mean(0).max(), 1e-6)
    colour = int(np.argmin(((PALETTE - rgb) ** 2).sum(-1)))
    cy, cx = ndimage.center_of_mass(gray)
    # Square crop centred on the box (sklearn digits fill their 8x8 box top to bottom).
    cyb, cxb = (y0 + y1) / 2, (x0 + x1) / 2
    top, left = int(round(cyb - side / 2)), int(round(cxb - side / 2))
    padded = np.pad(gray, side)
    crop = padded[top + side:top + 2 * side, left + side:left + 2 * side]
    crop = crop * (255.0 / max(crop.max(), 1e-6))
    return {"colour": colour, "side": float(side), "cy": float(cy), "cx": float(cx),
            "crop": crop}


class Checker:
    """Scores images against attribute records; `classifier` is "digits" or "mnist"."""

    def __init__(self, classifier: str | LoadedClassifier = "digits"):
        self.classifier = (load_classifier(classifier) if isinstance(classifier, str)
                           else classifier)
        # MNIST digits sit in a 20x20 box inside 28x28, sklearn's fill their 8x8 box.
        self.margin = 0.2 if self.classifier.input_size == 28 else 0.0

    def _classify(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros(0, np.int64)
        size = self.classifier.input_size
        from PIL import Image

        batch = []
        for c in crops:
            pad = int(round(self.margin * c.shape[0]))
            c = np.pad(c, pad)
            im = Image.fromarray(np.clip(c, 0, 255).astype(np.uint8)).resize(
                (size, size), Image.LANCZOS)
            batch.append(np.asarray(im)[..., None])
        _, logits = self.classifier.apply(np.stack(batch))
        return logits.argmax(-1)

    def check(self, images: np.ndarray, records: np.ndarray) -> dict[str, np.ndarray]:
        """Per image and attribute: 1 (holds), 0 (does not), -1 (not stated), float [N] each."""
        images, records = np.asarray(images), np.asarray(records)
        n_img, canvas = len(images), images.shape[1]
        small, large = cap.glyph_sizes(canvas)
        threshold = (small + large) / 2
        out = {a: np.full(n_img, -1.0) for a in ATTRIBUTES}
        found = []
        crops = []
        for img, rec in zip(images, records, strict=True):
            num = int(rec[0])
            masks = [m for m in find_glyphs(img, num) if m.any()]  # a speck can split off empty
            glyphs = [glyph_attributes(img, m, masks[1 - k] if len(masks) == 2 else None)
                      for k, m in enumerate(masks)]
            found.append(glyphs)
            crops += [g["crop"] for g in glyphs]
        digits = iter(self._classify(crops))
        for g_list in found:
            for g in g_list:
                g["digit"] = int(next(digits))
                g["size"] = int(g["side"] > threshold)
                g["row"] = min(int(g["cy"] * 3 // canvas), 2)
                g["col"] = min(int(g["cx"] * 3 // canvas), 2)
        for i, (rec, glyphs) in enumerate(zip(records, found, strict=True)):
            num = int(rec[0])
            stated = {a: [] for a in ATTRIBUTES}
            match = self._match(rec, glyphs)
            for k in range(num):
                g = match[k] if k < len(match) else None
                for field in ("digit", "colour", "size"):
                    want = rec[cap.field_index(k, field)]
                    if want >= 0:
                        stated[field].append(g is not None and g[field] == want)
                row, col = rec[cap.field_index(k, "row")], rec[cap.field_index(k, "col")]
                if row >= 0:
                    stated["position"].append(g is not None and (g["row"], g["col"]) == (row, col))
            if num == 2 and rec[2] >= 0:
                ok = len(match) == 2
                if ok:
                    a, b = match
                    ok = a["cx"] < b["cx"] if rec[2] == 0 else a["cy"] < b["cy"]
                stated["relation"].append(ok)
            for a, v in stated.items():
                if v:
                    out[a][i] = float(all(v))
        return out

    @staticmethod
    def _match(rec: np.ndarray, glyphs: list[dict]) -> list[dict]:
        """Glyphs in the order of the record's objects (the assignment agreeing on more)."""
        if int(rec[0]) == 1 or len(glyphs) < 2:
            return glyphs

        def agree(k: int, g: dict) -> int:
            return sum(int(g[f] == rec[cap.field_index(k, f)])
                       for f in ("digit", "colour", "size"))

        straight = agree(0, glyphs[0]) + agree(1, glyphs[1])
        swapped = agree(0, glyphs[1]) + agree(1, glyphs[0])
        return glyphs if straight >= swapped else [glyphs[1], glyphs[0]]


def accuracy(checks: dict[str, np.ndarray]) -> dict[str, float]:
    """Share of correct checks per attribute (over images that state it) and "all": images
    with every stated attribute right."""
    out = {}
    stated_any = np.zeros_like(next(iter(checks.values())), bool)
    all_ok = np.ones_like(stated_any)
    for a, v in checks.items():
        stated = v >= 0
        if stated.any():
            out[a] = float(v[stated].mean())
        stated_any |= stated
        all_ok &= (v != 0)
    out["all"] = float(all_ok[stated_any].mean()) if stated_any.any() else float("nan")
    return out


def check_captions(images: np.ndarray, captions: Sequence[str],
                   checker: Checker | None = None) -> dict[str, float]:
    """Attribute accuracy of images against the attributes their captions state."""
    records = np.stack([cap.parse_caption(c) for c in captions])
    return accuracy((checker or Checker()).check(images, records))
