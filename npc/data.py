"""Splits, whatever their format: the :class:`Split` every source gives, and the checks on its images.

A source (:mod:`npc.sources`) reads a split from its format into a :class:`Split`. Everything
downstream works on two integer indexings: the *sample* (caption) index and the *image* index
(position of the image in the split's image list); ``Split.caption_image[sample]`` maps one to the
other. Batches: :mod:`npc.loaders`.

This is also the reference release's top-level ``data`` module (``data.py`` aliases it): the release
layout's readers (``load_split``, ``load_train_split``, ``annotation_dir``, ...) and the CSV reader
(``read_csv_split``) are still found here, where they live in their sources
(:mod:`npc.sources.release`, :mod:`npc.sources.csv_files`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from npc import images
from npc.errors import DataError, MissingFileError
from npc.noise import read_caption_lines

log = logging.getLogger("npc")

# The flag that names each split of a format whose splits are files (CSV, shards).
CSV_SPLIT_FLAGS = {"train": "--train_data", "dev": "--dev_data", "test": "--test_data"}

# Names that moved to the sources, and the module that holds each (the release's ``import data`` finds them).
_MOVED = {"load_split": "release", "load_train_split": "release", "annotation_dir": "release",
          "memory_bank_dir": "release", "image_file_names": "release", "check_image_files": "release",
          "read_csv_split": "csv_files"}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"npc.sources.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_lines(path) -> List[str]:
    """Lines without their line ending; a missing file is a clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"annotation file not found: {path}")
    return read_caption_lines(path)


# ----------------------------------------------------------------------------- splits

@dataclass
class Split:
    """One split: captions (one per sample) and the images they describe."""

    name: str
    captions: List[str]
    image_ids: List[str]            # one per image, in order
    image_paths: List[Path]         # one per image (a path, or an npc.images.TarMember of a tar shard)
    caption_image: np.ndarray       # (n_captions,) image index of every caption
    num_anns: int                   # captions per image; for a CSV split with varying counts, the largest
    caps_file: Path = field(default=None)
    source_lines: Optional[np.ndarray] = None  # CSV splits: the file line (1-based) of every caption
    source_file: Optional[Path] = None          # CSV splits: the CSV file
    pair_keys: Optional[List[str]] = None       # each pair's own key in its source (a file line, a sentence id)
    key_name: str = "line"                      # what a key is (its source's DataSource.key_name), for messages

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def uniform_num_anns(self) -> Optional[int]:
        """``k`` when every image has ``k`` consecutive captions (the SCAN layout), else None."""
        n, m = self.num_images, len(self.captions)
        if n == 0 or m % n:
            return None
        k = m // n
        return k if np.array_equal(self.caption_image, np.repeat(np.arange(n), k)) else None

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def keys(self) -> List[str]:
        """Each pair's own key in its source, as text (the ``key`` column of every per-pair file): ``pair_keys``
        where the source sets them (a Karpathy sentid, a shard's ``file:key``), else the caption's line in the
        user's file (the CSV's line, the header being line 1; the release layout's line of ``<split>_caps.txt``)."""
        if self.pair_keys is not None:
            return [str(k) for k in self.pair_keys]
        lines = self.source_lines if self.source_lines is not None else np.arange(1, len(self) + 1)
        return [str(n) for n in lines.tolist()]

    def key_label(self, j: int) -> str:
        """Pair ``j``'s key with what it is, for messages and the report's page (``sentid 10003``)."""
        if self.pair_keys is not None:
            return f"{self.key_name} {self.pair_keys[j]}"
        return f"{self.key_name} {self.source_lines[j] if self.source_lines is not None else j + 1}"

    def describe_image(self, image_index: int) -> str:
        """Where an image is used, for error messages: its split and caption lines (1-based)."""
        lines = np.nonzero(self.caption_image == image_index)[0] + 1
        if self.source_lines is not None:
            rows = ", ".join(map(str, self.source_lines[lines - 1][:5]))
            return f"{self.name} split, {self.source_file}, line {rows}"
        if self.pair_keys is not None:  # a JSON file: the image by its id, its captions by their keys
            keys = ", ".join(self.key_label(k - 1) for k in lines[:5])
            return f"{self.name} split, image {self.image_ids[image_index]} of {self.caps_file} ({keys})"
        where = f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]}-{lines[-1]}"
        return f"{self.name} split, caption {where} of {self.caps_file}"

    def subset_images(self, n_images: int) -> "Split":
        """The first ``n_images`` images with their captions (dev subsets for model selection).

        Captions are grouped by image in image order (every loader of this module keeps them so)."""
        n_images = min(n_images, self.num_images)
        n_caps = int(np.searchsorted(self.caption_image, n_images))
        lines = None if self.source_lines is None else self.source_lines[:n_caps]
        keys = None if self.pair_keys is None else self.pair_keys[:n_caps]
        return Split(self.name, self.captions[:n_caps], self.image_ids[:n_images], self.image_paths[:n_images],
                     self.caption_image[:n_caps], self.num_anns, self.caps_file, lines, self.source_file, keys,
                     self.key_name)

    def without_images(self, drop: Sequence[int]) -> "Split":
        """The split without images ``drop`` (indices) and their captions, in the same order."""
        keep = np.ones(self.num_images, dtype=bool)
        keep[np.asarray(drop, dtype=np.int64)] = False
        renumber = np.cumsum(keep) - 1
        kept_caps = keep[self.caption_image]
        lines = None if self.source_lines is None else self.source_lines[kept_caps]
        keys = None if self.pair_keys is None else [q for q, k in zip(self.pair_keys, kept_caps) if k]
        return Split(self.name, [c for c, k in zip(self.captions, kept_caps) if k],
                     [i for i, k in zip(self.image_ids, keep) if k], [q for q, k in zip(self.image_paths, keep) if k],
                     renumber[self.caption_image[kept_caps]].astype(np.int64), self.num_anns, self.caps_file, lines,
                     self.source_file, keys, self.key_name)

    def subset_captions(self, n_captions: int) -> "Split":
        """The first images whose captions fit in ``n_captions`` (at least one image): ``--dev_length``."""
        ends = np.searchsorted(self.caption_image, np.arange(1, self.num_images + 1))
        return self.subset_images(max(1, int(np.searchsorted(ends, n_captions, side="right"))))


