"""The words captions use for a scene's attributes, relations and positions (most common first)."""
from __future__ import annotations

from typing import Dict, Tuple

from .scenes import COLOURS

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
