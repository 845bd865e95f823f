"""The noise report's data and files: what a report shows (:class:`ReportData`), ``pairs.csv``, ``report.json``,
and the folder with its page (npc/report_html.py), written whole or not at all (:func:`write_report`). The scores
themselves are computed by :mod:`npc.noise_report`.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from npc.errors import UserError, WriteError
from npc.report_data import DETECTORS, ReportData, _num, ranks_of  # noqa: F401  (where callers find them)

#: pairs.csv's columns, in order (``noisy`` only with a ground-truth mask; a ``weight_<run>`` per ``--run``).
COLUMNS = {
    "rank": "1 = the most suspicious pair: by p_clean ascending, ties by cosine ascending",
    "key": "the pair's key as its data source defines it, the same in every per-pair file (pair_weights.csv, "
           "the bank's p(clean) CSV, report.json): your CSV's line (the header is line 1), Karpathy's sentid, a "
           "shard's <file>:<key>, the release layout's line of train_caps.txt (report.json's dataset.key says which)",
    "image": "the image, as your CSV names it (built-in datasets: relative to the dataset folder); a leading ' "
             "added where a spreadsheet would run it as a formula (it starts with =, +, -, @, a tab or a CR)",
    "caption": "the caption; a leading ' added where a spreadsheet would run it as a formula",
    "p_clean": "the memory bank's GMM p(clean), 0..1 (higher = more likely clean)",
    "flagged": "1 if p_clean <= --clean_threshold: outside the memory bank's clean set (gmm_filter leaves it out)",
    "loss": "the pair's InfoNCE loss within its batch of --bank_batch_size consecutive pairs: the GMM's input",
    "cosine": "cosine of the image and caption features, -1..1 (DataComp's CLIP score)",
    "cosine_rank": "1 = the lowest cosine",
    "osa_score": "OSA's debiased score, logit_scale * cosine - shift (same order as the cosine)",
    "osa_zero": "1 if osa_score <= 0: OSA gives the pair weight 0",
    "noisy": "ground truth, only on a split this project made noisy: 1 if the caption was shuffled",
    "weight_<run>": "per --run: the mean over the run's epochs of the weight its method gave the pair "
                    "(empty: never drawn)",
    "pair": "the pair's index in the training split (0-based; the order of <r>_mbank_pclean.npy and "
            "pair_weights.npz)",
}



class ReportError(UserError, ValueError):
    """A report that cannot be written as asked; the message names the flag or file."""



def detector_metrics(scores: Dict[str, np.ndarray], noise_mask: np.ndarray) -> Dict[str, Dict]:
    """ROC-AUC (clean positive) and OSA's mean noise rank of each score against the ground truth.
    Pairs without a score (NaN: a run's pairs it never drew) are left out of that score's numbers; a
    number that does not exist (no noisy pair, or no clean one) is None."""
    from npc.detection import mean_noise_rank, weight_auc

    out = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        ok = np.isfinite(s)
        m = np.asarray(noise_mask, dtype=bool)[ok]
        metrics = {"auc": weight_auc(s[ok], m), **mean_noise_rank(s[ok], m), "n_scored": int(ok.sum())}
        out[name] = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    return out


def report_identity(d: ReportData) -> Dict[str, str]:
    """What a report is, for the page's saved decisions and its ``decisions.csv``: ``data_fingerprint``, the
    training split's (:func:`npc.pair_weights.split_fingerprint`: its captions, images and pairs, in order; the
    fingerprint a run's pair weights carry) and ``run``, a short hash of the report's dataset, model and settings
    (the same command gives the same run, so its page finds the decisions made in an earlier copy)."""
    import hashlib
    import json

    from npc.pair_weights import split_fingerprint

    what = {k: d.meta.get(k) for k in ("dataset", "model", "settings")}
    run = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]
    decided = d.meta.get("pair_decisions")  # --pair_decisions: the split before the wrong pairs left it
    return {"data_fingerprint": decided["data_fingerprint"] if decided else split_fingerprint(d.split), "run": run}


def report_json(d: ReportData) -> Dict:
    s = d.scores
    flagged = s.p_clean <= d.clean_threshold
    ranks = ranks_of(d.order)
    out = {
        "pairs": d.n, "images": int(d.split.num_images), "clean_threshold": d.clean_threshold,
        "flagged": int(flagged.sum()), "osa_zero": int((s.osa_score <= 0).sum()),
        "gmm": s.gmm, "osa_shift": s.osa_shift, "logit_scale": s.logit_scale,
        "columns": {k: v for k, v in COLUMNS.items() if k != "noisy" or d.noise_mask is not None},
        "runs": {name: {"path": str(pw.path), "method": pw.method, "kind": pw.kind, "epochs": pw.epochs.tolist()}
                 for name, pw in d.runs.items()},
        "shown": {"suspicious": [int(j) for j in d.order[:d.top]],
                  "trusted": [int(j) for j in d.order[::-1][:d.trusted]],
                  # each row of the page: the pair, its rank and its key as the data source defines it
                  "rows": [{"section": section, "rank": int(ranks[j]), "pair": j, "key": d.keys[j]}
                           for section, j in d.shown()]},
        "identity": report_identity(d),
    }
    if d.candidates is not None:  # per suspicious pair shown: the captions that fit its image best [pair, cos, key]
        out["shown"]["candidates"] = [[[int(c), round(float(v), 6), d.keys[int(c)]] for c, v in zip(idx, sims)]
                                      for idx, sims in zip(*d.candidates)]
        out["shown"]["candidates_note"] = ("the page shows each distinct text once: candidates with equal texts are "
                                           "merged into one line that lists their keys")
    if d.noise_mask is None:
        out["ground_truth"] = None
        out["detectors"] = "not measurable: this split has no ground-truth noise mask (real noise)"
    else:
        scores = {name: s.detector(name) for name in DETECTORS}
        scores.update({f"run {name}": v for name, v in d.run_means().items()})
        out["ground_truth"] = {"noisy": int(d.noise_mask.sum()),
                               "flagged_noisy": int((flagged & d.noise_mask).sum()),
                               "flagged_clean": int((flagged & ~d.noise_mask).sum())}
        out["detectors"] = detector_metrics(scores, d.noise_mask)
        if d.candidates is not None and d.clean_captions is not None:
            noisy = found = 0
            for k, j in enumerate(d.order[:d.top]):
                if d.noise_mask[j]:
                    noisy += 1
                    found += d.clean_captions[j] in {d.split.captions[c] for c in d.candidates[0][k]}
            out["candidates"] = {"k": int(d.candidates[0].shape[1]), "shown_noisy": noisy,
                                 "true_caption_among_candidates": found}
    out.update(d.meta)
    return out


def _fmt(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.6g}"


def write_pairs_csv(path: Path, d: ReportData) -> None:
    """``pairs.csv``: one row per pair, most suspicious first (columns: :data:`COLUMNS`); a caption or image
    name a spreadsheet would run as a formula is written with a leading ``'`` (:func:`npc.io.formula_safe`)."""
    from npc.io import atomic_write_csv

    s = d.scores
    ranks = ranks_of(d.order)
    cos_rank = ranks_of(np.lexsort((np.arange(d.n), s.cosine)))
    runs = d.run_means()
    header = ["rank", "key", "image", "caption", "p_clean", "flagged", "loss", "cosine", "cosine_rank", "osa_score",
              "osa_zero"] + (["noisy"] if d.noise_mask is not None else []) + [f"weight_{n}" for n in runs] + ["pair"]
    ci = d.split.caption_image

    def rows():
        for j in d.order:
            row = [ranks[j], d.keys[j], d.images[ci[j]], d.split.captions[j], _fmt(s.p_clean[j]),
                   int(s.p_clean[j] <= d.clean_threshold), _fmt(s.losses[j]), _fmt(s.cosine[j]), cos_rank[j],
                   _fmt(s.osa_score[j]), int(s.osa_score[j] <= 0)]
            if d.noise_mask is not None:
                row.append(int(d.noise_mask[j]))
            row += [_fmt(v[j]) for v in runs.values()]
            row.append(j)
            yield row

    atomic_write_csv(path, header, rows())


# ----------------------------------------------------------------------------- the folder

def check_out_folder(out) -> Path:
    """``--out``: a new folder, an empty one, or an earlier report (replaced); anything else is refused."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ReportError(f"--out {out}: is a file; the report is a folder")
        if any(out.iterdir()) and not (out / "report.json").is_file():
            raise ReportError(f"--out {out}: the folder holds files and is not a noise report; choose another --out")
    return out


def publish_folder(out: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a temporary folder beside ``out``, then rename it to ``out`` (replacing an
    earlier report): ``out`` is complete or absent, never half-written."""
    out = check_out_folder(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:  # a read-only folder, a full disk: name the report we meant to write
        raise WriteError(e.errno, f"cannot write the report: {e.strerror}", str(out)) from None
    try:
        build(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = tmp.with_name(tmp.name[:-4] + ".old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, UserError):
            raise WriteError(e.errno, f"cannot write the report: {e.strerror}", str(out)) from None
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_report(out, d: ReportData, finish: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Write the report folder ``out`` (pairs.csv, report.json, index.html); returns report.json's content.
    ``finish(summary)`` completes it (e.g. timings) just before report.json is written."""
    from npc.io import atomic_write_json, atomic_write_text
    from npc.report_html import render_html

    summary = report_json(d)

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        write_pairs_csv(tmp / "pairs.csv", d)
        atomic_write_text(tmp / "index.html", render_html(d, summary))
        summary.setdefault("timing", {})["write_s"] = round(time.perf_counter() - t0, 3)
        if finish is not None:
            finish(summary)
        atomic_write_json(tmp / "report.json", summary)

    publish_folder(Path(out), build)
    return summary


