"""Tests of the synthetic demo dataset generator (CPU, a few seconds)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, List

import pytest
from PIL import Image

from npc import synthetic as syn
from npc.synthetic import (ANN_SUBDIR, BACKGROUND_WORDS, COLOUR_WORDS, DEMO_VERSION, IMAGE_PATTERN, INFO_NAME,
                           RELATION_WORDS, SHAPE_WORDS, ensure_demo_dataset, generate_demo_dataset, split_records)

SMALL = dict(n_pretrain=20, n_train=10, n_dev=4, n_test=6, image_size=48, progress=False)
SIZES = {"pretrain": 20, "train": 10, "dev": 4, "test": 6}


def _words_re(words) -> re.Pattern:
    alts = sorted(set(words), key=len, reverse=True)  # longest first: "to the left of" before "left of"
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in alts) + r")\b", re.IGNORECASE)


SHAPE_RE = _words_re(w for ws in SHAPE_WORDS.values() for w in ws)
COLOUR_RE = _words_re(w for ws in COLOUR_WORDS.values() for w in ws)
RELATION_RE = _words_re([w for ws in RELATION_WORDS.values() for w in ws] + ["between"])
_SHAPE_OF = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}
_COLOUR_OF = {w: c for c, ws in COLOUR_WORDS.items() for w in ws}


def _read(root: Path, split: str, kind: str) -> List[str]:
    return (root / ANN_SUBDIR / f"{split}_{kind}.txt").read_text(encoding="utf-8").splitlines()


def _all_files(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_dataset(root, seed=0, **SMALL)
    return root


def test_same_seed_is_byte_identical_and_seed_matters(small_root, tmp_path):
    again = tmp_path / "again"
    generate_demo_dataset(again, seed=0, **SMALL)
    a, b = _all_files(small_root), _all_files(again)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.endswith(".jpg")]) == sum(SIZES.values())
    for name in a:
        assert a[name] == b[name], name

    other = tmp_path / "other"
    generate_demo_dataset(other, seed=1, **SMALL)
    for split in SIZES:
        assert _read(other, split, "caps") != _read(small_root, split, "caps")


def test_split_content_does_not_depend_on_other_split_sizes():
    # Per-image seeding: growing one split (or the split itself) leaves existing images unchanged.
    a = [r.captions for r in split_records("train", 5, seed=0)]
    b = [r.captions for r in split_records("train", 8, seed=0)][:5]
    assert a == b


def test_layout_and_counts(small_root):
    info = json.loads((small_root / INFO_NAME).read_text())
    assert info["version"] == DEMO_VERSION and info["seed"] == 0
    all_ids: List[int] = []
    for split, n in SIZES.items():
        caps, ids = _read(small_root, split, "caps"), _read(small_root, split, "ids")
        assert len(caps) == 5 * n and all(c.strip() for c in caps)
        if split in ("dev", "test"):
            assert len(ids) == 5 * n
            for k in range(n):  # each id repeated 5 times, consecutively
                assert len(set(ids[5 * k:5 * k + 5])) == 1
            image_ids = ids[::5]
        else:
            assert len(ids) == n
            image_ids = ids
        assert len(set(image_ids)) == n
        all_ids += [int(i) for i in image_ids]
        assert info["splits"][split]["images"] == n and info["splits"][split]["captions"] == 5 * n
    assert len(all_ids) == len(set(all_ids)), "ids must be unique across splits"
    jpgs = sorted((small_root / "images").glob("*.jpg"))
    assert len(jpgs) == len(all_ids)
    for i in all_ids:
        path = small_root / "images" / (IMAGE_PATTERN % i)
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (48, 48) and im.mode == "RGB"
            im.load()


def test_captions_mention_objects_and_are_faithful():
    """Every caption names a colour or shape, and only colours/shapes that are in its scene."""
    # Background names must never read as an object colour ("a grey background" is no grey object).
    assert not {w for ws in BACKGROUND_WORDS.values() for w in ws} & set(_COLOUR_OF)
    for split in ("pretrain", "train", "test"):
        for rec in split_records(split, 60, seed=5):
            shapes = {o.shape for o in rec.scene.objects}
            colours = {o.colour for o in rec.scene.objects}
            for cap in rec.captions:
                found_shapes = {_SHAPE_OF[m.lower()] for m in SHAPE_RE.findall(cap)}
                found_colours = {_COLOUR_OF[m.lower()] for m in COLOUR_RE.findall(cap)}
                assert found_shapes or found_colours, cap
                assert found_shapes <= shapes, (cap, rec.scene)
                assert found_colours <= colours, (cap, rec.scene)


def test_relations_are_true():
    """A simple "<colour> <shape> <relation> <colour> <shape>" claim must match the geometry."""
    pattern = re.compile(
        r"\b(?:a|an|the)?\s*(?:\w+ )?(?P<c1>\w+) (?P<s1>\w+) (?:is |sits |is placed |appears )?"
        r"(?P<rel>to the left of|to the right of|above|below) (?:a|an|the) (?:\w+ )?(?P<c2>\w+) (?P<s2>\w+)\b")
    checked = 0
    for rec in split_records("train", 200, seed=2):
        by_kind = {(o.colour, o.shape): o for o in rec.scene.objects}
        for cap in rec.captions:
            m = pattern.search(cap.lower())
            if not m or m.group("s1") not in SHAPE_WORDS or m.group("s2") not in SHAPE_WORDS:
                continue
            if m.group("c1") not in COLOUR_WORDS or m.group("c2") not in COLOUR_WORDS:
                continue
            if cap.lower().startswith(m.group("rel")):  # fronted form reverses the roles
                continue
            a, b = by_kind[(m.group("c1"), m.group("s1"))], by_kind[(m.group("c2"), m.group("s2"))]
            # Checked against the coordinates directly, not through the generator's own helper.
            holds = {"to the left of": a.cx < b.cx, "to the right of": a.cx > b.cx,
                     "above": a.cy < b.cy, "below": a.cy > b.cy}[m.group("rel")]
            assert holds, (cap, a, b)
            checked += 1
    assert checked > 30


def test_pretrain_style_differs_from_train():
    def rel_frac(split: str) -> float:
        caps = [c for r in split_records(split, 150, seed=0) for c in r.captions]
        return sum(bool(RELATION_RE.search(c)) for c in caps) / len(caps)

    train, pretrain = rel_frac("train"), rel_frac("pretrain")
    assert train >= 0.3, train
    assert pretrain <= 0.12, pretrain
    # Pretrain captions are short alt-text, train captions full sentences.
    mean_len = {s: sum(len(c.split()) for r in split_records(s, 100, seed=0) for c in r.captions) / 500
                for s in ("train", "pretrain")}
    assert mean_len["train"] > 1.5 * mean_len["pretrain"]


def test_train_captions_of_an_image_are_distinct(small_root):
    caps = _read(small_root, "train", "caps")
    for k in range(SIZES["train"]):
        assert len(set(caps[5 * k:5 * k + 5])) >= 4


def test_ensure_reuses_without_rewriting(small_root, tmp_path, capsys):
    root = tmp_path / "ens"
    info = ensure_demo_dataset(root, seed=0, **SMALL)
    assert "generating" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    info2 = ensure_demo_dataset(root, seed=0, **SMALL)
    assert "reusing" in capsys.readouterr().out
    assert info2 == info
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps


def test_ensure_regenerates_on_mismatch_or_missing_info(tmp_path, capsys):
    root = tmp_path / "ens"
    ensure_demo_dataset(root, seed=0, **SMALL)
    info = ensure_demo_dataset(root, seed=0, **{**SMALL, "n_train": 7})
    assert info["n_train"] == 7 and len(_read(root, "train", "ids")) == 7
    # Images of the former, larger train split are cleaned up.
    assert len(list((root / "images").glob("*.jpg"))) == sum(SIZES.values()) - 3

    # A derived file of the old captions (as the noise module writes) must not survive regeneration.
    derived = root / ANN_SUBDIR / "0.2_noise_train_caps.txt"
    derived.write_text("stale\n")
    (root / INFO_NAME).unlink()  # as after an interrupted generation
    capsys.readouterr()
    ensure_demo_dataset(root, seed=0, **SMALL)
    assert "generating" in capsys.readouterr().out
    assert (root / INFO_NAME).exists() and not derived.exists()

    stale = json.loads((root / INFO_NAME).read_text())
    stale["version"] = DEMO_VERSION - 1
    (root / INFO_NAME).write_text(json.dumps(stale))
    ensure_demo_dataset(root, seed=0, **SMALL)
    assert "generating" in capsys.readouterr().out
    assert json.loads((root / INFO_NAME).read_text())["version"] == DEMO_VERSION


def test_refuses_to_overwrite_a_foreign_dataset(tmp_path):
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    (root / "images" / "COCO_2014_000000000001.jpg").write_bytes(b"real image")
    with pytest.raises(FileExistsError):
        generate_demo_dataset(root, **SMALL)
    assert (root / "images" / "COCO_2014_000000000001.jpg").read_bytes() == b"real image"


def test_no_temp_files_left(small_root):
    leftovers = [p for p in small_root.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers
    assert not any(name.startswith(".") and name != syn.MARKER_NAME for name in os.listdir(small_root))
