"""Splits: file naming, the built-in datasets' and CSV files' splits, the noisy-split cache (batches: npc.loaders).

Reads the reference release's on-disk layout (docs/method.md section 1)::

    <root>/images/                        every image of the dataset
    <root>/annotations/scan_split/        <split>_caps.txt, <split>_ids.txt, <r>_noise_train_caps.txt
    <root>/annotations/memory_bank/       <r>_mbank_img_idx.npy, <r>_mbank_txt_idx.npy

Captions come in consecutive runs of ``num_anns`` per image. Train ids are listed once per image,
dev/test ids once per caption. Everything downstream works on two integer indexings: the *sample*
(caption line) index and the *image* index (position of the image in the split's image list);
``Split.caption_image[sample]`` maps one to the other.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from npc import images
from npc.csv_format import DataError, read_rows, separator_name
from npc.datasets import DATASETS, DatasetSpec
from npc.noise import ensure_noisy_split, read_caption_lines
from npc.errors import MissingFileError

log = logging.getLogger("npc")


# ----------------------------------------------------------------------------- naming per dataset

def get_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r} (--dataset): choose one of {sorted(DATASETS)}") from None


def annotation_dir(root) -> Path:
    return Path(root) / "annotations" / "scan_split"


def memory_bank_dir(root) -> Path:
    return Path(root) / "annotations" / "memory_bank"


def read_lines(path) -> List[str]:
    """Lines without their line ending; a missing file is a clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"annotation file not found: {path}")
    return read_caption_lines(path)


def image_file_names(spec: DatasetSpec, root, image_ids: Sequence[str]) -> List[str]:
    if spec.image_name is not None:
        try:
            return [spec.image_name(i) for i in image_ids]
        except ValueError as e:
            raise DataError(f"{spec.name}: image ids must be integers ({e})") from None
    table_path = annotation_dir(root) / "image_name.txt"
    table = read_lines(table_path)
    names = []
    for i in image_ids:
        k = int(i)
        if not 0 <= k < len(table):
            raise DataError(f"image id {k} has no line in {table_path} ({len(table)} lines)")
        names.append(table[k].strip())
    return names


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
        """Each pair's own key in its source: ``pair_keys`` where the source sets them (a sentence id, a shard's
        sample key), else the caption's line in its file (the CSV's line, or the line of the caption file)."""
        if self.pair_keys is not None:
            return list(self.pair_keys)
        lines = self.source_lines if self.source_lines is not None else np.arange(1, len(self) + 1)
        return [f"line {n}" for n in lines.tolist()]

    def describe_image(self, image_index: int) -> str:
        """Where an image is used, for error messages: its split and caption lines (1-based)."""
        lines = np.nonzero(self.caption_image == image_index)[0] + 1
        if self.source_lines is not None:
            rows = ", ".join(map(str, self.source_lines[lines - 1][:5]))
            return f"{self.name} split, {self.source_file}, line {rows}"
        if self.pair_keys is not None:  # a JSON file: the image by its id, its captions by their keys
            keys = ", ".join(self.pair_keys[k - 1] for k in lines[:5])
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
                     self.caption_image[:n_caps], self.num_anns, self.caps_file, lines, self.source_file, keys)

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
                     self.source_file, keys)

    def subset_captions(self, n_captions: int) -> "Split":
        """The first images whose captions fit in ``n_captions`` (at least one image): ``--dev_length``."""
        ends = np.searchsorted(self.caption_image, np.arange(1, self.num_images + 1))
        return self.subset_images(max(1, int(np.searchsorted(ends, n_captions, side="right"))))


def load_split(root, dataset: str, split: str, num_anns: Optional[int] = None, *,
               caps_file=None, check_images: bool = True, warn_empty: bool = True) -> Split:
    """Read ``<split>_caps.txt`` (or ``caps_file``) and ``<split>_ids.txt`` and check they agree.

    Train ids are one line per image (repeated ``num_anns`` times to align with captions); every
    other split has one id line per caption, in runs of ``num_anns`` equal ids. Empty caption lines
    are kept (they are pairs too) with a warning naming them.
    """
    spec = get_spec(dataset)
    num_anns = num_anns or spec.num_anns
    ann = annotation_dir(root)
    caps_path = Path(caps_file) if caps_file else ann / f"{split}_caps.txt"
    ids_path = ann / f"{split}_ids.txt"
    captions = read_lines(caps_path)
    empty = [k + 1 for k, c in enumerate(captions) if not c.strip()]
    if empty and warn_empty:
        log.warning(f"warning: {caps_path}: {len(empty)} empty caption line(s): line "
                    f"{', '.join(map(str, empty[:5]))}{', ...' if len(empty) > 5 else ''}")
    ids = [line.strip() for line in read_lines(ids_path)]
    if split in ("train", "pretrain"):
        if len(captions) != len(ids) * num_anns:
            raise DataError(f"{caps_path} has {len(captions)} captions but {ids_path} lists {len(ids)} images "
                            f"x num_anns {num_anns} = {len(ids) * num_anns} (train ids are one line per image)")
        image_ids = ids
    else:
        if len(captions) != len(ids):
            raise DataError(f"{caps_path} has {len(captions)} captions but {ids_path} has {len(ids)} ids "
                            f"({split} ids are one line per caption)")
        if len(ids) % num_anns:
            raise DataError(f"{ids_path}: {len(ids)} lines is not a multiple of num_anns {num_anns}")
        blocks = np.asarray(ids, dtype=object).reshape(-1, num_anns)
        bad = np.nonzero((blocks != blocks[:, :1]).any(axis=1))[0]
        if len(bad):
            line = bad[0] * num_anns + 1
            raise DataError(f"{ids_path}: ids must come in runs of num_anns={num_anns} equal ids; "
                            f"the run starting at line {line} is {list(blocks[bad[0]])}")
        image_ids = list(blocks[:, 0])
    image_dir = Path(root) / "images"
    paths = [image_dir / n for n in image_file_names(spec, root, image_ids)]
    if check_images:
        check_image_files(paths)
    caption_image = np.repeat(np.arange(len(image_ids), dtype=np.int64), num_anns)
    return Split(split, captions, image_ids, paths, caption_image, num_anns, caps_path)


