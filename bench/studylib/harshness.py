"""How true a caption is of a scene, from the demo generator's own ground truth (npc.synthetic).

A caption of the demo's COCO style is read back into *mentions*, each checked against a scene:

* objects: ``[size] [colour] <shape>`` (or a colour with a generic noun: "a red shape"); true when
  some object of the scene has every attribute named;
* the background: its colour word (grey/gray, beige/cream, brown; never an object colour) and
  texture word; true when the scene's background has them;
* directional relations between two object mentions ("A left of B", and the fronted form
  "Above B is A"); true when some objects matching A and B stand in that relation
  (``npc.synthetic._relation``, the generator's own test).

Absolute positions ("in the top left corner"), counts and "between"/"next to" are not read.
A clean caption therefore scores 1 on every mention read (checked by the tests); a noisy caption,
put with another image, scores the fraction of its mentions that happen to hold there.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from npc import synthetic as syn

_ARTICLES = {"a", "an", "the"}


def _phrases() -> List[Tuple[str, Tuple[str, str]]]:
    out = []
    for shape, words in syn.SHAPE_WORDS.items():
        for w in words:
            out.append((w, ("shape", shape)))
            out.append((syn._SHAPE_PLURAL.get(w, w + "s"), ("shape", shape)))
    for colour, words in syn.COLOUR_WORDS.items():
        out += [(w, ("colour", colour)) for w in words]
    for size, words in syn.SIZE_WORDS.items():
        out += [(w, ("size", size)) for w in words]
    for bg, words in syn.BACKGROUND_WORDS.items():
        out += [(w, ("bg", bg)) for w in words]
    for tex, words in syn._TEXTURE_WORDS.items():
        out += [(w, ("texture", tex)) for w in words]
    for noun in syn._GENERIC_NOUNS + syn._GENERIC_PLURALS:
        out.append((noun, ("generic", noun)))
    for rel, words in syn.RELATION_WORDS.items():
        out += [(w, ("rel", rel)) for w in words]
    for rel, words in syn._FRONTED_WORDS.items():
        out += [(w, ("rel", rel)) for w in words]
    # longest first, so "round shape" beats "shape" and "to the left of" beats "left of"
    uniq = dict(out)
    return sorted(uniq.items(), key=lambda kv: -len(kv[0]))


_PHRASES = _phrases()
_PATTERN = re.compile(r"\b(" + "|".join(re.escape(p) for p, _ in _PHRASES) + r")\b")
_LOOKUP = dict(_PHRASES)


def parse_caption(caption: str) -> Dict[str, list]:
    """Mentions of a caption: ``objects`` [(size, colour, shape)] (None = not named), ``background``
    [(colour or None, texture or None)], ``relations`` [(object a, relation, object b)] as indices
    into ``objects`` ("a <relation> b")."""
    text = caption.lower()
    tokens: List[Tuple[str, str]] = []
    pos = 0
    for m in _PATTERN.finditer(text):
        between = re.findall(r"[a-z']+", text[pos:m.start()])
        tokens += [("word", w) for w in between]
        tokens.append(_LOOKUP[m.group(1)])
        pos = m.end()
    tokens += [("word", w) for w in re.findall(r"[a-z']+", text[pos:])]

    objects: List[Tuple[Optional[str], Optional[str], Optional[str]]] = []
    background: List[Tuple[Optional[str], Optional[str]]] = []
    events: List[Tuple[str, object]] = []  # ("obj", index) / ("rel", name), in reading order
    size = colour = texture = None
    for kind, value in tokens:
        if kind == "size":
            size = value
        elif kind == "colour":
            colour = value
        elif kind == "texture":
            texture = value
        elif kind == "bg":
            background.append((value, texture))
            texture = None
        elif kind in ("shape", "generic"):
            if kind == "shape" or colour is not None:
                objects.append((size, colour, value if kind == "shape" else None))
                events.append(("obj", len(objects) - 1))
            size = colour = None
        elif kind == "rel":
            events.append(("rel", value))
            size = colour = None
        elif value not in _ARTICLES:
            size = colour = None
            if texture is not None and value not in ("background", "backdrop"):
                texture = None
    relations = []
    for k, (kind, value) in enumerate(events):
        if kind != "rel":
            continue
        before = [v for kd, v in events[:k] if kd == "obj"]
        after = [v for kd, v in events[k + 1:] if kd == "obj"]
        if before and after:                       # "A rel B"
            relations.append((before[-1], value, after[0]))
        elif not before and len(after) >= 2:       # fronted: "rel B is A" -> A rel B
            relations.append((after[1], value, after[0]))
    return {"objects": objects, "background": background, "relations": relations}


def _matches(obj: syn.SceneObject, mention) -> bool:
    size, colour, shape = mention
    return ((size is None or obj.size == size) and (colour is None or obj.colour == colour)
            and (shape is None or obj.shape == shape))


def caption_truth(caption: str, scene: syn.Scene) -> Dict[str, float]:
    """Which of the caption's mentions hold in ``scene``.

    Returns ``n_mentions``, ``frac_true`` (all mentions; nan when none), ``all_true`` (1.0/0.0),
    and per kind the counts ``objects_true``/``objects``, ``bindings_true``/``bindings`` (object
    mentions naming both a colour and a shape), ``background_true``/``background``,
    ``relations_true``/``relations``, and bag-of-words counts ``colour_words_true``/``colour_words``
    and ``shape_words_true``/``shape_words`` (an object colour or shape named that some object of
    the scene has, whatever it is bound to).
    """
    p = parse_caption(caption)
    obj_ok = [any(_matches(o, m) for o in scene.objects) for m in p["objects"]]
    bind = [ok for ok, m in zip(obj_ok, p["objects"]) if m[1] is not None and m[2] is not None]
    bg_ok = [(c is None or scene.background == c) and (t is None or scene.texture == t) for c, t in p["background"]]
    rel_ok = []
    for a, rel, b in p["relations"]:
        ma, mb = p["objects"][a], p["objects"][b]
        rel_ok.append(any(syn._relation(oa, ob) == rel for oa in scene.objects for ob in scene.objects
                          if oa is not ob and _matches(oa, ma) and _matches(ob, mb)))
    colours = [m[1] for m in p["objects"] if m[1] is not None]
    shapes = [m[2] for m in p["objects"] if m[2] is not None]
    scene_colours = {o.colour for o in scene.objects}
    scene_shapes = {o.shape for o in scene.objects}
    every = obj_ok + bg_ok + rel_ok
    return {"n_mentions": len(every), "frac_true": float(np.mean(every)) if every else float("nan"),
            "all_true": float(all(every)) if every else float("nan"),
            "objects": len(obj_ok), "objects_true": int(sum(obj_ok)),
            "bindings": len(bind), "bindings_true": int(sum(bind)),
            "background": len(bg_ok), "background_true": int(sum(bg_ok)),
            "relations": len(rel_ok), "relations_true": int(sum(rel_ok)),
            "colour_words": len(colours), "colour_words_true": sum(c in scene_colours for c in colours),
            "shape_words": len(shapes), "shape_words_true": sum(c in scene_shapes for c in shapes)}


def summarize(truths: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Means over captions, and pooled fractions per mention kind."""
    def pooled(kind):
        n = sum(t[kind] for t in truths)
        return sum(t[f"{kind}_true"] for t in truths) / n if n else float("nan")

    fr = np.array([t["frac_true"] for t in truths], dtype=float)
    at = np.array([t["all_true"] for t in truths], dtype=float)
    return {"n_captions": len(truths), "mean_frac_true": float(np.nanmean(fr)) if len(fr) else float("nan"),
            "frac_all_true": float(np.nanmean(at)) if len(at) else float("nan"),
            "frac_no_mention_true": float(np.nanmean(fr == 0)) if len(fr) else float("nan"),
            "objects_true": pooled("objects"), "bindings_true": pooled("bindings"),
            "background_true": pooled("background"), "relations_true": pooled("relations"),
            "colour_words_true": pooled("colour_words"), "shape_words_true": pooled("shape_words"),
            "mentions_per_caption": float(np.mean([t["n_mentions"] for t in truths])) if truths else float("nan")}


def split_harshness(captions: Sequence[str], caption_image: np.ndarray, noisy_mask: np.ndarray,
                    scenes: Sequence[syn.Scene]) -> Dict[str, Dict[str, float]]:
    """Truth of every training caption about the image it is paired with, clean and noisy apart."""
    truths = [caption_truth(c, scenes[int(i)]) for c, i in zip(captions, caption_image)]
    mask = np.asarray(noisy_mask, dtype=bool)
    return {"clean": summarize([t for t, m in zip(truths, mask) if not m]),
            "noisy": summarize([t for t, m in zip(truths, mask) if m])}
