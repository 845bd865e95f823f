"""A dataset check before a long run (check_data.py): the format found, images and captions per split
against the full dataset's counts, and every problem of every split in one run, grouped by split: the
entries that cannot be read (a JSON entry without its sentences, a shard that is not a tar, ...; each
format lists every bad entry where it can read past one), missing images and unreadable ones, each with
its place in the user's file, and what to do about each kind.

Every format a data source reads (npc/sources; docs/data.md): the source says where each image is
listed, what to do about a missing one and how many images the full dataset has. By default an image is
checked cheaply: its file exists and PIL reads its header. A file cut short after its header (a
truncated download) passes that check; ``decode=True`` reads every image in full and finds it.
:func:`check_dataset` returns a report dict, :func:`report_lines` its text.
"""
from __future__ import annotations

from typing import Callable, List, Optional

from npc.errors import DataError

SPLITS = ("train", "dev", "test")


def image_problem(path, decode: bool = False) -> Optional[str]:
    """Why an image file fails the check, or None: missing, or PIL cannot read its header (or, with
    ``decode``, its whole image): the policy of npc/images.py, whatever the file's name."""
    from npc.images import header_problem, image_exists

    if not image_exists(path):  # a file, or a member of a tar shard
        return "missing"
    if decode:
        from npc.data import decode_error

        why = decode_error(path)
    else:
        why = header_problem(path)
    return None if why is None else f"unreadable: {why}"


KINDS = ("entry", "missing", "unreadable")  # the kinds of problems, in the order they are listed


def _advice(source, kind: str) -> str:
    from npc.images import UNREADABLE_ADVICE

    if kind == "unreadable":
        return f"unreadable images: {UNREADABLE_ADVICE} (copy or download it again)"
    if kind == "entry":
        return ("entries that cannot be read: fix each at the place its line names (docs/data.md shows each "
                "format's files); a split is checked for images only as far as its entries read")
    return source.missing_images_advice()


def check_dataset(data, *, decode: bool = False, progress: bool = False, show: int = 10) -> dict:
    """Check the splits and images of the data a :class:`npc.config.DataConfig` names; returns the report::

        {"dataset", "root", "format", "source", "decode", "ok",
         "splits": {split: {"images", "captions", "expected_images", "missing", "unreadable", "error", "source"}},
         "problems": [{"split", "kind" ("entry" | "missing" | "unreadable"), "path", "why", "where"}]
                     (every entry problem; the first ``show`` images of each kind per split),
         "num_problems", "advice": [one line per kind of problem found]}

    Every split is checked, whatever another split's problems: a split whose entries cannot all be read has
    each bad entry as a problem (``why``: its one line, naming the file and the entry) and its images checked
    as far as its entries read; ``error`` says how many of its entries failed. Counts that differ from the
    full dataset's are information, not problems."""
    from npc.cli import one_line
    from npc.sources import source_for

    source = source_for(data)
    given = {s: f for s, f in data.split_files().items() if f}
    if source.reads_split_files and not given:
        raise DataError(f"--dataset {data.dataset}: give the files to check: {source.expected_files()}")
    splits = [s for s in SPLITS if s in given] if given else list(SPLITS)
    expected = source.expected_images.get(data.dataset)
    report = {"dataset": data.dataset, "root": data.dataset_root, "format": source.format,
              "source": source.describe(), "decode": decode, "splits": {}, "problems": [], "num_problems": 0,
              "advice": []}
    kinds = set()
    for n, split in enumerate(SPLITS):
        row = {"images": None, "captions": None, "expected_images": expected[n] if expected else None,
               "entry": 0, "missing": 0, "unreadable": 0, "error": None, "source": given.get(split)}
        report["splits"][split] = row
        if split not in splits:
            continue
        try:
            s, bad = source.split_problems(split)
        except (DataError, OSError, ValueError) as e:
            s, bad = None, [one_line(e)]
        for why in bad:
            row["entry"] += 1
            report["num_problems"] += 1
            report["problems"].append({"split": split, "kind": "entry", "path": None, "why": why, "where": why})
        if bad:
            kinds.add("entry")
            row["error"] = bad[0] if len(bad) == 1 else f"{len(bad)} entries that cannot be read (listed below)"
        if s is None:
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
            if row[kind] <= show:
                report["problems"].append({"split": split, "kind": kind, "path": str(path), "why": why,
                                           "where": source.listed_at(s, i)})
    report["advice"] = [_advice(source, k) for k in KINDS if k in kinds]
    report["ok"] = not kinds
    return report


# ----------------------------------------------------------------------------- the report as text

def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def report_lines(report: dict) -> List[str]:
    head = f"dataset {report['dataset']}: {report['source']}"
    how = ("decoded in full" if report["decode"] else
           "file exists and its header opens (--decode reads every image in full)")
    out = [head, f"images checked: {how}",
           "", f"{'split':<6} {'images':>9} {'expected':>9} {'captions':>9} {'missing':>8} {'unreadable':>10}"]
    differ = []
    for split, r in report["splits"].items():
        if r["error"] and r["images"] is None:
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
        total = {k: sum(r[k] for r in report["splits"].values()) for k in KINDS}
        shown = len(report["problems"])
        first = f" ({shown:,} listed)" if report["num_problems"] > shown else ""
        entries = f", {total['entry']:,} entr{'y' if total['entry'] == 1 else 'ies'} that cannot be read" \
            if total["entry"] else ""
        out.append(f"problems: {total['missing']:,} missing, {total['unreadable']:,} unreadable image(s){entries}"
                   f"{first}, by split:")
        for split, r in report["splits"].items():
            mine = [p for p in report["problems"] if p["split"] == split]
            if not mine:
                continue
            counts = ", ".join(f"{r[k]:,} {k if k != 'entry' else 'bad entr' + ('y' if r[k] == 1 else 'ies')}"
                               for k in KINDS if r[k])
            out.append(f"  {split} split ({counts}):")
            for p in mine:
                if p["kind"] == "entry":
                    out.append(f"    entry: {p['why']}")
                    continue
                why = "" if p["kind"] == "missing" else f" ({p['why'].split(': ', 1)[-1]})"
                out.append(f"    {p['kind']}: {p['path']}{why}")
                out.append(f"      listed at {p['where']}")
    if report["advice"]:
        out.append("what to do:")
        out += [f"  {a}" for a in report["advice"]]
    else:
        out.append("ok: every split reads and every image " + ("decodes" if report["decode"] else "is there"))
    return out


# ----------------------------------------------------------------------------- the script

def run(cfg, print_line: Callable[[str], None] = print) -> int:
    """Check the data of ``cfg`` (check_data.py's configuration: its data section and its check) and print the
    report; 0 when there is no problem, else 1."""
    report = check_dataset(cfg.data, decode=cfg.check.decode, progress=not cfg.run.no_progress)
    for line in report_lines(report):
        print_line(line)
    if cfg.data.pair_decisions and report["ok"]:  # the file against the noisy training split
        from npc.decisions import load_decided_train
        from npc.sources import source_for

        source = source_for(cfg.data)
        quiet = lambda m: print_line(m) if "decisions" in m else None  # noqa: E731
        if cfg.check.write_cleaned:
            from npc.decisions import write_cleaned

            write_cleaned(source, cfg.data, cfg.check.write_cleaned, log=quiet)
        else:
            load_decided_train(source, cfg.data, log=quiet)
    elif cfg.check.write_cleaned and not cfg.data.pair_decisions:
        from npc.errors import ConfigError

        raise ConfigError("--write_cleaned needs --pair_decisions FILE (the pairs to leave out)")
    return 0 if report["ok"] else 1
