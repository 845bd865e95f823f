"""A small, seeded "captioned scenes" dataset in the on-disk layout this project uses for MSCOCO.

Why it exists: the full pipeline (pretrain -> noisy fine-tuning with NPC -> retrieval evaluation)
must be runnable end to end on a laptop CPU in minutes, with no downloads. Real image-text data is
replaced by rendered scenes of coloured shapes whose captions are generated from the scene, so that
retrieval is solvable but *compositional*: every single word (a colour, a shape, "left of") is shared
by many images; only combinations such as "red circle left of a blue square" single one out.

Layout written under ``root`` (the same as the real MSCOCO layout, so the same data code reads it)::

    images/COCO_2014_%012d.jpg          every image of every split (ids unique across splits)
    annotations/scan_split/
        pretrain_caps.txt pretrain_ids.txt   "web pretraining" split; ids one line per image
        train_caps.txt    train_ids.txt      captions one a line; ids one line per image
        dev_caps.txt      dev_ids.txt        ids one line per caption (each repeated num_anns times)
        test_caps.txt     test_ids.txt
    demo_info.json                      written last: its presence means the dataset is complete

Captions ``num_anns*k .. num_anns*k + num_anns - 1`` of a split belong to its ``k``-th image.

Domain shift, standing in for "web-pretrained CLIP vs MSCOCO": ``pretrain`` scenes hold fewer objects
and their captions are alt-text-like (attribute lists, "a photo of ...", tags, rarely a relation),
while train/dev/test captions are COCO-like sentences that mostly describe spatial relations and
absolute positions. The vocabulary is shared, so a model pretrained on ``pretrain`` transfers but
has clear room to improve by fine-tuning on ``train``.

Determinism: every random draw comes from ``np.random.default_rng`` seeded by a ``SeedSequence``
keyed on ``(seed, split, image index, purpose)``. An image therefore depends only on the seed, its
split and its index: growing one split leaves every other file's content unchanged, and the same
seed and sizes give byte-identical files (with the same Pillow/libjpeg build).
"""
from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .io import atomic_write_bytes, atomic_write_json, atomic_write_lines, atomic_write_text

DEMO_VERSION: int = 1

INFO_NAME = "demo_info.json"
# Written first and kept: marks a folder as ours, so regenerating may delete stale demo images but a
# real dataset (which lacks both this marker and demo_info.json) is never overwritten.
MARKER_NAME = ".npc_synthetic"
IMAGE_PATTERN = "COCO_2014_%012d.jpg"
ANN_SUBDIR = os.path.join("annotations", "scan_split")
SPLITS: Tuple[str, ...] = ("pretrain", "train", "dev", "test")
# Ids are split_base + index: independent of the other splits' sizes and far from 0..n-1, so code
# that wrongly uses an image id as a row index fails loudly instead of silently working.
_ID_BASE = {"train": 1_000_000, "dev": 2_000_000, "test": 3_000_000, "pretrain": 4_000_000}
_MAX_PER_SPLIT = 999_999
_SPLIT_KEY = {"pretrain": 0, "train": 1, "dev": 2, "test": 3}
_JPEG_QUALITY = 90
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down, for clean edges at 32-64 px

# ----------------------------------------------------------------------------------------------
# Scene vocabulary
# ----------------------------------------------------------------------------------------------

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring", "star")
SIZES: Tuple[str, ...] = ("small", "large")
BACKGROUNDS: Dict[str, Tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "beige": (222, 205, 170),
    "brown": (95, 70, 50),
}
TEXTURES: Tuple[str, ...] = ("plain", "striped", "checkered", "dotted")
# Object colours too close to a background (in lightness) to read at 32 px are never put on it.
_LOW_CONTRAST = {"beige": ("white", "yellow"), "brown": ("black",), "grey": ()}

# Surface words, most common first. Synonyms must not contain another shape's or colour's word
# (no "hollow circle" for ring), so a caption's words can be checked against its scene.
SHAPE_WORDS: Dict[str, Tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box"),
    "triangle": ("triangle", "triangular shape"),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
    "ring": ("ring", "donut", "hoop"),
    "star": ("star", "star shape"),
}
_SHAPE_PLURAL = {"box": "boxes", "cross": "crosses", "rhombus": "rhombuses", "plus sign": "plus signs"}
COLOUR_WORDS: Dict[str, Tuple[str, ...]] = {c: (c,) for c in COLOURS}
COLOUR_WORDS["purple"] = ("purple", "violet")
BACKGROUND_WORDS: Dict[str, Tuple[str, ...]] = {
    "grey": ("grey", "gray"),
    "beige": ("beige", "cream"),
    "brown": ("brown",),
}
SIZE_WORDS: Dict[str, Tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
_TEXTURE_WORDS = {"plain": ("plain",), "striped": ("striped",), "checkered": ("checkered", "checked"),
                  "dotted": ("dotted", "spotted")}
_GENERIC_NOUNS = ("shape", "object", "figure")
_GENERIC_PLURALS = ("shapes", "objects", "figures")
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

# Relative relations: the phrase reads "<A> <phrase> <B>".
RELATION_WORDS: Dict[str, Tuple[str, ...]] = {
    "left": ("to the left of", "left of", "on the left side of"),
    "right": ("to the right of", "right of", "on the right side of"),
    "above": ("above", "over", "higher than"),
    "below": ("below", "under", "beneath", "underneath"),
}
_FRONTED_WORDS = {"left": ("to the left of",), "right": ("to the right of",), "above": ("above",),
                  "below": ("below", "under", "beneath")}
_NEAR_WORDS = ("next to", "beside", "near")
_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}

