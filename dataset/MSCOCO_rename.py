#!/usr/bin/env python
"""Rename MSCOCO 2014 images to the single-folder names the data loader expects.

    python dataset/MSCOCO_rename.py dataset/MSCOCO/images           # dry run: show the plan
    python dataset/MSCOCO_rename.py dataset/MSCOCO/images --apply   # do it

``COCO_train2014_%012d.jpg`` and ``COCO_val2014_%012d.jpg`` become ``COCO_2014_%012d.jpg`` in
place (copy train2014/ and val2014/ into one folder first). Other files are left alone.

Nothing is ever overwritten: every planned rename is checked first, and if any target already
exists or two sources would map to the same target, all conflicts are reported and NOTHING is
renamed. Re-running after a completed (or interrupted) run is safe: renamed files no longer
match the source pattern.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

SOURCE_RE = re.compile(r"^COCO_(?:train|val)2014_(\d{12})\.jpg$")
TARGET_FMT = "COCO_2014_{}.jpg"
_SHOW = 10  # planned renames shown in a dry run without --verbose


def plan_renames(images_dir: Path) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """(renames, conflicts) for ``images_dir``; renames are (source, target) pairs, sorted."""
    renames: List[Tuple[Path, Path]] = []
    by_target: Dict[str, List[str]] = {}
    for entry in sorted(os.scandir(images_dir), key=lambda e: e.name):
        m = SOURCE_RE.match(entry.name)
        if not m or not entry.is_file():
            continue
        target = TARGET_FMT.format(m.group(1))
        renames.append((Path(entry.path), images_dir / target))
        by_target.setdefault(target, []).append(entry.name)

    conflicts = []
    for target, sources in sorted(by_target.items()):
        tpath = images_dir / target
        if os.path.lexists(tpath):
            conflicts.append(f"{target} already exists (would be overwritten by "
                             f"{', '.join(sources)})")
        if len(sources) > 1:
            conflicts.append(f"{target} would be the target of several files: "
                             f"{', '.join(sources)}")
    return renames, conflicts


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False,
        description="Rename COCO_train2014_*/COCO_val2014_* images to COCO_2014_* in place. "
                    "Dry run unless --apply.")
    p.add_argument("images_dir", type=Path,
                   help="folder holding the MSCOCO train2014 and val2014 images together")
    p.add_argument("--apply", action="store_true",
                   help="really rename (default: only print what would be done)")
    p.add_argument("--verbose", action="store_true",
                   help="list every rename (default: the first few)")
    args = p.parse_args(argv)

    images_dir: Path = args.images_dir
    if not images_dir.is_dir():
        p.error(f"not a folder: {images_dir}")

    renames, conflicts = plan_renames(images_dir)
    if conflicts:
        print(f"refusing to rename anything: {len(conflicts)} conflict(s) in {images_dir}:",
              file=sys.stderr)
        for c in conflicts:
            print(f"  {c}", file=sys.stderr)
        return 1
    if not renames:
        print(f"nothing to rename in {images_dir} (no COCO_train2014_/COCO_val2014_ .jpg files)")
        return 0

    shown = renames if (args.verbose or len(renames) <= _SHOW) else renames[:_SHOW]
    verb = "renaming" if args.apply else "would rename"
    for src, dst in shown:
        print(f"{verb} {src.name} -> {dst.name}")
    if len(shown) < len(renames):
        print(f"... and {len(renames) - len(shown)} more (--verbose lists all)")

    if not args.apply:
        print(f"dry run: {len(renames)} file(s) would be renamed in {images_dir}; "
              f"re-run with --apply to do it")
        return 0

    done = 0
    for src, dst in renames:
        # Re-check just before renaming: os.rename would silently replace a file that appeared
        # since planning (POSIX), and refusing to overwrite is the point of this script.
        if os.path.lexists(dst):
            print(f"error: {dst} appeared during renaming; stopped after {done} of "
                  f"{len(renames)} renames (re-run to continue)", file=sys.stderr)
            return 1
        try:
            os.rename(src, dst)
        except OSError as e:
            print(f"error: renaming {src} -> {dst} failed: {e}; stopped after {done} of "
                  f"{len(renames)} renames (re-run to continue)", file=sys.stderr)
            return 1
        done += 1
    print(f"renamed {done} file(s) in {images_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
