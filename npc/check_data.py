"""A dataset check before a long run (check_data.py): the format found, images and captions per split
against the full dataset's counts, and every missing or unreadable image with where it is listed.

Three formats (docs/data.md): the reference release's layout (``DIR/annotations/scan_split/``), Karpathy's
split file (``DIR/dataset_coco.json``, ``DIR/dataset_flickr30k.json``; :mod:`npc.karpathy`) and CSV files
(``--dataset csv``). By default an image is checked cheaply: its file exists and PIL reads its header.
A file cut short after its header (a truncated download) passes that check; ``decode=True`` reads every
image in full and finds it. :func:`check_dataset` returns a report dict, :func:`report_lines` its text.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

from npc.csv_format import DataError, encoding_arg, separator_arg
from npc.datasets import DATASETS

SPLITS = ("train", "dev", "test")
# Images per split (train, dev, test) of the full datasets, by the format that holds them.
EXPECTED = {
    ("coco", "release"): (113_287, 5_000, 5_000),
    ("coco", "karpathy"): (113_287, 5_000, 5_000),
    ("f30k", "release"): (29_000, 1_000, 1_000),   # the release's files in common use
    ("f30k", "karpathy"): (29_000, 1_014, 1_000),  # Karpathy's val has 1,014 images
    ("cc", "release"): (118_851, 1_000, 1_000),
}
FORMAT_NAMES = {"release": "the reference release's layout", "karpathy": "Karpathy's split file",
                "csv": "CSV files"}


# ----------------------------------------------------------------------------- which format

def find_format(dataset: str, root) -> Dict[str, str]:
    """``{"format": "release" | "karpathy", "source": the annotation folder or JSON}`` of a dataset folder; the
    release's layout when both are there (what training reads). A folder with neither is an error."""
    from npc.karpathy import JSON_NAMES, find_karpathy_json

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--dataset_root {root}: no such folder")
    ann = root / "annotations" / "scan_split"
    if ann.is_dir():
        return {"format": "release", "source": str(ann)}
    if dataset in JSON_NAMES:
        json_path = find_karpathy_json(root, dataset)
        if json_path is not None:
            return {"format": "karpathy", "source": str(json_path)}
        hint = f" or Karpathy's split file {root / JSON_NAMES[dataset]}"
    else:
        hint = ""
    raise DataError(f"--dataset_root {root}: no dataset found: expected the release's layout ({ann}/){hint} "
                    f"(docs/data.md)")


# ----------------------------------------------------------------------------- one split

def _read(fmt: str, dataset: str, split: str, source: str, root, num_anns: Optional[int], csv_options: dict):
    """The split (images not checked) and a function naming where its image ``i`` is listed."""
    if fmt == "karpathy":
        from npc.karpathy import describe_entry, read_karpathy_split, split_entries

        s = read_karpathy_split(source, root, dataset, split, num_anns or 5, check_images=False)
        entries = split_entries(source, dataset, split)
        return s, lambda i: describe_entry(source, *entries[i])
    if fmt == "csv":
        from npc.data import read_csv_split

        s = read_csv_split(source, split, **csv_options, check_images=False)
        first = {}
        for line, img in zip(s.source_lines, s.caption_image):
            first.setdefault(int(img), int(line))
        return s, lambda i: f"{source}, line {first[i]}"
    from npc.data import annotation_dir, load_split

    s = load_split(root, dataset, split, num_anns, check_images=False, warn_empty=False)
    ids = annotation_dir(root) / f"{split}_ids.txt"
    k = s.num_anns
    table = annotation_dir(root) / "image_name.txt"

    def where(i):
        at = f"{ids}, line {i + 1}" if split == "train" else f"{ids}, lines {i * k + 1}-{i * k + k}"
        if DATASETS[dataset].image_name is None:  # Flickr30K: the id is a line of image_name.txt
            at += f"; {table}, line {int(s.image_ids[i]) + 1}"
        return at
    return s, where


def image_problem(path, decode: bool = False) -> Optional[str]:
    """Why an image file fails the check, or None: missing, or PIL cannot read its header (or, with
    ``decode``, its whole image)."""
    if not os.path.isfile(path):
        return "missing"
    if decode:
        from npc.data import decode_error

        why = decode_error(path)
        return None if why is None else f"unreadable: {why}"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.size
    except (UnidentifiedImageError, OSError, ValueError) as e:
        return f"unreadable: {e or type(e).__name__}"
    return None