# Absolute positions, keyed by (row, column) of the object's centre.
_ABS_WORDS: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("top", "left"): ("in the top left corner", "at the top left", "in the upper left"),
    ("top", "centre"): ("at the top", "near the top", "at the top of the picture"),
    ("top", "right"): ("in the top right corner", "at the top right", "in the upper right"),
    ("middle", "left"): ("on the left", "on the left side", "at the left"),
    ("middle", "centre"): ("in the centre", "in the middle", "in the center"),
    ("middle", "right"): ("on the right", "on the right side", "at the right"),
    ("bottom", "left"): ("in the bottom left corner", "at the bottom left", "in the lower left"),
    ("bottom", "centre"): ("at the bottom", "near the bottom", "at the bottom of the picture"),
    ("bottom", "right"): ("in the bottom right corner", "at the bottom right", "in the lower right"),
}

# Object-count distributions (index = number of objects). Pretrain scenes are simpler, like web
# images whose alt text names one or two things.
_COUNT_PROBS = {
    "pretrain": (0.0, 0.35, 0.40, 0.20, 0.05),
    "train": (0.0, 0.10, 0.35, 0.40, 0.15),
}
_RADIUS = {"small": 0.10, "large": 0.17}  # fraction of the image side
_REL_MARGIN = 0.08  # a directional relation needs this much (normalised) dominance of one axis


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    cx: float  # centre, as a fraction of the image side (y grows downwards)
    cy: float
    radius: float  # fraction of the image side
    rotation: float  # degrees, small jitter only, so squares never turn into diamonds
    rgb: Tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    background: str
    texture: str
    texture_axis: int  # 0: horizontal stripes, 1: vertical (striped texture only)
    bg_rgb: Tuple[int, int, int]
    objects: Tuple[SceneObject, ...]


@dataclass(frozen=True)
class SceneRecord:
    split: str
    index: int
    image_id: int
    scene: Scene
    captions: Tuple[str, ...]


# ----------------------------------------------------------------------------------------------
# Randomness helpers
# ----------------------------------------------------------------------------------------------


def _rng(seed: int, split: str, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEY[split], index, purpose)))


def _choice(rng: np.random.Generator, items: Sequence, weights: Optional[Sequence[float]] = None):
    if weights is None:
        return items[int(rng.integers(len(items)))]
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def _word(rng: np.random.Generator, words: Sequence[str], p_first: float) -> str:
    """The first (plain) word with probability ``p_first``, else a uniformly drawn synonym."""
    if len(words) == 1 or rng.random() < p_first:
        return words[0]
    return words[1 + int(rng.integers(len(words) - 1))]


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


def _jitter(rgb: Tuple[int, int, int], rng: np.random.Generator, light: int, hue: int) -> Tuple[int, int, int]:
    """Shift lightness by up to ``light`` and each channel by up to ``hue`` (kept small: an
    independent per-channel shift quickly turns grey into mauve or brown into olive)."""
    d = int(rng.integers(-light, light + 1)) + rng.integers(-hue, hue + 1, size=3)
    return tuple(int(np.clip(c + int(x), 0, 255)) for c, x in zip(rgb, d))  # type: ignore[return-value]


