"""MSCOCO and Flickr30K as Karpathy's split files hold them (``dataset_coco.json``, ``dataset_flickr30k.json``).

The other way to hold these datasets besides the reference release's layout (:mod:`npc.sources.release`); both give
the same splits (docs/data.md)::

    DIR/dataset_coco.json               MSCOCO: {"images": [...], "dataset": "coco"}
    DIR/train2014/COCO_train2014_*.jpg  MSCOCO's images, at DIR/<filepath>/<filename> (original names)
    DIR/val2014/COCO_val2014_*.jpg

    DIR/dataset_flickr30k.json          Flickr30K: {"images": [...], "dataset": "flickr30k"}
    DIR/flickr30k-images/*.jpg          Flickr30K's images (or DIR/images/*.jpg)

Every entry of ``images`` is one image: ``filename``, ``split`` (train, restval, val or test),
``sentences`` (each with ``raw`` text and its ``sentid``), ``imgid``, and for MSCOCO ``filepath`` and
``cocoid``. The splits are SCAN's: MSCOCO's training split is ``train`` followed by ``restval`` (113,287
images), dev is ``val`` and test is ``test`` (5,000 each); Flickr30K's are ``train``, ``val``, ``test``
(29,000 / 1,014 / 1,000). Each image keeps its first ``num_anns`` sentences (some MSCOCO images have 6
or 7), their ``raw`` text on one line
(:func:`npc.io.one_line`: a line break becomes a space, with a warning); an image with fewer is an error naming it.

The JSON is parsed once per process (MSCOCO's is about 150 MB and the three splits are read from it).

Derived files go to ``<root>/annotations/karpathy/``: ``train_caps.txt`` (the training captions in split
order, which the noise protocol shuffles), the noisy splits, and ``memory_bank/``. A pair's key is its
caption's ``sentid``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from npc.data import Split
from npc.errors import DataError, MissingFileError
from npc.io import has_line_break, one_line
from npc.sources import register
from npc.sources.base import DataSource, group_pairs, split_of_good_parts
from npc.sources.release import COCO, F30K

log = logging.getLogger("npc")

JSON_NAMES = {"coco": "dataset_coco.json", "f30k": "dataset_flickr30k.json"}
# The value of the JSON's "dataset" field for each --dataset.
JSON_DATASET = {"coco": "coco", "f30k": "flickr30k"}
# Our split -> the JSON's split values, in the order their images are taken.
SPLIT_PARTS = {
    "coco": {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)},
    "f30k": {"train": ("train",), "dev": ("val",), "test": ("test",)},
}
JSON_SPLITS = ("train", "restval", "val", "test")
# SCAN's splits of the full datasets, in images: what a complete copy gives.
EXPECTED_IMAGES = {"coco": {"train": 113_287, "dev": 5_000, "test": 5_000},
                   "f30k": {"train": 29_000, "dev": 1_014, "test": 1_000}}
F30K_IMAGE_DIRS = ("flickr30k-images", "images")


def _check_dataset(dataset: str) -> None:
    if dataset not in JSON_NAMES:
        raise DataError(f"Karpathy's split files hold MSCOCO or Flickr30K: --dataset coco or f30k, not {dataset!r}")


def find_karpathy_json(root, dataset: str) -> Optional[Path]:
    """``root/dataset_coco.json`` (``dataset`` "coco") or ``root/dataset_flickr30k.json`` ("f30k") when that
    file exists, else None."""
    _check_dataset(dataset)
    path = Path(root) / JSON_NAMES[dataset]
    return path if path.is_file() else None


# ----------------------------------------------------------------------------- the parsed file, once

_PARSED: Dict[Tuple[str, int, int], dict] = {}


def _load(json_path) -> dict:
    """The JSON's top-level object, checked to be ``{"images": [...], "dataset": ...}``; parsed once per
    process for a file of the same size and modification time."""
    path = Path(json_path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingFileError(f"Karpathy's split file not found: {path}") from None
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _PARSED:
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a valid JSON file ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"{path}: expected Karpathy's split file, an object with an \"images\" list "
                            f"(and \"dataset\"), found {type(data).__name__}"
                            f"{' with the keys ' + ', '.join(map(repr, list(data)[:6])) if isinstance(data, dict) else ''}")
        _PARSED.clear()  # one file at a time: MSCOCO's takes about a GB parsed
        _PARSED[key] = data
    return _PARSED[key]


def describe_entry(json_path, index: int, entry: Any) -> str:
    """An image's entry for messages: ``FILE, images[12] (imgid 12, filename X.jpg)``."""
    known = []
    if isinstance(entry, dict):
        for k in ("imgid", "filename"):
            if k in entry:
                known.append(f"{k} {entry[k]}")
    return f"{json_path}, images[{index}]" + (f" ({', '.join(known)})" if known else "")


