"""A person's decisions about training pairs (``--pair_decisions decisions.csv``), read once and checked.

The file is what the noise report's page downloads (docs/own_data.md, "Review the suspicious pairs"): a first
line ``# npc pair decisions: data_fingerprint <sha256>, run <id>, dataset <name>``, then ``key,decision,caption``
rows. ``key`` is the pair's key as its data source names it (:attr:`npc.data.Split.keys`), ``decision`` one of
``wrong``, ``right``, ``unsure``. The fingerprint is that of the noisy training split the report scored
(:func:`npc.pair_weights.split_fingerprint`): a file made for other data is refused.

What the decisions do (:func:`decided_train`): the pairs marked *wrong* leave the training split (an image whose
captions are all wrong leaves with them), the pairs marked *right* count as clean in the memory bank's clean set
(:func:`right_pairs`, read by the bank's build), *unsure* changes nothing. Every error is one line naming the file
and its line.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from npc.data import Split
from npc.errors import DataError, MissingFileError
from npc.io import file_sha256

DECISIONS = ("wrong", "right", "unsure")
HEADER = re.compile(r"^#\s*npc pair decisions:\s*data_fingerprint\s+([0-9a-fA-F]{64})\b(.*)$")
FLAG = "--pair_decisions"


class DecisionsError(DataError):
    """A decisions file that cannot be used: its message names the file and the line."""


@dataclass(frozen=True)
class Decisions:
    """A decisions file as read: ``rows`` maps each key to ``(decision, line number)``."""

    path: Path
    sha256: str
    data_fingerprint: str
    rows: Dict[str, Tuple[str, int]]

    def count(self, decision: str) -> int:
        return sum(1 for d, _ in self.rows.values() if d == decision)

    def keys_of(self, decision: str) -> List[str]:
        return [k for k, (d, _) in self.rows.items() if d == decision]


_READ: Dict[Tuple[str, str], Decisions] = {}


def read_decisions(path) -> Decisions:
    """The file at ``path``, checked on its own: its first line, its column names, every row's decision, no key
    twice. Kept per content (a run reads it from several places)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{FLAG} {path}: no such file (the page's 'download decisions.csv' writes it)")
    sha = file_sha256(path)
    kept = _READ.get((str(path), sha))
    if kept is not None:
        return kept
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DecisionsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = text.splitlines()
    m = HEADER.match(lines[0].strip()) if lines else None
    if m is None:
        raise DecisionsError(f"{path}, line 1: expected '# npc pair decisions: data_fingerprint <sha256>, ...' (the "
                             f"first line of the page's decisions.csv), got {lines[0][:80]!r}" if lines else
                             f"{path}: the file is empty")
    reader = csv.reader(io.StringIO("\n".join(lines[1:])))
    rows: Dict[str, Tuple[str, int]] = {}
    header_seen = False
    for row in reader:
        n = reader.line_num + 1  # the file's line (the first line is the fingerprint's)
        if not row or all(not f.strip() for f in row):
            continue
        if not header_seen:
            if [f.strip() for f in row[:2]] != ["key", "decision"]:
                raise DecisionsError(f"{path}, line {n}: expected the column names 'key,decision,caption', got "
                                     f"{','.join(row)[:80]!r}")
            header_seen = True
            continue
        if len(row) < 2:
            raise DecisionsError(f"{path}, line {n}: expected 'key,decision,caption', got {','.join(row)[:80]!r}")
        key, decision = row[0].strip(), row[1].strip().lower()
        if decision not in DECISIONS:
            raise DecisionsError(f"{path}, line {n}: unknown decision {row[1]!r} for {key!r} (one of "
                                 f"{', '.join(DECISIONS)})")
        if key in rows:
            raise DecisionsError(f"{path}, line {n}: {key!r} is decided twice (first on line {rows[key][1]}); keep "
                                 f"one row per pair")
        rows[key] = (decision, n)
    out = _READ[(str(path), sha)] = Decisions(path, sha, m.group(1).lower(), rows)
    return out


def check_split(dec: Decisions, split: Split) -> List[str]:
    """``split`` (the noisy training split) is the one the decisions were made on, and holds every key; returns
    the split's keys."""
    from npc.pair_weights import split_fingerprint

    now = split_fingerprint(split)
    if now != dec.data_fingerprint:
        raise DecisionsError(f"{dec.path}, line 1: the decisions were made on other data (data_fingerprint "
                             f"{dec.data_fingerprint[:12]}...; this training split's is {now[:12]}...): decide on a "
                             f"report of this data (find_noisy_pairs.py with the same data flags)")
    keys = split.keys
    known = set(keys)
    for key, (_, n) in dec.rows.items():
        if key not in known:
            raise DecisionsError(f"{dec.path}, line {n}: no pair of the training split has the key {key!r} (keys are "
                                 f"as the data source names them, e.g. {keys[0]!r})")
    return keys


def drop_pairs(split: Split, drop: np.ndarray) -> Split:
    """``split`` without the pairs ``drop`` (a boolean mask over its pairs); images left without a caption leave too.
    Keys, lines and order of the rest are kept."""
    keep = ~np.asarray(drop, dtype=bool)
    kept_images = np.zeros(split.num_images, dtype=bool)
    kept_images[split.caption_image[keep]] = True
    renumber = np.cumsum(kept_images) - 1
    idx = np.nonzero(keep)[0]
    counts = np.bincount(renumber[split.caption_image[idx]], minlength=int(kept_images.sum()))
    lines, source_file = split.source_lines, split.source_file
    if lines is None and split.pair_keys is None:  # keys by position (the caption file's line): kept as lines
        lines, source_file = np.arange(1, len(split) + 1, dtype=np.int64), split.caps_file
    return Split(split.name, [split.captions[i] for i in idx],
                 [x for x, k in zip(split.image_ids, kept_images) if k],
                 [x for x, k in zip(split.image_paths, kept_images) if k],
                 renumber[split.caption_image[idx]].astype(np.int64), int(counts.max()) if len(counts) else 0,
                 split.caps_file, None if lines is None else lines[idx], source_file,
                 None if split.pair_keys is None else [split.pair_keys[i] for i in idx])


def decided_train(path, split: Split, mask: Optional[np.ndarray], log: Callable[[str], None] = print
                  ) -> Tuple[Split, Optional[np.ndarray], Dict]:
    """The noisy training ``split`` and its noise ``mask`` (None: not known) without the pairs the decisions at
    ``path`` mark wrong, and a summary for the log, results.json and the checkpoint: the file, its sha256, the
    counts of each decision, the pairs dropped, and (noise known) how many of the decisions agree with it."""
    dec = read_decisions(path)
    keys = check_split(dec, split)
    decision = [dec.rows.get(k, ("", 0))[0] for k in keys]
    wrong = np.array([d == "wrong" for d in decision], dtype=bool)
    right = np.array([d == "right" for d in decision], dtype=bool)
    summary = {"file": str(dec.path), "sha256": dec.sha256, "data_fingerprint": dec.data_fingerprint,
               "wrong": int(wrong.sum()), "right": int(right.sum()), "unsure": dec.count("unsure"),
               "pairs_before": len(split), "pairs_dropped": int(wrong.sum())}
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        summary["wrong_truly_noisy"] = int((wrong & m).sum())
        summary["right_truly_clean"] = int((right & ~m).sum())
    out = drop_pairs(split, wrong)
    summary["pairs_after"], summary["images_dropped"] = len(out), split.num_images - out.num_images
    log(f"pair decisions {dec.path} (sha256 {dec.sha256[:12]}): {summary['wrong']} wrong pairs left out of the "
        f"training split ({len(split)} -> {len(out)} pairs, {summary['images_dropped']} images without a caption "
        f"left too), {summary['right']} right (clean in the memory bank), {summary['unsure']} not sure")
    return out, None if mask is None else np.asarray(mask, dtype=bool)[~wrong], summary


def load_decided_train(source, data, log: Callable[[str], None] = print
                       ) -> Tuple[Split, Optional[np.ndarray], Optional[Dict]]:
    """``source.load_train`` with ``data.pair_decisions`` applied (None: as it is, and no summary)."""
    split, mask = source.load_train(log=log)
    path = data.pair_decisions
    if not path:
        return split, mask, None
    return decided_train(path, split, mask, log)


def right_pairs(path, split: Split) -> np.ndarray:
    """Indices of the pairs of ``split`` (the training split as a run uses it) the decisions mark right."""
    dec = read_decisions(path)
    right = {k for k in dec.keys_of("right")}
    return np.array([i for i, k in enumerate(split.keys) if k in right], dtype=np.int64)


def decisions_fingerprint(path) -> Optional[Dict]:
    """The decisions file by content (a run's fingerprints; a resumed run is refused if it changed)."""
    if not path:
        return None
    dec = read_decisions(path)
    return {"sha256": dec.sha256, "wrong": dec.count("wrong"), "right": dec.count("right"),
            "unsure": dec.count("unsure")}


def write_cleaned(source, data, out, log: Callable[[str], None] = print) -> List[Path]:
    """``check_data.py --write_cleaned OUT``: the training split without the pairs ``data.pair_decisions`` marks
    wrong, written by the data's source in its own format (:meth:`npc.sources.base.DataSource.write_cleaned`)."""
    split, mask = source.load_train(log=lambda *_: None, check_images=False)
    _, _, summary = decided_train(data.pair_decisions, split, mask, log)
    dec = read_decisions(data.pair_decisions)
    wrong = set(dec.keys_of("wrong"))
    keep = np.array([k not in wrong for k in split.keys], dtype=bool)
    paths = source.write_cleaned(split, keep, Path(out))
    log(f"pair decisions: wrote the training split without its {summary['wrong']} wrong pairs "
        f"({int(keep.sum())} pairs) to {', '.join(map(str, paths))}")
    return paths