def _relation(a: SceneObject, b: SceneObject) -> Optional[str]:
    """Where ``a`` is relative to ``b`` ("left" = a is left of b), or None when ambiguous."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) >= abs(dy) + _REL_MARGIN:
        return "left" if dx > 0 else "right"
    if abs(dy) >= abs(dx) + _REL_MARGIN:
        return "above" if dy > 0 else "below"
    return None


def _abs_position(o: SceneObject) -> Tuple[str, str]:
    col = "left" if o.cx < 0.4 else ("right" if o.cx > 0.6 else "centre")
    row = "top" if o.cy < 0.4 else ("bottom" if o.cy > 0.6 else "middle")
    return row, col


def _place(rng: np.random.Generator, sizes: Sequence[str]) -> Optional[List[Tuple[float, float, float]]]:
    """Non-overlapping (cx, cy, r) for the given sizes, or None if rejection sampling gets stuck."""
    placed: List[Tuple[float, float, float]] = []
    for size in sizes:
        r = _RADIUS[size] * float(rng.uniform(0.92, 1.08))
        for _ in range(100):
            cx, cy = (float(v) for v in rng.uniform(r + 0.03, 1.0 - r - 0.03, size=2))
            if all(math.hypot(cx - px, cy - py) > r + pr + 0.04 for px, py, pr in placed):
                placed.append((cx, cy, r))
                break
        else:
            return None
    return placed


def _make_scene(rng: np.random.Generator, split: str) -> Scene:
    probs = _COUNT_PROBS["pretrain" if split == "pretrain" else "train"]
    bg = _choice(rng, list(BACKGROUNDS))
    texture = _choice(rng, TEXTURES, (0.4, 0.2, 0.2, 0.2))
    axis = int(rng.integers(2))
    allowed = [c for c in COLOURS if c not in _LOW_CONTRAST[bg]]
    while True:
        n = int(rng.choice(len(probs), p=probs))
        # Distinct (colour, shape) pairs keep "the red circle" unambiguous within a scene; shapes
        # and colours may repeat, which is what makes retrieval need their binding.
        kinds: List[Tuple[str, str]] = []
        while len(kinds) < n:
            kind = (_choice(rng, allowed), _choice(rng, SHAPES))
            if kind not in kinds:
                kinds.append(kind)
        sizes = [_choice(rng, SIZES) for _ in range(n)]
        for _ in range(20):
            spots = _place(rng, sizes)
            if spots is None:
                continue
            objs = tuple(
                SceneObject(shape=s, colour=c, size=z, cx=cx, cy=cy, radius=r,
                            rotation=float(rng.uniform(-12, 12)), rgb=_jitter(COLOURS[c], rng, 12, 8))
                for (c, s), z, (cx, cy, r) in zip(kinds, sizes, spots)
            )
            # Multi-object scenes must offer at least one clear directional relation to describe.
            if n == 1 or any(_relation(a, b) for a in objs for b in objs if a is not b):
                return Scene(bg, texture, axis, _jitter(BACKGROUNDS[bg], rng, 12, 3), objs)
        # Could not lay these sizes out (e.g. four large objects): redraw the whole scene.


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _polygon(o: SceneObject, scale: float) -> List[Tuple[float, float]]:
    cx, cy, r = o.cx * scale, o.cy * scale, o.radius * scale
    if o.shape == "square":
        h = r * 0.85
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif o.shape == "triangle":
        pts = [(r * math.sin(a), -r * math.cos(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        pts = [(x, y + r * 0.15) for x, y in pts]  # centre the bounding box, not the centroid
    elif o.shape == "diamond":
        pts = [(0.0, -r), (r * 0.7, 0.0), (0.0, r), (-r * 0.7, 0.0)]
    elif o.shape == "cross":
        t = r * 0.33
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t),
               (-r, -t), (-t, -t)]
    elif o.shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = i * math.pi / 5
            pts.append((rad * math.sin(a), -rad * math.cos(a)))
    else:
        raise ValueError(o.shape)
    th = math.radians(o.rotation)
    c, s = math.cos(th), math.sin(th)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _background(scene: Scene, side: int) -> np.ndarray:
    """Background at supersampled resolution; textures are subtle (+-18) so shapes stay salient."""
    img = np.empty((side, side, 3), dtype=np.int16)
    img[:] = scene.bg_rgb
    period = max(2, side // 8)
    yy, xx = np.mgrid[0:side, 0:side]
    if scene.texture == "striped":
        mask = ((yy if scene.texture_axis == 0 else xx) // (period // 2)) % 2 == 0
    elif scene.texture == "checkered":
        mask = ((yy // period) + (xx // period)) % 2 == 0
    elif scene.texture == "dotted":
        dy = (yy % period) - period / 2
        dx = (xx % period) - period / 2
        mask = dx * dx + dy * dy <= (period * 0.18) ** 2
    else:
        return img.astype(np.uint8)
    lighter = sum(scene.bg_rgb) < 3 * 128
    img[mask] += 18 if lighter else -18
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    side = image_size * _SUPERSAMPLE
    canvas = Image.fromarray(_background(scene, side), "RGB")
    draw = ImageDraw.Draw(canvas)
    for o in scene.objects:
        if o.shape in ("circle", "ring"):
            cx, cy, r = o.cx * side, o.cy * side, o.radius * side
            box = (cx - r, cy - r, cx + r, cy + r)
            if o.shape == "circle":
                draw.ellipse(box, fill=o.rgb)
            else:
                draw.ellipse(box, outline=o.rgb, width=max(1, int(round(r * 0.42))))
        else:
            draw.polygon(_polygon(o, side), fill=o.rgb)
    img = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    # Mild sensor-like noise so images are not piecewise constant (and JPEG artefacts vary).
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-4, 5, size=(image_size, image_size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # 4:4:4 chroma: with 4:2:0 a 6 px shape's colour bleeds into the background at 32-64 px.
    img.save(buf, format="JPEG", quality=_JPEG_QUALITY, subsampling=0, optimize=False, progressive=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def _join(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


class _Talker:
    """Surface-form choices for one caption style (``coco`` for train/dev/test, ``web`` for pretrain)."""

    def __init__(self, rng: np.random.Generator, style: str):
        self.rng = rng
        self.web = style == "web"
        # Web alt text mostly uses the plain word; COCO annotators vary their wording more.
        self.p_plain = 0.85 if self.web else 0.6

    def noun(self, o: SceneObject) -> str:
        return _word(self.rng, SHAPE_WORDS[o.shape], self.p_plain)

    def colour(self, o: SceneObject) -> str:
        return _word(self.rng, COLOUR_WORDS[o.colour], self.p_plain)

    def size(self, o: SceneObject) -> str:
        return _word(self.rng, SIZE_WORDS[o.size], self.p_plain)

    def bg(self, scene: Scene, with_texture: Optional[bool] = None) -> str:
        words = [_word(self.rng, BACKGROUND_WORDS[scene.background], self.p_plain)]
        if with_texture is None:
            with_texture = scene.texture != "plain" and self.rng.random() < 0.5
        if with_texture and scene.texture != "plain":
            words.insert(0, _word(self.rng, _TEXTURE_WORDS[scene.texture], self.p_plain))
        return " ".join(words)

    def bare(self, o: SceneObject, p_size: float = 0.35, force_size: bool = False, partial: bool = True) -> str:
        """Object phrase without article: "[size] [colour] shape", sometimes only colour or shape."""
        mode = "full"
        if partial:
            mode = _choice(self.rng, ("full", "shape", "colour"), (0.84, 0.08, 0.08))
        words: List[str] = []
        if force_size or self.rng.random() < p_size:
            words.append(self.size(o))
        if mode != "shape":
            words.append(self.colour(o))
        words.append(self.noun(o) if mode != "colour" else _choice(self.rng, _GENERIC_NOUNS))
        return " ".join(words)

    def np(self, o: SceneObject, definite: bool = False, **kw) -> str:
        phrase = self.bare(o, **kw)
        return "the " + phrase if definite else _article(phrase)

    def rel(self, r: str) -> str:
        return _word(self.rng, RELATION_WORDS[r], 0.5)

    def abs(self, o: SceneObject) -> str:
        return _word(self.rng, _ABS_WORDS[_abs_position(o)], 0.5)

    def shuffled(self, objs: Sequence[SceneObject]) -> List[SceneObject]:
        return [objs[i] for i in self.rng.permutation(len(objs))]

    def subset(self, objs: Sequence[SceneObject], min_k: int = 1) -> List[SceneObject]:
        k = int(self.rng.integers(min_k, len(objs) + 1))
        return self.shuffled(objs)[:k]

    def pair(self, scene: Scene) -> Optional[Tuple[SceneObject, SceneObject, str]]:
        pairs = [(a, b, r) for a in scene.objects for b in scene.objects if a is not b
                 for r in [_relation(a, b)] if r]
        return _choice(self.rng, pairs) if pairs else None


Template = Callable[[_Talker, Scene], Optional[str]]


def _sentence(t: _Talker, text: str) -> str:
    """COCO captions: capitalised and mostly full-stopped; a few are lowercase or unpunctuated."""
    u = t.rng.random()
    if u < 0.06:
        return text.lower()
    text = text[0].upper() + text[1:]
    return text if u < 0.16 else text + "."


# --- COCO-like templates (train/dev/test) -----------------------------------------------------


def _c_rel(t: _Talker, s: Scene) -> Optional[str]:
    p = t.pair(s)
    if not p:
        return None
    a, b, r = p
    lead = _choice(t.rng, ("", "there is ", "there's ", "you can see "), (0.55, 0.25, 0.1, 0.1))
    return _sentence(t, f"{lead}{t.np(a)} {t.rel(r)} {t.np(b)}")


def _c_rel_definite(t: _Talker, s: Scene) -> Optional[str]:
    p = t.pair(s)
    if not p:
        return None
    a, b, r = p
    verb = _choice(t.rng, ("is", "sits", "is placed", "appears"), (0.55, 0.15, 0.15, 0.15))
    return _sentence(t, f"{t.np(a, definite=True, partial=False)} {verb} {t.rel(r)} "
                        f"{t.np(b, definite=True, partial=False)}")


def _c_rel_fronted(t: _Talker, s: Scene) -> Optional[str]:
    p = t.pair(s)
    if not p:
        return None
    a, b, r = p
    verb = _choice(t.rng, ("there is", "is", "we see"))
    # Only phrases that read well sentence-initially ("Higher than a box is ..." does not).
    rel = _choice(t.rng, _FRONTED_WORDS[r])
    return _sentence(t, f"{rel} {t.np(b)} {verb} {t.np(a)}")


def _c_rel_picture(t: _Talker, s: Scene) -> Optional[str]:
    p = t.pair(s)
    if not p:
        return None
    a, b, r = p
    head = _choice(t.rng, ("a picture", "an image", "a drawing", "a simple scene", "a graphic"))
    verb = _choice(t.rng, ("with", "showing", "of"))
    return _sentence(t, f"{head} {verb} {t.np(a)} {t.rel(r)} {t.np(b)}")


def _c_rel_bg(t: _Talker, s: Scene) -> Optional[str]:
    p = t.pair(s)
    if not p:
        return None
    a, b, r = p
    return _sentence(t, f"on a {t.bg(s)} background, {t.np(a)} {t.rel(r)} {t.np(b)}")


def _c_rel_plus(t: _Talker, s: Scene) -> Optional[str]:
    p = t.pair(s)
    if not p or len(s.objects) < 3:
        return None
    a, b, r = p
    c = _choice(t.rng, [o for o in s.objects if o is not a and o is not b])
    return _sentence(t, f"{t.np(a)} {t.rel(r)} {t.np(b)}, and {t.np(c)} {t.abs(c)}")


def _c_between(t: _Talker, s: Scene) -> Optional[str]:
    objs = s.objects
    options = []
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            for k, c in enumerate(objs):
                if i not in (j, k) and j < k:
                    rb, rc = _relation(b, a), _relation(c, a)
                    if rb and rc and _OPPOSITE[rb] == rc:
                        options.append((a, b, c))
    if not options:
        return None
    a, b, c = _choice(t.rng, options)
    head = _choice(t.rng, ("", "there is "), (0.7, 0.3))
    return _sentence(t, f"{head}{t.np(a)} between {t.np(b)} and {t.np(c)}")


def _c_near(t: _Talker, s: Scene) -> Optional[str]:
    if len(s.objects) < 2:
        return None
    a, b = t.shuffled(s.objects)[:2]
    return _sentence(t, f"{t.np(a)} {_choice(t.rng, _NEAR_WORDS)} {t.np(b)}")


def _c_abs(t: _Talker, s: Scene) -> Optional[str]:
    a = _choice(t.rng, s.objects)
    head = _choice(t.rng, ("", "there is ", "there's "), (0.6, 0.3, 0.1))
    return _sentence(t, f"{head}{t.np(a)} {t.abs(a)}")


def _c_abs_and(t: _Talker, s: Scene) -> Optional[str]:
    if len(s.objects) < 2:
        return None
    a, b = t.shuffled(s.objects)[:2]
    return _sentence(t, f"there is {t.np(a)} {t.abs(a)} and {t.np(b)}")


def _c_abs_two(t: _Talker, s: Scene) -> Optional[str]:
    if len(s.objects) < 2:
        return None
    a, b = t.shuffled(s.objects)[:2]
    if _abs_position(a) == _abs_position(b):
        return None
    if t.rng.random() < 0.5:
        return _sentence(t, f"{t.np(a)} {t.abs(a)} and {t.np(b)} {t.abs(b)}")
    return _sentence(t, f"{t.abs(a)} {t.np(a)}, {t.abs(b)} {t.np(b)}")


def _c_count_list(t: _Talker, s: Scene) -> Optional[str]:
    n = len(s.objects)
    if n < 2:
        return None
    noun = _choice(t.rng, _GENERIC_PLURALS)
    head = _choice(t.rng, (f"{_NUMBER_WORDS[n]} {noun}", f"{_NUMBER_WORDS[n]} {noun} on a {t.bg(s)} background"))
    items = [t.np(o, partial=False) for o in t.shuffled(s.objects)]
    return _sentence(t, f"{head}: {_join(items)}")


def _c_list_bg(t: _Talker, s: Scene) -> Optional[str]:
    items = [t.np(o) for o in t.subset(s.objects)]
    where = _choice(t.rng, ("on a {} background", "against a {} backdrop", "over a {} background"))
    return _sentence(t, f"{_join(items)} {where.format(t.bg(s))}")


def _c_bg_first(t: _Talker, s: Scene) -> Optional[str]:
    items = [t.np(o) for o in t.subset(s.objects)]
    return _sentence(t, f"{_article(t.bg(s))} background with {_join(items)}")


def _c_sizes(t: _Talker, s: Scene) -> Optional[str]:
    big = [o for o in s.objects if o.size == "large"]
    small = [o for o in s.objects if o.size == "small"]
    if not big or not small:
        return None
    a, b = _choice(t.rng, big), _choice(t.rng, small)
    if t.rng.random() < 0.5:
        a, b = b, a
    return _sentence(t, f"{t.np(a, force_size=True, partial=False)} and {t.np(b, force_size=True, partial=False)}")


def _c_single(t: _Talker, s: Scene) -> Optional[str]:
    if len(s.objects) != 1:
        return None
    a = s.objects[0]
    form = int(t.rng.integers(4))
    if form == 0:
        return _sentence(t, f"a single {t.bare(a, partial=False)} on a {t.bg(s)} background")
    if form == 1:
        return _sentence(t, f"just one {_choice(t.rng, _GENERIC_NOUNS)}: {t.np(a, partial=False)} {t.abs(a)}")
    if form == 2:
        return _sentence(t, f"only {t.np(a)} in the picture")
    return _sentence(t, f"{t.np(a)} alone on a {t.bg(s)} background")


_COCO_TEMPLATES: Tuple[Tuple[Template, float], ...] = (
    (_c_rel, 3.0), (_c_rel_definite, 2.0), (_c_rel_fronted, 1.5), (_c_rel_picture, 1.5), (_c_rel_bg, 1.0),
    (_c_rel_plus, 1.5), (_c_between, 1.5), (_c_near, 0.8), (_c_abs, 2.0), (_c_abs_and, 1.2),
    (_c_abs_two, 1.2), (_c_count_list, 1.5), (_c_list_bg, 1.2), (_c_bg_first, 0.8), (_c_sizes, 0.8),
    (_c_single, 4.0),
)

# --- web alt-text-like templates (pretrain) ---------------------------------------------------


def _web(t: _Talker, text: str) -> str:
    """Alt text: lowercase, usually no final full stop."""
    return text if t.rng.random() < 0.8 else text + "."


def _w_list(t: _Talker, s: Scene) -> Optional[str]:
    return _web(t, ", ".join(t.bare(o) for o in t.subset(s.objects)))


def _w_photo(t: _Talker, s: Scene) -> Optional[str]:
    head = _choice(t.rng, ("a photo of", "an illustration of", "a picture of", "clipart of", "image of"))
    items = [t.np(o) for o in t.subset(s.objects)]
    return _web(t, f"{head} {_join(items)}")


def _w_tags(t: _Talker, s: Scene) -> Optional[str]:
    # A bag of tags loses colour-shape binding, like noisy keyword alt text.
    tags: List[str] = []
    for o in t.subset(s.objects):
        tags += [t.colour(o), t.noun(o)]
    if t.rng.random() < 0.4:
        tags.append(t.bg(s, with_texture=False))
    return _web(t, " ".join(tags) if t.rng.random() < 0.5 else ", ".join(tags))


def _w_attrs(t: _Talker, s: Scene) -> Optional[str]:
    o = _choice(t.rng, s.objects)
    return _web(t, f"shape: {t.noun(o)}, colour: {t.colour(o)}, size: {t.size(o)}")


def _w_count(t: _Talker, s: Scene) -> Optional[str]:
    n = len(s.objects)
    if n < 2:
        return None
    return _web(t, f"{n} shapes: " + ", ".join(t.bare(o, partial=False) for o in t.shuffled(s.objects)))


def _w_on_bg(t: _Talker, s: Scene) -> Optional[str]:
    o = _choice(t.rng, s.objects)
    tail = _choice(t.rng, ("on {}", "on {} background", "on a {} background"))
    return _web(t, f"{t.bare(o)} {tail.format(t.bg(s))}")


def _w_icon(t: _Talker, s: Scene) -> Optional[str]:
    o = _choice(t.rng, s.objects)
    form = _choice(t.rng, ("{} icon", "clip art {}", "{} vector graphic", "simple {}"))
    return _web(t, form.format(t.bare(o, partial=False)))


def _w_and(t: _Talker, s: Scene) -> Optional[str]:
    if len(s.objects) < 2:
        return None
    a, b = t.shuffled(s.objects)[:2]
    return _web(t, f"{t.np(a)} and {t.np(b)}")


def _w_rel(t: _Talker, s: Scene) -> Optional[str]:
    p = t.pair(s)
    if not p:
        return None
    a, b, r = p
    return _web(t, f"{t.bare(a, partial=False)} {t.rel(r)} {t.bare(b, partial=False)}")


def _w_abs(t: _Talker, s: Scene) -> Optional[str]:
    o = _choice(t.rng, s.objects)
    row, col = _abs_position(o)
    if t.rng.random() < 0.5:
        where = t.abs(o)
    elif (row, col) == ("middle", "centre"):
        where = "center"
    else:
        where = " ".join(w for w in (row, col) if w not in ("middle", "centre"))
    return _web(t, f"{t.bare(o, partial=False)} {where}")


_WEB_TEMPLATES: Tuple[Tuple[Template, float], ...] = (
    (_w_list, 3.0), (_w_photo, 2.5), (_w_tags, 0.8), (_w_attrs, 1.0), (_w_count, 1.2), (_w_on_bg, 1.5),
    (_w_icon, 1.0), (_w_and, 1.5), (_w_rel, 1.0), (_w_abs, 0.8),
)


def describe_scene(scene: Scene, rng: np.random.Generator, style: str = "coco", num: int = 5) -> List[str]:
    """``num`` captions of ``scene``, distinct where the templates allow.

    ``style`` is ``"coco"`` (train/dev/test: sentences, mostly relations and positions) or ``"web"``
    (pretrain: alt-text-like lists and tags, rarely a relation).
    """
    if style not in ("coco", "web"):
        raise ValueError(f"unknown caption style {style!r}")
    t = _Talker(rng, style)
    templates = _WEB_TEMPLATES if style == "web" else _COCO_TEMPLATES
    fns = [f for f, _ in templates]
    weights = [w for _, w in templates]
    caps: List[str] = []
    attempts = 0
    while len(caps) < num:
        attempts += 1
        cap = _choice(rng, fns, weights)(t, scene)
        # Duplicates are allowed only after many tries (a one-object scene has few distinct captions).
        if cap and (cap not in caps or attempts > 60):
            caps.append(cap)
    return caps


def split_records(split: str, n: int, *, seed: int = 0, num_anns: int = 5) -> Iterator[SceneRecord]:
    """Scenes and captions of a split, without rendering (the generator's ground truth)."""
    if split not in _SPLIT_KEY:
        raise ValueError(f"unknown split {split!r}")
    style = "web" if split == "pretrain" else "coco"
    for k in range(n):
        scene = _make_scene(_rng(seed, split, k, 0), split)
        caps = describe_scene(scene, _rng(seed, split, k, 1), style, num_anns)
        yield SceneRecord(split, k, _ID_BASE[split] + k, scene, tuple(caps))


# ----------------------------------------------------------------------------------------------
# Dataset on disk
# ----------------------------------------------------------------------------------------------


def _size_params(seed: int, n_pretrain: int, n_train: int, n_dev: int, n_test: int, image_size: int,
                 num_anns: int) -> Dict[str, int]:
    return {"seed": seed, "n_pretrain": n_pretrain, "n_train": n_train, "n_dev": n_dev, "n_test": n_test,
            "image_size": image_size, "num_anns": num_anns}


def _check_params(p: Dict[str, int]) -> None:
    if not isinstance(p["seed"], (int, np.integer)) or p["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {p['seed']!r}")
    for split in SPLITS:
        n = p[f"n_{split}"]
        lo = 0 if split == "pretrain" else 1
        if not lo <= n <= _MAX_PER_SPLIT:
            raise ValueError(f"n_{split} must be in [{lo}, {_MAX_PER_SPLIT}], got {n}")
    if p["image_size"] < 16:
        raise ValueError(f"image_size must be >= 16, got {p['image_size']}")
    if p["num_anns"] < 1:
        raise ValueError(f"num_anns must be >= 1, got {p['num_anns']}")


def _claim_root(root: Path) -> None:
    """Refuse to write into a folder that holds a dataset we did not generate."""
    ours = (root / MARKER_NAME).exists() or (root / INFO_NAME).exists()
    foreign = (root / "images").exists() or (root / "annotations").exists()
    if foreign and not ours:
        raise FileExistsError(
            f"{root} already holds images/ or annotations/ that npc.synthetic did not write; "
            "refusing to overwrite it (pick an empty folder for the demo dataset)")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / MARKER_NAME, "written by npc.synthetic; safe to regenerate\n")


