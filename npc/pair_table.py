"""Per-pair files keyed by your own rows: a CSV beside every per-pair array a run writes.

``pair_weights.npz`` and the memory bank's ``<r>_mbank_pclean.npy`` hold one value per training pair
in the training split's order (pairs grouped by image), which is not the order of your file. Beside
each, :func:`write_pair_csv` writes a CSV (``pair_weights.csv``, ``<r>_mbank_pclean.csv``) with one row
per training pair, in your order: its ``key`` (the pair's key as its data source defines it,
:attr:`npc.data.Split.keys`: your CSV's line, the header being line 1; Karpathy's sentid; a shard's
``file:key``; the release layout's line of ``train_caps.txt``), the image as you name it, the caption,
then the values. The noise report's ``pairs.csv`` and ``report.json`` carry the same ``key``: join any of
them to your rows by ``key`` alone. Cells a spreadsheet would run as formulas get a leading ``'``
(:func:`npc.io.atomic_write_csv`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np


def user_images(split, dataset_root) -> List[str]:
    """Each image as the user names it: the path relative to the dataset folder, or as its split lists it."""
    if dataset_root is None:
        return [str(i) for i in split.image_ids]
    root = Path(dataset_root).resolve()
    out = []
    for p in split.image_paths:
        p = Path(p).resolve()
        out.append(str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
    return out


def user_order(split) -> np.ndarray:
    """Pair indices in the user's order: by line of the CSV file where the split has lines, else the split's."""
    if split.source_lines is not None:
        return np.argsort(np.asarray(split.source_lines), kind="stable")
    return np.arange(len(split))


def key_column(split):
    """(the key column's name, one key per pair): ``key``, :attr:`npc.data.Split.keys` (the same in every
    per-pair file)."""
    return "key", list(split.keys)


def fmt(v) -> str:
    """A value as text: 6 significant digits, empty for NaN (a pair without a value)."""
    v = float(v)
    return "" if not np.isfinite(v) else f"{v:.6g}"


def write_pair_csv(path, split, images: Sequence[str], values: Dict[str, Sequence]) -> Path:
    """``path``: one row per pair of ``split`` in the user's order, ``key, image, caption`` then each of
    ``values`` (name -> one value per pair, in the split's order; floats are written by :func:`fmt`)."""
    from npc.io import atomic_write_csv

    name, keys = key_column(split)
    ci = np.asarray(split.caption_image)
    cols = {k: np.asarray(v) for k, v in values.items()}
    for k, v in cols.items():
        if len(v) != len(split):
            raise ValueError(f"{path}: column {k} has {len(v)} values for {len(split)} pairs")

    def cell(v):
        return fmt(v) if np.issubdtype(np.asarray(v).dtype, np.floating) else int(v)

    def rows():
        for j in user_order(split):
            yield [keys[j], images[ci[j]], split.captions[j], *(cell(v[j]) for v in cols.values())]

    atomic_write_csv(path, [name, "image", "caption", *cols], rows())
    return Path(path)