def check_image_files(paths: Sequence[Path], show: int = 5) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        listed = "\n  ".join(str(p) for p in missing[:show])
        raise DataError(f"{len(missing)} of {len(paths)} image files are missing, e.g.:\n  {listed}")


def load_train_split(root, dataset: str, num_anns: int, noise_ratio, *, noise_seed: int = 99,
                     noise_mode: str = "caption", log=print, check_images: bool = True):
    """The training split with noisy captions (built and cached on first use) and its noise mask.

    ``train_caps.txt`` is checked against ``train_ids.txt`` first: a bad file is blamed as itself,
    and no noisy split is built from it.
    """
    load_split(root, dataset, "train", num_anns, check_images=False)
    caps_path, mask = ensure_noisy_split(annotation_dir(root), noise_ratio, seed=noise_seed, mode=noise_mode,
                                         num_anns=num_anns, log=log)
    split = load_split(root, dataset, "train", num_anns, caps_file=caps_path, check_images=check_images,
                       warn_empty=False)
    return split, mask


# ----------------------------------------------------------------------------- CSV datasets (--dataset csv)
# open_clip's convention: one row per (image, caption) pair, a header naming the columns; rows of the same
# image form one image with several captions (any number). Derived files go beside the CSV (docs/own_data.md).

CSV_SPLIT_FLAGS = {"train": "--train_data", "dev": "--dev_data", "test": "--test_data"}


def read_csv_split(path, split: str, *, img_key: str = "filepath", caption_key: str = "title",
                   separator: str = "\t", encoding: str = "utf-8", check_images: bool = True) -> Split:
    """One split from a CSV/TSV file. Image paths are relative to the CSV's folder, or absolute.

    Fields are read by the rule of :mod:`npc.csv_format` (open_clip's quoting; a quoted field may not span
    lines; every row has the header's number of fields). Captions are grouped by image in the order images
    first appear (the row order within an image is kept). Every problem is one :class:`DataError` naming
    the file and line: a quote left open, a row with another number of fields than the header, bytes that
    are not ``encoding``, a missing column (with the columns found and the separator), an empty caption, a
    missing or unreadable image, a split of fewer than 2 images.
    """
    path = Path(path)
    flag = CSV_SPLIT_FLAGS.get(split, "--" + split)
    if not path.is_file():
        raise MissingFileError(f"{flag}: CSV file not found: {path}")
    rows = read_rows(path, separator=separator, encoding=encoding)
    header_line, header = rows[0]
    for key, kflag in ((img_key, "--csv_img_key"), (caption_key, "--csv_caption_key")):
        if key not in header:
            raise DataError(f"{path}, line {header_line}: no column {key!r} ({kflag}); the header has the column(s) "
                            f"{', '.join(repr(h) for h in header)} when split by the separator "
                            f"{separator_name(separator)} (--csv_separator)")
    ii, ci = header.index(img_key), header.index(caption_key)
    images: Dict[str, int] = {}
    ids, paths, first_line, groups = [], [], [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            hint = (": a field that holds the separator must be in double quotes" if len(row) > len(header) else "")
            raise DataError(f"{path}, line {line}: {len(row)} field(s) where the header has {len(header)} "
                            f"(separator {separator_name(separator)}, --csv_separator){hint}")
        name, caption = row[ii].strip(), row[ci]
        if not caption.strip():
            raise DataError(f"{path}, line {line}: empty caption (column {caption_key!r})")
        if not name:
            raise DataError(f"{path}, line {line}: empty image path (column {img_key!r})")
        image_path = Path(os.path.normpath(path.parent / name))  # an absolute name stays itself
        key = str(image_path)
        if key not in images:
            if check_images:
                _check_csv_image(image_path, path, line)
            images[key] = len(ids)
            ids.append(name)
            paths.append(image_path)
            first_line.append(line)
            groups.append([])
        groups[images[key]].append((line, caption))
    if len(ids) < 2:
        raise DataError(f"{path}: the {split} split has {len(ids)} image(s); retrieval needs at least 2")
    captions = [c for g in groups for _, c in g]
    lines = np.array([ln for g in groups for ln, _ in g], dtype=np.int64)
    caption_image = np.repeat(np.arange(len(ids), dtype=np.int64), [len(g) for g in groups])
    return Split(split, captions, ids, paths, caption_image, max(len(g) for g in groups), path, lines, path)


def _check_csv_image(image_path: Path, csv_path: Path, line: int) -> None:
    if not image_path.is_file():
        raise DataError(f"{csv_path}, line {line}: image not found: {image_path}")
    why = images.header_problem(image_path)  # reads the header only: the format is one PIL knows
    if why is not None:
        raise DataError(f"{csv_path}, line {line}: cannot read image {image_path}: {why}")


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
        raise DataError(f"cannot read image {split.image_paths[i]}: {why} ({split.describe_image(i)}); every image of "
                        f"the evaluation splits is read before training starts: fix or remove it, or pass "
                        f"--skip_unreadable_images to leave such images out")
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