def generate_demo_dataset(root, *, seed: int = 0, n_pretrain: int = 4000, n_train: int = 2000, n_dev: int = 200,
                          n_test: int = 500, image_size: int = 64, num_anns: int = 5, progress: bool = True) -> dict:
    """Write the whole demo dataset under ``root`` and return the info dict saved as demo_info.json."""
    params = _size_params(seed, n_pretrain, n_train, n_dev, n_test, image_size, num_anns)
    _check_params(params)
    root = Path(root)
    _claim_root(root)
    # Drop the completion stamp first: if this run dies midway, nothing will trust the half-written folder.
    try:
        (root / INFO_NAME).unlink()
    except FileNotFoundError:
        pass
    img_dir, ann_dir = root / "images", root / ANN_SUBDIR
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)

    sizes = {s: params[f"n_{s}"] for s in SPLITS}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(sizes.values()), desc="demo images", unit="img")
    written = set()
    try:
        for split in SPLITS:
            caps: List[str] = []
            ids: List[int] = []
            for rec in split_records(split, sizes[split], seed=seed, num_anns=num_anns):
                img = render_scene(rec.scene, image_size, _rng(seed, split, rec.index, 2))
                name = IMAGE_PATTERN % rec.image_id
                atomic_write_bytes(img_dir / name, _encode_jpeg(img))
                written.add(name)
                caps.extend(rec.captions)
                per_caption = split in ("dev", "test")
                ids.extend([rec.image_id] * num_anns if per_caption else [rec.image_id])
                if bar is not None:
                    bar.update(1)
            atomic_write_lines(ann_dir / f"{split}_caps.txt", caps)
            atomic_write_lines(ann_dir / f"{split}_ids.txt", ids)
    finally:
        if bar is not None:
            bar.close()
    # Images left over from an earlier, larger generation would otherwise linger in images/.
    for path in sorted(img_dir.glob("COCO_2014_*.jpg")):
        if path.name not in written:
            path.unlink()
    # Files derived from the previous generation's captions (e.g. <r>_noise_train_caps.txt and its
    # mask) would be silently reused against the new captions; the folder is ours, so drop them.
    ours = {f"{s}_{kind}.txt" for s in SPLITS for kind in ("caps", "ids")}
    for path in sorted(ann_dir.iterdir()):
        if path.is_file() and path.name not in ours:
            path.unlink()
    # Memory banks are built from the previous captions too.
    bank_dir = root / "annotations" / "memory_bank"
    if bank_dir.is_dir():
        for path in sorted(bank_dir.iterdir()):
            if path.is_file():
                path.unlink()

    info = {
        "generator": "npc.synthetic",
        "version": DEMO_VERSION,
        **params,
        "jpeg_quality": _JPEG_QUALITY,
        "image_pattern": IMAGE_PATTERN,
        "splits": {
            s: {"images": sizes[s], "captions": sizes[s] * num_anns, "first_id": _ID_BASE[s],
                "ids_file": "one line per caption" if s in ("dev", "test") else "one line per image",
                "caption_style": "web" if s == "pretrain" else "coco"}
            for s in SPLITS
        },
        "num_images": sum(sizes.values()),
        "vocabulary": {"colours": list(COLOURS), "shapes": list(SHAPES), "backgrounds": list(BACKGROUNDS),
                       "textures": list(TEXTURES)},
    }
    atomic_write_json(root / INFO_NAME, info)
    return info


