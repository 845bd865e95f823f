"""A tiny MSCOCO or Flickr30K in Karpathy's split-file format, and the same data in the release's layout.

For tests and docs: :func:`write_karpathy_dataset` writes ``dataset_coco.json`` (or
``dataset_flickr30k.json``) with the real files' field names and quirks (MSCOCO's restval part, 5 to 7
sentences an image, ``raw`` text with trailing spaces or a newline, original file names in
``train2014/`` and ``val2014/``, JSON order mixing the splits) and the demo's rendered scenes as its
images. :func:`write_release_layout_from_karpathy` writes what such a file holds in the reference
release's layout (``images/`` and ``annotations/scan_split/``), which :func:`npc.data.load_split` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np

from ..io import atomic_copy, atomic_write_bytes, atomic_write_json, atomic_write_lines
from .captions import describe_scene
from .render import _encode_jpeg, render_scene
from .scenes import _make_scene, _rng

# The JSON's split values each dataset uses, and the demo split whose scenes stand in for them.
_PARTS = {"coco": ("train", "restval", "val", "test"), "f30k": ("train", "val", "test")}
_SCENES = {"train": "train", "restval": "train", "val": "dev", "test": "test"}


def write_karpathy_dataset(root, dataset: str, images_per_split: Dict[str, int], seed: int = 0,
                           image_size: int = 48) -> Path:
    """Write a tiny ``dataset`` ("coco" or "f30k") in Karpathy's format under ``root``; returns the JSON's path.

    ``images_per_split`` counts images per JSON split value: train, restval (MSCOCO only), val, test.
    The same seed and counts give the same files."""
    if dataset not in _PARTS:
        raise ValueError(f"dataset must be 'coco' or 'f30k', got {dataset!r}")
    unknown = set(images_per_split) - set(_PARTS[dataset])
    if unknown:
        raise ValueError(f"{dataset}: unknown split(s) {sorted(unknown)}; the JSON's are {list(_PARTS[dataset])}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    # (part, index within the part), in a mixed order: the reader must sort images out by their "split" field
    order = [(p, k) for p in _PARTS[dataset] for k in range(images_per_split.get(p, 0))]
    order = [order[j] for j in rng.permutation(len(order))]
    ids = rng.choice(np.arange(100_000, 600_000), size=len(order), replace=False)  # cocoid or Flickr30K's number
    tails = [" ", "", " \n", "\n", "  "]
    images: List[dict] = []
    sentid = int(rng.integers(1000, 900_000))
    scene_index = {p: 0 for p in _SCENES.values()}
    for imgid, ((part, _), number) in enumerate(zip(order, ids)):
        demo_split = _SCENES[part]
        k = scene_index[demo_split]
        scene_index[demo_split] += 1
        scene = _make_scene(_rng(seed, demo_split, k, 0), demo_split)
        n_sent = int(rng.integers(5, 8))  # 5 to 7, as in MSCOCO
        texts = describe_scene(scene, _rng(seed, demo_split, k, 1), "coco", n_sent)
        if dataset == "coco":
            folder = "train2014" if part == "train" else "val2014"
            name = f"COCO_{folder}_{int(number):012d}.jpg"
            path = root / folder / name
        else:
            name = f"{int(number) * 1000 + int(rng.integers(0, 1000))}.jpg"  # like 1000092795.jpg
            path = root / "flickr30k-images" / name
        atomic_write_bytes(path, _encode_jpeg(render_scene(scene, image_size, _rng(seed, demo_split, k, 2))))
        sentences = []
        for text in texts:
            stop = "." if rng.random() < 0.5 and not text.endswith(".") else ""
            raw = text[0].upper() + text[1:] + stop + tails[int(rng.integers(len(tails)))]
            tokens = [w.strip(".,").lower() for w in raw.split()]
            sentences.append({"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        entry = {"filepath": folder} if dataset == "coco" else {}
        entry.update({"sentids": [s["sentid"] for s in sentences], "filename": name, "imgid": imgid,
                      "split": part, "sentences": sentences})
        if dataset == "coco":
            entry["cocoid"] = int(number)
        images.append(entry)
    json_path = root / ("dataset_coco.json" if dataset == "coco" else "dataset_flickr30k.json")
    atomic_write_json(json_path, {"images": images, "dataset": "coco" if dataset == "coco" else "flickr30k"},
                      indent=None)
    return json_path


def write_release_layout_from_karpathy(json_path, root, out_root) -> Path:
    """Write the splits of Karpathy's file ``json_path`` (images under ``root``) in the release's layout under
    ``out_root``; returns ``out_root``.

    MSCOCO's images are copied to ``images/COCO_2014_<cocoid>.jpg`` and the ids are cocoids; Flickr30K's keep
    their names, listed in ``annotations/scan_split/image_name.txt``, and the ids are line numbers (from 0)
    there. Train ids are one line per image, dev and test ids one per caption."""
    from npc.sources.karpathy import _dataset_of, _load, read_karpathy_split

    dataset = _dataset_of(json_path, _load(json_path))
    out_root = Path(out_root)
    ann = out_root / "annotations" / "scan_split"
    table: List[str] = []
    for split in ("train", "dev", "test"):
        s = read_karpathy_split(json_path, root, dataset, split)
        ids = []
        for image_id, path in zip(s.image_ids, s.image_paths):
            if dataset == "coco":
                name, out_id = f"COCO_2014_{int(image_id):012d}.jpg", image_id
            else:
                name, out_id = path.name, str(len(table))
                table.append(name)
            atomic_copy(path, out_root / "images" / name)
            ids.append(out_id)
        per_caption = [ids[i] for i in s.caption_image] if split != "train" else ids
        atomic_write_lines(ann / f"{split}_caps.txt", s.captions)
        atomic_write_lines(ann / f"{split}_ids.txt", per_caption)
    if dataset == "f30k":
        atomic_write_lines(ann / "image_name.txt", table)
    return out_root