def _advice(fmt: str, dataset: str, root, kind: str) -> str:
    if kind == "unreadable":
        return ("unreadable images: the file is damaged (often a download cut short) or not an image: copy or "
                "download it again. A run stops at an unreadable dev/test image; --skip_unreadable_images leaves "
                "such images out with their captions, and an unreadable training image stops training")
    if kind == "error":
        return "a split that cannot be read: fix the file its error names (docs/data.md shows each format's files)"
    if fmt == "csv":
        return ("missing images: a CSV's image paths are relative to the CSV file's folder (or absolute): fix the "
                "path in the CSV or put the file there")
    if fmt == "karpathy" and dataset == "coco":
        return (f"missing images: MSCOCO's images go in {Path(root) / 'train2014'}/ and {Path(root) / 'val2014'}/ "
                f"under their original names (COCO_val2014_000000391895.jpg): unpack the 2014 train and val images "
                f"there")
    if fmt == "karpathy":
        return (f"missing images: Flickr30K's images go in {Path(root) / 'flickr30k-images'}/ (or images/) under "
                f"the names the JSON gives")
    if dataset in ("coco", "demo"):
        return (f"missing images: every image goes in {Path(root) / 'images'}/ as COCO_2014_<12-digit id>.jpg "
                f"(dataset/MSCOCO_rename.py renames the 2014 files; or keep the original names and folders with "
                f"Karpathy's dataset_coco.json instead, docs/data.md)")
    if DATASETS[dataset].image_name is None:
        return (f"missing images: every image goes in {Path(root) / 'images'}/ under the name image_name.txt "
                f"gives its id")
    return f"missing images: every image goes in {Path(root) / 'images'}/ as <id>.jpg"


def check_dataset(dataset: str, root=None, *, csv_files: Optional[Dict[str, Optional[str]]] = None,
                  csv_options: Optional[dict] = None, num_anns: Optional[int] = None, decode: bool = False,
                  progress: bool = False, show: int = 5) -> dict:
    """Check a dataset's splits and images; returns the report::

        {"dataset", "root", "format", "source", "decode", "ok",
         "splits": {split: {"images", "captions", "expected_images", "missing", "unreadable", "error", "source"}},
         "problems": [{"split", "kind" ("missing" | "unreadable"), "path", "why", "where"}]   (the first ``show``),
         "num_problems", "advice": [one line per kind of problem found]}

    A split that cannot be read has its one-line error in ``error``. Counts that differ from the full
    dataset's are information, not problems."""
    from npc.cli import one_line

    csv_options = csv_options or {}
    if dataset == "csv":
        files = {s: f for s, f in (csv_files or {}).items() if f}
        if not files:
            raise DataError("--dataset csv: give the CSV files to check (--train_data, --dev_data, --test_data)")
        fmt, source, root = "csv", None, None
    else:
        if dataset not in DATASETS:
            raise DataError(f"unknown dataset {dataset!r} (--dataset): choose one of {sorted(DATASETS)}")
        found = find_format(dataset, root)
        fmt, source = found["format"], found["source"]
        files = {s: source for s in SPLITS}
    expected = EXPECTED.get((dataset, fmt))
    report = {"dataset": dataset, "root": None if root is None else str(root), "format": fmt, "source": source,
              "decode": decode, "splits": {}, "problems": [], "num_problems": 0, "advice": []}
    kinds = set()
    for n, split in enumerate(SPLITS):
        row = {"images": None, "captions": None, "expected_images": expected[n] if expected else None,
               "missing": 0, "unreadable": 0, "error": None, "source": files.get(split)}
        report["splits"][split] = row
        if split not in files:
            continue
        try:
            s, where = _read(fmt, dataset, split, files[split], root, num_anns, csv_options)
        except (DataError, OSError, ValueError) as e:
            row["error"] = one_line(e)
            kinds.add("error")
            continue
        row["images"], row["captions"] = s.num_images, len(s)
        paths = s.image_paths
        if progress:
            from tqdm import tqdm

            paths = tqdm(paths, desc=f"{split} images ({'decode' if decode else 'header'})", unit="img",
                         mininterval=1.0)
        for i, path in enumerate(paths):
            why = image_problem(path, decode)
            if why is None:
                continue
            kind = "missing" if why == "missing" else "unreadable"
            row[kind] += 1
            kinds.add(kind)
            report["num_problems"] += 1
            if len(report["problems"]) < show:
                report["problems"].append({"split": split, "kind": kind, "path": str(path), "why": why,
                                           "where": where(i)})
    report["advice"] = [_advice(fmt, dataset, root, k) for k in ("missing", "unreadable", "error") if k in kinds]
    report["ok"] = not kinds
    return report


# ----------------------------------------------------------------------------- the report as text

