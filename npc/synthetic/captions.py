"""Captions of a scene: COCO-like sentences (train/dev/test) and web alt text (pretrain)."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .scenes import Scene, SceneObject, _abs_position, _choice, _relation
from .words import (_ABS_WORDS, _FRONTED_WORDS, _GENERIC_NOUNS, _GENERIC_PLURALS, _NEAR_WORDS, _NUMBER_WORDS,
                    _OPPOSITE, _TEXTURE_WORDS, BACKGROUND_WORDS, COLOUR_WORDS, RELATION_WORDS, SHAPE_WORDS,
                    SIZE_WORDS)


def _word(rng: np.random.Generator, words: Sequence[str], p_first: float) -> str:
    """The first (plain) word with probability ``p_first``, else a uniformly drawn synonym."""
    if len(words) == 1 or rng.random() < p_first:
        return words[0]
    return words[1 + int(rng.integers(len(words) - 1))]


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
