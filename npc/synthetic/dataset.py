"""The demo dataset on disk: a split's records, writing every file, and reusing a complete dataset."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..io import atomic_write_bytes, atomic_write_json, atomic_write_lines, atomic_write_text
from .captions import describe_scene
from .render import _JPEG_QUALITY, _encode_jpeg, render_scene
from .scenes import _SPLIT_KEY, BACKGROUNDS, COLOURS, SHAPES, SPLITS, TEXTURES, Scene, _make_scene, _rng

DEMO_VERSION: int = 1

INFO_NAME = "demo_info.json"
# Written first and kept: marks a folder as ours, so regenerating may delete stale demo images but a
# real dataset (which lacks both this marker and demo_info.json) is never overwritten.
MARKER_NAME = ".npc_synthetic"
IMAGE_PATTERN = "COCO_2014_%012d.jpg"
ANN_SUBDIR = os.path.join("annotations", "scan_split")
# Ids are split_base + index: independent of the other splits' sizes and far from 0..n-1, so code
# that wrongly uses an image id as a row index fails loudly instead of silently working.
_ID_BASE = {"train": 1_000_000, "dev": 2_000_000, "test": 3_000_000, "pretrain": 4_000_000}
_MAX_PER_SPLIT = 999_999


@dataclass(frozen=True)
class SceneRecord:
    split: str
    index: int
    image_id: int
    scene: Scene
    captions: Tuple[str, ...]


def split_records(split: str, n: int, *, seed: int = 0, num_anns: int = 5) -> Iterator[SceneRecord]:
    """Scenes and captions of a split, without rendering (the generator's ground truth)."""
    if split not in _SPLIT_KEY:
        raise ValueError(f"unknown split {split!r}")
    style = "web" if split == "pretrain" else "coco"
    for k in range(n):
        scene = _make_scene(_rng(seed, split, k, 0), split)
        caps = describe_scene(scene, _rng(seed, split, k, 1), style, num_anns)
        yield SceneRecord(split, k, _ID_BASE[split] + k, scene, tuple(caps))


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