def _read_info(root: Path) -> Optional[dict]:
    try:
        with open(root / INFO_NAME, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _files_complete(root: Path, info: dict) -> bool:
    """Cheap sanity check that what demo_info.json promises is on disk (someone may have deleted files)."""
    ann_dir = root / ANN_SUBDIR
    for split in SPLITS:
        n = info.get(f"n_{split}", -1)
        caps, ids = ann_dir / f"{split}_caps.txt", ann_dir / f"{split}_ids.txt"
        if not caps.exists() or not ids.exists():
            return False
        with open(ids, encoding="utf-8") as f:
            id_lines = [line.strip() for line in f if line.strip()]
        expected = n * info["num_anns"] if split in ("dev", "test") else n
        if len(id_lines) != expected:
            return False
        if not all((root / "images" / (IMAGE_PATTERN % int(i))).exists() for i in dict.fromkeys(id_lines)):
            return False
    return True


def ensure_demo_dataset(root, *, seed: int = 0, n_pretrain: int = 4000, n_train: int = 2000, n_dev: int = 200,
                        n_test: int = 500, image_size: int = 64, num_anns: int = 5, progress: bool = True) -> dict:
    """Return the info of the dataset at ``root`` if it matches these parameters, else (re)generate it."""
    root = Path(root)
    params = _size_params(seed, n_pretrain, n_train, n_dev, n_test, image_size, num_anns)
    info = _read_info(root)
    if info is not None and info.get("version") == DEMO_VERSION \
            and all(info.get(k) == v for k, v in params.items()) and _files_complete(root, info):
        print(f"[npc.synthetic] reusing demo dataset at {root} (version {DEMO_VERSION}, seed {seed}, "
              f"{info['num_images']} images)")
        return info
    why = "none found" if info is None else "existing one differs or is incomplete"
    n_img = n_pretrain + n_train + n_dev + n_test
    print(f"[npc.synthetic] generating demo dataset ({why}): {n_img} images of {image_size}px, seed {seed} "
          f"-> writing to {root}")
    return generate_demo_dataset(root, progress=progress, **params)


# ----------------------------------------------------------------------------- paper-size images

def _paper_size_jpeg(path: Path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    field = field.resize((640, 480), Image.Resampling.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-36, 37, (480, 640, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_paper_size_jpegs(folder: Path, n: int, processes: int = 1) -> list:
    """``n`` generated 640x480 JPEGs (smooth colour fields with pixel noise, quality 90, about 155 KiB
    each: close to MSCOCO train2014's mean of about 160 KB); image ``i`` depends on ``i`` only."""
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_paper_size_jpeg, paths, range(n), chunksize=64))
    else:
        for i, p in enumerate(paths):
            _paper_size_jpeg(p, i)
    return paths
