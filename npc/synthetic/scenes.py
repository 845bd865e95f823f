"""The demo's scenes: what they hold, and the seeded draw of one (an image's ground truth)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SPLITS: Tuple[str, ...] = ("pretrain", "train", "dev", "test")
# Every random draw of an image is keyed on its split's key, its index and a purpose (see _rng).
_SPLIT_KEY = {"pretrain": 0, "train": 1, "dev": 2, "test": 3}

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


def _rng(seed: int, split: str, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEY[split], index, purpose)))


def _choice(rng: np.random.Generator, items: Sequence, weights: Optional[Sequence[float]] = None):
    if weights is None:
        return items[int(rng.integers(len(items)))]
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


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