def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def report_lines(report: dict) -> List[str]:
    fmt = report["format"]
    if fmt == "csv":
        head = f"dataset csv: {FORMAT_NAMES[fmt]}"
    else:
        head = f"dataset {report['dataset']}: {FORMAT_NAMES[fmt]}, {report['source']}"
    how = ("decoded in full" if report["decode"] else
           "file exists and its header opens (--decode reads every image in full)")
    out = [head, f"images checked: {how}",
           "", f"{'split':<6} {'images':>9} {'expected':>9} {'captions':>9} {'missing':>8} {'unreadable':>10}"]
    differ = []
    for split, r in report["splits"].items():
        if r["error"]:
            out.append(f"{split:<6} error: {r['error']}")
            continue
        if r["images"] is None:
            out.append(f"{split:<6} {'(not given)':>9}")
            continue
        out.append(f"{split:<6} {_n(r['images']):>9} {_n(r['expected_images']):>9} {_n(r['captions']):>9} "
                   f"{r['missing']:>8,} {r['unreadable']:>10,}")
        if r["expected_images"] is not None and r["images"] != r["expected_images"]:
            differ.append(split)
    if differ:
        out.append(f"note: {', '.join(differ)}: not the full dataset's number of images (a subset, or another "
                   f"split version); runs work, but their numbers are not comparable with published ones")
    out.append("")
    if report["num_problems"]:
        missing = sum(r["missing"] for r in report["splits"].values())
        unreadable = sum(r["unreadable"] for r in report["splits"].values())
        shown = len(report["problems"])
        first = f"; the first {shown}" if report["num_problems"] > shown else ""
        out.append(f"problems: {missing:,} missing, {unreadable:,} unreadable image(s){first}:")
        for p in report["problems"]:
            why = "" if p["kind"] == "missing" else f" ({p['why'].split(': ', 1)[-1]})"
            out.append(f"  {p['kind']}: {p['path']}{why}")
            out.append(f"    {p['split']} split, listed at {p['where']}")
    if report["advice"]:
        out.append("what to do:")
        out += [f"  {a}" for a in report["advice"]]
    else:
        out.append("ok: every split reads and every image " + ("decodes" if report["decode"] else "is there"))
    return out


# ----------------------------------------------------------------------------- the script's flags

def build_parser() -> argparse.ArgumentParser:
    """check_data.py's flags: the data flags of main_NPC.py, under the same names."""
    p = argparse.ArgumentParser(
        description="Check a dataset before a long run: its format, images and captions per split against the "
                    "full dataset's counts, and every missing or unreadable image (docs/data.md).",
        allow_abbrev=False)
    p.add_argument("--dataset", default="demo", choices=sorted(DATASETS),
                   help="the dataset (default demo, as in main_NPC.py); csv: your own CSV/TSV files")
    p.add_argument("--dataset_root", default=None,
                   help="the dataset's folder: the release's layout (annotations/scan_split/) or Karpathy's split "
                        "file (dataset_coco.json, dataset_flickr30k.json) with the images (default: the dataset's "
                        "folder in the repository)")
    p.add_argument("--num_anns", type=int, default=None,
                   help="captions per image (default: the dataset's, 5 for MSCOCO and Flickr30K, 1 for CC120K)")
    for split in SPLITS:
        p.add_argument(f"--{split}_data", default=None, help=f"--dataset csv: the {split} CSV/TSV file")
    p.add_argument("--csv_img_key", default="filepath", help="column of the image paths")
    p.add_argument("--csv_caption_key", default="title", help="column of the captions")
    p.add_argument("--csv_separator", type=separator_arg, default="\t",
                   help="column separator: one character, or tab (also \\t), comma, semicolon, pipe, space")
    p.add_argument("--csv_encoding", type=encoding_arg, default="utf-8", help="text encoding of the CSV files")
    p.add_argument("--decode", action="store_true",
                   help="decode every image in full (finds files cut short after their header); slower")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def run(args, print_line: Callable[[str], None] = print) -> int:
    """Check the data ``args`` name and print the report; 0 when there is no problem, else 1."""
    from npc.paths import REPO_ROOT

    if args.num_anns is not None and args.num_anns < 1:
        raise DataError(f"--num_anns must be >= 1, got {args.num_anns}")
    given = {s: getattr(args, f"{s}_data") for s in SPLITS}
    if args.dataset == "csv":
        if args.dataset_root is not None:
            raise DataError("--dataset csv reads --train_data/--dev_data/--test_data; --dataset_root is not used")
        root = None
    else:
        if any(given.values()):
            raise DataError(f"--train_data/--dev_data/--test_data are CSV files of --dataset csv, not of --dataset "
                            f"{args.dataset}")
        root = args.dataset_root or str(REPO_ROOT / DATASETS[args.dataset].default_root)
    report = check_dataset(args.dataset, root, csv_files=given, num_anns=args.num_anns, decode=args.decode,
                           progress=not args.no_progress,
                           csv_options=dict(img_key=args.csv_img_key, caption_key=args.csv_caption_key,
                                            separator=args.csv_separator, encoding=args.csv_encoding))
    for line in report_lines(report):
        print_line(line)
    return 0 if report["ok"] else 1