def _field(json_path, index: int, entry: dict, name: str, kind):
    if name not in entry:
        raise DataError(f"{describe_entry(json_path, index, entry)}: no field {name!r}")
    value = entry[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(f"{describe_entry(json_path, index, entry)}: field {name!r} must be a {want}, "
                        f"found {value!r:.60}")
    return value


def _dataset_of(json_path, data: dict, dataset: Optional[str] = None) -> str:
    """Our name of the file's dataset (its "dataset" field); it must be ``dataset`` when one is given."""
    found = data.get("dataset")
    ours = {v: k for k, v in JSON_DATASET.items()}.get(found)
    if ours is None:
        raise DataError(f"{json_path}: field \"dataset\" is {found!r}; Karpathy's files have \"coco\" or \"flickr30k\"")
    if dataset is not None and ours != dataset:
        raise DataError(f"{json_path} is the {found} split file (\"dataset\": {found!r}), not one of --dataset "
                        f"{dataset} ({JSON_NAMES[dataset]})")
    return ours


def split_entries(json_path, dataset: str, split: str) -> List[Tuple[int, dict]]:
    """``(index in the JSON's images list, entry)`` of every image of ``split`` (train, dev, test), in the
    order the split takes them: JSON order within each of the split's parts (MSCOCO: train, then restval)."""
    _check_dataset(dataset)
    if split not in SPLIT_PARTS[dataset]:
        raise DataError(f"Karpathy's split files give the splits train, dev and test, not {split!r}")
    data = _load(json_path)
    _dataset_of(json_path, data, dataset)
    parts: Dict[str, List[Tuple[int, dict]]] = {p: [] for p in JSON_SPLITS}
    for i, entry in enumerate(data["images"]):
        if not isinstance(entry, dict):
            raise DataError(f"{json_path}, images[{i}]: expected an object (an image), found {entry!r:.60}")
        value = _field(json_path, i, entry, "split", str)
        if value not in parts:
            raise DataError(f"{describe_entry(json_path, i, entry)}: split {value!r} is none of "
                            f"{', '.join(JSON_SPLITS)}")
        parts[value].append((i, entry))
    _check_disjoint(json_path, dataset, parts)
    return [e for part in SPLIT_PARTS[dataset][split] for e in parts[part]]


def _check_disjoint(json_path, dataset: str, parts: Dict[str, List[Tuple[int, dict]]]) -> None:
    """No image is in two of our splits (train, dev, test): the same file (MSCOCO: ``filepath/filename``,
    Flickr30K: ``filename``) listed in the training split and in dev or test would make the evaluation score
    memory of training pairs. Karpathy's published files have none; an edited file is an error naming both
    entries."""
    where: Dict[str, Tuple[str, int, dict]] = {}
    for ours, json_parts in SPLIT_PARTS[dataset].items():
        for part in json_parts:
            for i, entry in parts[part]:
                name = entry.get("filename")
                if not isinstance(name, str):
                    continue  # reported where the split is read
                key = f"{entry.get('filepath', '')}/{name}" if dataset == "coco" else name
                first = where.setdefault(key, (ours, i, entry))
                if first[0] != ours:
                    raise DataError(f"{describe_entry(json_path, i, entry)} of the {ours} split is also a {first[0]} "
                                    f"image ({describe_entry(json_path, first[1], first[2])}): the splits must not "
                                    f"share images (its scores would measure memory of training pairs); give it "
                                    f"one split in the JSON")


def _image_path(json_path, root: Path, dataset: str, index: int, entry: dict, f30k_dir: Path) -> Path:
    name = _field(json_path, index, entry, "filename", str)
    if dataset == "coco":
        return root / _field(json_path, index, entry, "filepath", str) / name
    return f30k_dir / name


def f30k_image_dir(root) -> Path:
    """Where Flickr30K's images are: ``root/flickr30k-images/``, or ``root/images/`` when that one holds files and
    ``flickr30k-images/`` is absent or empty (an empty folder left beside the images is not where they are)."""
    root = Path(root)
    existing = [root / d for d in F30K_IMAGE_DIRS if (root / d).is_dir()]
    for d in existing:
        try:
            with os.scandir(d) as it:
                if any(True for _ in it):
                    return d
        except OSError:
            continue
    return existing[0] if existing else root / F30K_IMAGE_DIRS[0]


def read_karpathy_split(json_path, root, dataset: str, split: str, num_anns: int = 5,
                        check_images: bool = True, entries=None) -> Split:
    """Split ``split`` (train, dev or test) of MSCOCO (``dataset`` "coco") or Flickr30K ("f30k") from
    Karpathy's split file ``json_path``, its images under ``root``.

    Images come in JSON order (MSCOCO's train: its train images, then its restval images), each with its
    first ``num_anns`` sentences (``raw``, stripped), grouped by image as in every :class:`~npc.data.Split`.
    ``image_ids`` are the cocoids (MSCOCO) or file names (Flickr30K), ``pair_keys`` the captions' sentids
    (``"770337"``), ``caps_file`` the JSON. With ``check_images``, missing image files are one error
    naming them and their JSON entries. Any problem is a :class:`~npc.errors.DataError` naming the
    file and the entry (its index in ``images``, imgid and filename).
    """
    json_path, root = Path(json_path), Path(root)
    if num_anns < 1:
        raise DataError(f"num_anns must be >= 1, got {num_anns}")
    entries = split_entries(json_path, dataset, split) if entries is None else list(entries)  # check_data: a part
    f30k_dir = f30k_image_dir(root)
    captions: List[str] = []
    keys: List[str] = []
    image_ids: List[str] = []
    paths: List[Path] = []
    empty: List[str] = []
    broken: List[str] = []  # sentences whose raw text holds a line break
    for i, entry in entries:
        sentences = _field(json_path, i, entry, "sentences", list)
        if len(sentences) < num_anns:
            raise DataError(f"{describe_entry(json_path, i, entry)}: {len(sentences)} sentence(s); every image "
                            f"needs {num_anns} (--num_anns)")
        for s in sentences[:num_anns]:
            if not isinstance(s, dict):
                raise DataError(f"{describe_entry(json_path, i, entry)}: a sentence must be an object, found {s!r:.60}")
            raw = s.get("raw")
            if not isinstance(raw, str):
                raise DataError(f"{describe_entry(json_path, i, entry)}: a sentence without its text (field 'raw')"
                                f"{' (sentid ' + str(s['sentid']) + ')' if 'sentid' in s else ''}")
            if "sentid" not in s:
                raise DataError(f"{describe_entry(json_path, i, entry)}: a sentence without field 'sentid' "
                                f"({raw.strip()!r:.60})")
            text = one_line(raw)
            if has_line_break(raw.strip()):
                broken.append(f"sentid {s['sentid']}")
            if not text:
                empty.append(f"sentid {s['sentid']}")
            captions.append(text)
            keys.append(str(s["sentid"]))  # the pair's key (Split.keys): the sentid as the JSON writes it
        if dataset == "coco":
            image_ids.append(str(_field(json_path, i, entry, "cocoid", int)))
        else:
            image_ids.append(_field(json_path, i, entry, "filename", str))
        paths.append(_image_path(json_path, root, dataset, i, entry, f30k_dir))
    if len(image_ids) < 2:
        raise DataError(f"{json_path}: the {split} split ({'+'.join(SPLIT_PARTS[dataset][split])} in the JSON) has "
                        f"{len(image_ids)} image(s); retrieval needs at least 2")
    if empty:
        log.warning(f"warning: {json_path}: {len(empty)} empty sentence(s) in the {split} split: "
                    f"{', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}")
    if broken:
        log.warning(f"warning: {json_path}: {len(broken)} sentence(s) of the {split} split hold a line break, each "
                    f"read as one caption on one line (the break and the spaces around it become one space): "
                    f"{', '.join(broken[:5])}{', ...' if len(broken) > 5 else ''}")
    if check_images:
        missing = [k for k, p in enumerate(paths) if not os.path.isfile(p)]
        if missing:
            shown = "\n  ".join(f"{paths[k]} ({describe_entry(json_path, *entries[k])})" for k in missing[:5])
            raise DataError(f"{len(missing)} of {len(paths)} image files of the {split} split are missing, e.g.:\n"
                            f"  {shown}")
    image_of = [n for n in range(len(image_ids)) for _ in range(num_anns)]  # each image's num_anns sentences
    pairs = [(str(n), image_ids[n], paths[n], c, q) for n, c, q in zip(image_of, captions, keys)]
    out = group_pairs(split, pairs, caps_file=json_path)
    out.key_name = KarpathyJson.key_name
    return out


def karpathy_counts(json_path, num_anns: int = 5) -> dict:
    """Images and sentences per split of Karpathy's file, without reading any image::

        {"dataset": "coco", "json_splits": {"train": {"images": .., "sentences": ..}, "restval": .., ..},
         "splits": {"train": {"images": .., "captions": .., "short": [entries with < num_anns sentences]}, ..}}

    ``splits`` are ours (train, dev, test); ``captions`` is what :func:`read_karpathy_split` keeps
    (``num_anns`` an image), ``short`` names the first few images with fewer sentences (an error there)."""
    data = _load(json_path)
    dataset = _dataset_of(json_path, data)
    json_splits = {p: {"images": 0, "sentences": 0} for p in JSON_SPLITS}
    splits = {}
    for split in SPLIT_PARTS[dataset]:
        entries = split_entries(json_path, dataset, split)
        short = []
        for i, e in entries:
            n = len(e["sentences"]) if isinstance(e.get("sentences"), list) else 0
            json_splits[e["split"]]["sentences"] += n
            json_splits[e["split"]]["images"] += 1
            if n < num_anns:
                short.append(describe_entry(json_path, i, e))
        splits[split] = {"images": len(entries), "captions": len(entries) * num_anns, "short": short[:5],
                         "num_short": len(short)}
    return {"dataset": dataset, "json_splits": json_splits, "splits": splits}


@register
class KarpathyJson(DataSource):
    format = "karpathy"
    definitions = (COCO, F30K)
    key_name = "sentid"  # the sentence id of the caption in the JSON
    key_meaning = "the caption's sentid in the Karpathy JSON (the image column names its file)"
    expected_images = {"coco": (113_287, 5_000, 5_000), "f30k": (29_000, 1_014, 1_000)}  # Karpathy's val: 1,014

    @classmethod
    def found(cls, data) -> bool:
        return find_karpathy_json(data.dataset_root, data.dataset) is not None

    def json_path(self) -> Path:
        path = find_karpathy_json(self.data.dataset_root, self.data.dataset)
        if path is None:
            raise DataError(f"--dataset_root {self.data.dataset_root}: neither the reference release's layout "
                            f"(annotations/scan_split/) nor Karpathy's {JSON_NAMES[self.data.dataset]} is "
                            f"there (docs/data.md)")
        return path

    def expected_files(self) -> str:
        return f"Karpathy's split file {Path(self.data.dataset_root) / JSON_NAMES[self.data.dataset]}"

    def describe(self) -> str:
        return f"Karpathy's split file {self.json_path()}"

    def derived_dir(self) -> Path:
        return Path(self.data.dataset_root) / "annotations" / "karpathy"

    def inputs(self, split: str) -> List[Path]:
        return [self.json_path()]

    def parse_split(self, split: str) -> Split:
        return read_karpathy_split(self.json_path(), self.data.dataset_root, self.data.dataset, split,
                                   num_anns=self.data.num_anns or 5, check_images=False)

    def split_problems(self, split: str):
        """Every entry of the split that cannot be read, each on its own (check_data.py)."""
        first = super().split_problems(split)
        if not first[1]:
            return first
        json_path, d = self.json_path(), self.data
        try:
            entries = split_entries(json_path, d.dataset, split)
        except DataError:
            return first  # the file itself (not JSON, an unknown split value): its one problem

        def read(part):
            return read_karpathy_split(json_path, d.dataset_root, d.dataset, split, num_anns=d.num_anns or 5,
                                       check_images=False, entries=part)

        # one entry is read as two images (a split needs 2): its problem, named by its entry
        return split_of_good_parts(entries, lambda entry: read([entry, entry]), read)

    def train_caps_path(self) -> Path:
        return self.derived_dir() / "train_caps.txt"

    def listed_at(self, split: Split, image_index: int) -> str:
        return describe_entry(self.json_path(), *split_entries(self.json_path(), self.data.dataset, split.name)[image_index])

    def missing_images_advice(self) -> str:
        root = Path(self.data.dataset_root)
        if self.data.dataset == "coco":
            return (f"missing images: MSCOCO's images go in {root / 'train2014'}/ and {root / 'val2014'}/ under their "
                    f"original names (COCO_val2014_000000391895.jpg): unpack the 2014 train and val images there")
        used = f30k_image_dir(root)
        other = [d for d in F30K_IMAGE_DIRS if d != used.name]
        return (f"missing images: Flickr30K's images are read from {used}/ (the first of "
                f"{' or '.join(d + '/' for d in F30K_IMAGE_DIRS)} that holds files), under the names the JSON gives: "
                f"put them there" + (f" (or in {root / other[0]}/, with {used}/ empty or absent)" if other else ""))

    def write_cleaned(self, split: Split, keep, out) -> List[Path]:
        """Karpathy's JSON with the training images' sentences not kept taken out (``sentences`` and ``sentids``;
        an image left without a sentence leaves the file); every other entry and field as it is."""
        from npc.io import atomic_write_text

        out = self.cleaned_target(out, ".json")
        k = self.data.num_anns or 5
        drop, pos = set(), 0  # (index in the JSON's images, sentence's position) of the pairs not kept
        for i, entry in split_entries(self.json_path(), self.data.dataset, "train"):
            for j in range(min(k, len(entry["sentences"]))):  # the split's pairs, in its order (read_karpathy_split)
                if not keep[pos]:
                    drop.add((i, j))
                pos += 1
        if pos != len(keep):
            raise DataError(f"{self.json_path()} changed since the training split was read: run the command again")
        data = dict(_load(self.json_path()))  # the parsed file is kept per process: changed in copies only
        images = []
        for i, entry in enumerate(data["images"]):
            gone = [j for j in range(len(entry.get("sentences", []))) if (i, j) in drop] if isinstance(entry, dict) \
                else []
            if gone:
                ids = {entry["sentences"][j].get("sentid") for j in gone}
                entry = {**entry, "sentences": [x for j, x in enumerate(entry["sentences"]) if j not in gone]}
                if isinstance(entry.get("sentids"), list):
                    entry["sentids"] = [q for q in entry["sentids"] if q not in ids]
                if not entry["sentences"]:
                    continue
            images.append(entry)
        data["images"] = images
        atomic_write_text(out, json.dumps(data))
        return [out]

    def bank_dir(self, model_key) -> Path:
        return self.derived_dir() / "memory_bank"