_DECODED: Dict[tuple, Optional[str]] = {}


def decode_error(path) -> Optional[str]:
    """Why image ``path`` cannot be decoded in full, or None; once per process for a file of the same size
    and modification time. JPEGs are decoded at a reduced scale (every byte is still read)."""
    st = images.image_stat(path)  # a file, or a member of a tar shard
    if st is None:
        try:
            os.stat(getattr(path, "shard", path))
        except OSError as e:
            return f"image not found ({e.strerror})"
        return "image not found (its shard is shorter than its index says)"
    key = (str(path), *st)
    if key not in _DECODED:
        _DECODED[key] = images.decode_problem(path)  # the one decoding rule (npc/images.py)
    return _DECODED[key]


def readable_split(split: Split, skip: bool = False):
    """``(split, dropped)``: ``split`` without the images that cannot be decoded (``skip``), and their indices;
    without ``skip`` the first one is a :class:`DataError` naming the image, its file and line."""
    bad = [(i, e) for i, e in ((i, decode_error(p)) for i, p in enumerate(split.image_paths)) if e is not None]
    if not bad:
        return split, []
    i, why = bad[0]
    if not skip:
        raise DataError(images.unreadable_message(split.image_paths[i], why, split.describe_image(i))
                        + f" (every image of the {split.name} split is read before the run starts)")
    if split.num_images - len(bad) < 2:
        raise DataError(f"{split.source_file or split.caps_file}: the {split.name} split has "
                        f"{split.num_images - len(bad)} readable image(s) ({len(bad)} unreadable); retrieval needs at "
                        f"least 2")
    return split.without_images([i for i, _ in bad]), [i for i, _ in bad]


class _SameImages:
    """Images by what makes two the same: the same file (or tar member) under any name, or the same bytes
    (hashed only where the sizes agree, once each)."""

    def __init__(self):
        self.by_identity, self.by_size, self.hashes = {}, {}, {}

    def _hash(self, ref) -> str:
        key = str(ref)
        if key not in self.hashes:
            self.hashes[key] = images.image_sha256(ref)
        return self.hashes[key]

    def find(self, ref) -> Optional[int]:
        """The index under which an image the same as ``ref`` was added, or None."""
        ident = images.image_identity(ref)
        if ident is None:
            return None
        if ident in self.by_identity:
            return self.by_identity[ident]
        same_size = self.by_size.get(images.image_size(ref), [])
        return next((i for i, q in same_size if self._hash(q) == self._hash(ref)), None)

    def add(self, ref, index: int) -> None:
        ident = images.image_identity(ref)
        if ident is not None:
            self.by_identity.setdefault(ident, index)
            self.by_size.setdefault(images.image_size(ref), []).append((index, ref))


def duplicate_images(split: Split) -> List[Tuple[int, int]]:
    """``(i, j)`` for every image ``i`` of ``split`` that is an earlier image ``j`` again: the same file under
    another name, or a file of the same bytes."""
    seen, out = _SameImages(), []
    for i, p in enumerate(split.image_paths):
        j = seen.find(p)
        if j is None:
            seen.add(p, i)
        else:
            out.append((i, j))
    return out


def shared_images(train: Split, other: Split) -> List[int]:
    """Indices of ``other``'s images that are also images of ``train``: the same file, or a file of the same
    bytes."""
    seen = _SameImages()
    for i, p in enumerate(train.image_paths):
        seen.add(p, i)
    return [i for i, p in enumerate(other.image_paths) if seen.find(p) is not None]
