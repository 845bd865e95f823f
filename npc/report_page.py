"""The noise report's folder: what a report shows (:class:`ReportData`), ``pairs.csv``, ``report.json`` and
the self-contained ``index.html`` (images as data URIs, inline SVG figures, no network), written whole or
not at all (:func:`write_report`). The scores themselves are computed by :mod:`npc.noise_report`.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from npc.errors import UserError, WriteError

DETECTORS = {"p_clean": "GMM p(clean) (the memory bank's)", "cosine": "cosine of the pair",
             "osa_score": "OSA's debiased score"}

#: pairs.csv's columns, in order (``noisy`` only with a ground-truth mask; a ``weight_<run>`` per ``--run``).
COLUMNS = {
    "rank": "1 = the most suspicious pair: by p_clean ascending, ties by cosine ascending",
    "line": "the pair's line in your CSV file (the header is line 1); for a built-in dataset, the caption's line "
            "in the training captions file",
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

THUMB_PX = 96


class ReportError(UserError, ValueError):
    """A report that cannot be written as asked; the message names the flag or file."""



def ranks_of(order: np.ndarray) -> np.ndarray:
    """``rank[pair]`` (1-based) of a permutation ``order`` (``order[0]`` gets rank 1)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


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


def _num(v, spec: str) -> str:
    return "&ndash;" if v is None else format(v, spec)


# ----------------------------------------------------------------------------- what a report shows

@dataclass
class ReportData:
    """Everything :func:`write_report` writes, computed beforehand."""

    split: object                                # npc.data.Split (the training split, noisy if made so)
    scores: object                               # npc.noise_report.PairScores
    clean_threshold: float
    order: np.ndarray                            # pair indices, most suspicious first
    lines: np.ndarray                            # (n,) the user's line of every pair
    images: List[str]                            # (n_images,) the image as the user names it
    noise_mask: Optional[np.ndarray] = None
    clean_captions: Optional[List[str]] = None   # the captions before the noise (benchmark splits)
    runs: Dict[str, object] = field(default_factory=dict)   # column name -> npc.pair_weights.PairWeights
    candidates: Optional[Tuple[np.ndarray, np.ndarray]] = None  # for order[:top]: (indices, cosines)
    top: int = 50
    trusted: int = 8
    meta: Dict = field(default_factory=dict)     # dataset, model, command, versions, timing

    @property
    def n(self) -> int:
        return len(self.split.captions)

    def run_means(self) -> Dict[str, np.ndarray]:
        return {name: pw.mean_over_epochs() for name, pw in self.runs.items()}


def report_json(d: ReportData) -> Dict:
    s = d.scores
    flagged = s.p_clean <= d.clean_threshold
    out = {
        "pairs": d.n, "images": int(d.split.num_images), "clean_threshold": d.clean_threshold,
        "flagged": int(flagged.sum()), "osa_zero": int((s.osa_score <= 0).sum()),
        "gmm": s.gmm, "osa_shift": s.osa_shift, "logit_scale": s.logit_scale,
        "columns": {k: v for k, v in COLUMNS.items() if k != "noisy" or d.noise_mask is not None},
        "runs": {name: {"path": str(pw.path), "method": pw.method, "kind": pw.kind, "epochs": pw.epochs.tolist()}
                 for name, pw in d.runs.items()},
        "shown": {"suspicious": [int(j) for j in d.order[:d.top]],
                  "trusted": [int(j) for j in d.order[::-1][:d.trusted]]},
    }
    if d.candidates is not None:  # per suspicious pair shown: the captions that fit its image best
        out["shown"]["candidates"] = [[[int(c), round(float(v), 6)] for c, v in zip(idx, sims)]
                                      for idx, sims in zip(*d.candidates)]
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
    header = ["rank", "line", "image", "caption", "p_clean", "flagged", "loss", "cosine", "cosine_rank", "osa_score",
              "osa_zero"] + (["noisy"] if d.noise_mask is not None else []) + [f"weight_{n}" for n in runs] + ["pair"]
    ci = d.split.caption_image

    def rows():
        for j in d.order:
            row = [ranks[j], d.lines[j], d.images[ci[j]], d.split.captions[j], _fmt(s.p_clean[j]),
                   int(s.p_clean[j] <= d.clean_threshold), _fmt(s.losses[j]), _fmt(s.cosine[j]), cos_rank[j],
                   _fmt(s.osa_score[j]), int(s.osa_score[j] <= 0)]
            if d.noise_mask is not None:
                row.append(int(d.noise_mask[j]))
            row += [_fmt(v[j]) for v in runs.values()]
            row.append(j)
            yield row

    atomic_write_csv(path, header, rows())


# ----------------------------------------------------------------------------- the page

def thumbnail_uri(path, px: int = THUMB_PX) -> Optional[str]:
    """A small JPEG of the image (a file or a shard's member, decoded by the one rule of npc/images.py) as a
    ``data:`` URI (None if it cannot be read)."""
    from npc.csv_format import DataError
    from npc.images import open_rgb

    try:
        im = open_rgb(path)
        im.thumbnail((px, px))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    except (DataError, OSError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


COLORS = {"all": "#7f8c9a", "clean": "#2c7fb8", "noisy": "#d95f0e", "curve_clean": "#1b5e20",
          "curve_noisy": "#b71c1c", "mix": "#333333"}


def svg_histogram(title: str, series: Sequence[Tuple[str, np.ndarray, str]], *, bins: int = 30,
                  value_range: Optional[Tuple[float, float]] = None,
                  curves: Sequence[Tuple[str, np.ndarray, np.ndarray, str]] = (),
                  vline: Optional[Tuple[float, str]] = None, xlabel: str = "", width: int = 430,
                  height: int = 230, ylog: bool = False, legend: str = "right") -> str:
    """An inline SVG histogram (no script, no external reference; ``width`` x ``height`` are its viewBox, it
    scales to its container's width): overlaid ``series`` (label, values,
    colour) of counts per bin, ``curves`` (label, x, expected count per bin, colour), a dashed ``vline``;
    ``ylog``: heights on a log scale (``log(1 + count)``); ``legend``: "right", "center" or "left"."""
    vals = [np.asarray(v, dtype=np.float64) for _, v, _ in series]
    vals = [v[np.isfinite(v)] for v in vals]
    allv = np.concatenate(vals) if vals else np.empty(0)
    lo, hi = value_range if value_range is not None else ((allv.min(), allv.max()) if len(allv) else (0.0, 1.0))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    counts = [np.histogram(np.clip(v, lo, hi), edges)[0] for v in vals]
    top = max([int(c.max()) for c in counts if len(c)] + [float(np.max(y)) for _, _, y, _ in curves] + [1])
    ml, mr, mt, mb_ = 46, 12, 26, 38
    pw, ph = width - ml - mr, height - mt - mb_

    def X(v):
        return ml + (v - lo) / (hi - lo) * pw

    def Y(c):
        return mt + ph - (math.log1p(c) / math.log1p(top) if ylog else c / top) * ph

    e = html.escape
    # no fixed size: the figure fills its container's width, its height follows the viewBox's proportions
    parts = [f'<svg class="hist" width="100%" viewBox="0 0 {width} {height}" role="img" '
             f'preserveAspectRatio="xMidYMid meet">',
             f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="t">{e(title)}</text>']
    for (label, _, color), c in zip(series, counts):
        for k, cnt in enumerate(c):
            if cnt:
                x0, x1 = X(edges[k]), X(edges[k + 1])
                parts.append(f'<rect x="{x0:.1f}" y="{Y(cnt):.1f}" width="{max(x1 - x0 - 0.5, 0.5):.1f}" '
                             f'height="{Y(0) - Y(cnt):.1f}" fill="{color}" fill-opacity="0.55"/>')
    for label, xs, ys, color in curves:
        pts = " ".join(f"{X(a):.1f},{Y(b):.1f}" for a, b in zip(xs, ys))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    if vline is not None and lo <= vline[0] <= hi:
        xv = X(vline[0])
        side = 'x="{:.1f}" text-anchor="end"'.format(xv - 3) if xv > ml + 0.6 * pw else f'x="{xv + 3:.1f}"'
        parts.append(f'<line x1="{xv:.1f}" y1="{mt}" x2="{xv:.1f}" y2="{mt + ph}" stroke="#555" '
                     f'stroke-dasharray="4,3"/><text {side} y="{mt + 10}" class="s">{e(vline[1])}</text>')
    parts.append(f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" stroke="#333"/>'
                 f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" stroke="#333"/>')
    for v in np.linspace(lo, hi, 5):
        parts.append(f'<text x="{X(v):.1f}" y="{mt + ph + 14}" text-anchor="middle" class="s">{v:.2g}</text>')
    for c in ((0, round(math.sqrt(top)), top) if ylog else (0, round(top / 2), top)):
        parts.append(f'<text x="{ml - 4}" y="{Y(c) + 4:.1f}" text-anchor="end" class="s">{c:.0f}</text>')
    parts.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 4}" text-anchor="middle" class="s">{e(xlabel)}</text>')
    items = [(label, color, "rect") for label, _, color in series] + [(label, color, "line")
                                                                     for label, _, _, color in curves]
    lx = {"right": ml + pw - 118, "center": ml + pw / 2 - 50, "left": ml + 8}[legend]
    for k, (label, color, shape) in enumerate(items):
        y = mt + 4 + 13 * k
        mark = (f'<rect x="{lx:.0f}" y="{y}" width="10" height="9" fill="{color}" fill-opacity="0.55"/>'
                if shape == "rect" else
                f'<line x1="{lx:.0f}" y1="{y + 5}" x2="{lx + 10:.0f}" y2="{y + 5}" stroke="{color}" '
                f'stroke-width="1.6"/>')
        parts.append(mark + f'<text x="{lx + 14:.0f}" y="{y + 8}" class="s">{e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _gaussian(x: np.ndarray, mean: float, var: float) -> np.ndarray:
    return np.exp(-(x - mean) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)


def figures(d: ReportData, bins: int = 30) -> List[str]:
    """The page's histograms: the GMM's fit on the losses, p(clean), the cosine, and each run's weights."""
    s, mask = d.scores, d.noise_mask

    def split_series(values):
        if mask is None:
            return [("all pairs", values, COLORS["all"])]
        return [("clean (truth)", values[~mask], COLORS["clean"]), ("noisy (truth)", values[mask], COLORS["noisy"])]

    g = s.gmm
    span = g["loss_max"] - g["loss_min"]
    x = (s.losses - g["loss_min"]) / (span if span > 0 else 1.0)
    grid = np.linspace(0, 1, 121)
    width = 1.0 / bins
    comps = []
    for k in range(len(g["means"])):
        clean = k == g["clean_component"]
        comps.append(("clean component" if clean else "noisy component", grid,
                      d.n * width * g["weights"][k] * _gaussian(grid, g["means"][k], g["variances"][k]),
                      COLORS["curve_clean" if clean else "curve_noisy"]))
    kept = x[s.p_clean > d.clean_threshold]
    vline = (float(kept.max()), f"p(clean) > {d.clean_threshold:g} left of here") if len(kept) else None
    out = [svg_histogram("the memory bank's GMM on the pairs' losses", split_series(x), bins=bins,
                         value_range=(0.0, 1.0), curves=comps, vline=vline,
                         xlabel="per-pair InfoNCE loss, min-max scaled (the GMM's input)"),
           svg_histogram("p(clean) (pairs per bin, log scale)", split_series(s.p_clean), bins=20,
                         value_range=(0.0, 1.0), vline=(d.clean_threshold, "--clean_threshold"),
                         xlabel="GMM p(clean)", ylog=True, legend="center"),
           svg_histogram("cosine of the pair", split_series(s.cosine), bins=bins,
                         vline=((s.osa_shift / s.logit_scale), "OSA's zero") if s.logit_scale else None,
                         xlabel="cosine(image, caption)", legend="left")]
    for name, w in d.run_means().items():
        if run_note(d, name, w) is not None:
            continue  # said in one line of text instead (run_notes)
        ok = np.isfinite(w)
        values = w[ok]
        series = ([("all pairs", values, COLORS["all"])] if mask is None else
                  [("clean (truth)", values[~mask[ok]], COLORS["clean"]),
                   ("noisy (truth)", values[mask[ok]], COLORS["noisy"])])
        out.append(svg_histogram(f"run {name}: {d.runs[name].method} ({d.runs[name].kind})", series, bins=bins,
                                 xlabel="weight, mean over the run's epochs"))
    return out


def run_note(d: ReportData, name: str, w: np.ndarray) -> Optional[str]:
    """One line of text for a run whose per-pair weights would make a histogram of one bar (plain CLIP: every
    pair drawn has weight 1; a run that drew no pair; any run giving every pair the same weight); None for a
    run whose weights differ between pairs (it gets a histogram)."""
    pw = d.runs[name]
    ok = np.isfinite(w)
    head = f"run {name}: {pw.method} ({pw.kind}), {len(pw.epochs)} epoch{'s' if len(pw.epochs) != 1 else ''}"
    undrawn = f"; {int((~ok).sum())} never drawn" if (~ok).any() else ""
    if not ok.any():
        return f"{head}: no per-pair weights (no pair was drawn)."
    values = np.unique(w[ok])
    if len(values) > 1:
        return None
    what = "no per-pair weights: " if pw.kind == "uniform" else ""
    return f"{head}: {what}every pair drawn has weight {values[0]:g} ({int(ok.sum())} pairs{undrawn})."


def run_notes(d: ReportData) -> List[str]:
    """:func:`run_note` of every run that has one."""
    return [note for name, w in d.run_means().items() if (note := run_note(d, name, w)) is not None]


PAGE_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{font-family:sans-serif;margin:0 auto;padding:12px 18px;color:#222;max-width:1250px}
.warn{background:#fde8e4;border:1px solid #d95f0e;padding:8px 12px;border-radius:4px}
h1{font-size:21px} h2{font-size:17px;margin-top:26px}
p{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px} td,th{border-bottom:1px solid #ddd;padding:4px 7px;vertical-align:top;
text-align:left} th{background:#f2f2f2}
.num{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:8px;max-width:1320px}
.hist{display:block;width:100%;height:auto;border:1px solid #eee} .t{font-size:13px;font-weight:bold} .s{font-size:10px}
.noisy{background:#fff1e6} .badge{font-size:11px;padding:1px 5px;border-radius:3px;color:#fff;margin-left:4px;
white-space:nowrap} .bn{background:#d95f0e} .bc{background:#2c7fb8} .bf{background:#777}
.cap,.cands li{overflow-wrap:break-word} .where{overflow-wrap:anywhere}
ol.cand{margin:0;padding-left:18px;font-size:12px} .own{font-weight:bold} .true{color:#1b5e20;font-weight:bold}
.muted{color:#777;font-size:12px} img.th{width:96px;height:auto;image-rendering:auto;display:block}
td.sc{white-space:nowrap} td.cands{min-width:260px} .cl{display:none}
@media (max-width:760px){
 body{padding:8px 10px}
 table.pairs,table.pairs tbody{display:block}
 table.pairs tr{display:flex;flex-wrap:wrap;align-items:flex-start;border-bottom:2px solid #ccc;padding:4px 0}
 table.pairs tr.head{display:none}
 table.pairs td{border:0;padding:3px 5px}
 table.pairs td.cap{flex:1 1 150px;min-width:0}
 table.pairs td.cands{flex:1 1 100%;min-width:0;padding-left:12px}
 .cl{display:block;font-size:12px;color:#555;margin-bottom:2px}
 table.det{font-size:12px} table.det td,table.det th{padding:3px 4px}
}
"""


def candidate_groups(captions: Sequence[str], idx: Sequence[int], sims: Sequence[float]
                     ) -> List[Tuple[str, List[int], float]]:
    """A pair's candidate captions grouped by text, best first: (text, the pairs holding it, its best cosine);
    each distinct text once, however many pairs of the dataset hold it."""
    groups: Dict[str, Tuple[List[int], float]] = {}
    for c, v in zip(idx, sims):
        pairs, best = groups.setdefault(captions[int(c)], ([], float(v)))
        pairs.append(int(c))
        groups[captions[int(c)]] = (pairs, max(best, float(v)))
    return sorted(((text, pairs, best) for text, (pairs, best) in groups.items()), key=lambda g: -g[2])


def _candidates_cell(d: ReportData, j: int, k: int) -> str:
    e = html.escape
    split, i = d.split, int(d.split.caption_image[j])
    idx, sims = d.candidates
    true_caption = (d.clean_captions[j] if d.noise_mask is not None and d.clean_captions is not None
                    and d.noise_mask[j] else None)
    items = []
    for text, pairs, best in candidate_groups(split.captions, idx[k], sims[k]):
        marks = []
        if j in pairs:
            marks.append('<span class="own">this pair\'s caption</span>')
        elif any(split.caption_image[c] == i for c in pairs):
            marks.append('<span class="own">another caption of this image</span>')
        if true_caption is not None and text == true_caption:
            marks.append('<span class="true">the true caption</span>')
        lines = ", ".join(str(d.lines[c]) for c in pairs)
        keys = ", ".join(str(c) for c in pairs)
        where = (f"cos {best:.3f}, line {lines}, pair {keys}" if len(pairs) == 1 else
                 f"cos {best:.3f}, {len(pairs)} pairs: lines {lines}; pairs {keys}")
        items.append(f'<li>{e(text)} <span class="muted where">({where})</span> {" ".join(marks)}</li>')
    return (f'<td class="cands"><span class="cl">the captions that fit the image best:</span>'
            f'<ol class="cand">{"".join(items)}</ol></td>')


def _pair_row(d: ReportData, j: int, rank: int, runs: Dict[str, np.ndarray], with_candidates: Optional[int]) -> str:
    e = html.escape
    s, split = d.scores, d.split
    i = int(split.caption_image[j])
    uri = thumbnail_uri(split.image_paths[i])
    img = f'<img class="th" src="{uri}" alt="image {i}">' if uri else '<span class="muted">(unreadable)</span>'
    badges = ""
    if s.p_clean[j] <= d.clean_threshold:
        badges += '<span class="badge bf">flagged</span>'
    if d.noise_mask is not None:
        badges += ('<span class="badge bn">noisy (truth)</span>' if d.noise_mask[j]
                   else '<span class="badge bc">clean (truth)</span>')
    caption = f'<div class="cap">{e(split.captions[j])}{badges}</div>'
    caption += f'<div class="muted where">line {d.lines[j]} &middot; {e(d.images[i])} &middot; pair {j}</div>'
    if d.noise_mask is not None and d.noise_mask[j] and d.clean_captions is not None:
        caption += f'<div class="muted">true caption: {e(d.clean_captions[j])}</div>'
    scores = (f'p(clean) {s.p_clean[j]:.3g}<br>cosine {s.cosine[j]:.3f}<br>OSA {s.osa_score[j]:.2f}'
              + "".join(f"<br>{e(n)}: {'&ndash;' if not np.isfinite(w[j]) else f'{w[j]:.3g}'}"
                        for n, w in runs.items()))
    cells = [f'<td class="num">{rank}</td>', f"<td>{img}</td>", f'<td class="cap">{caption}</td>',
             f'<td class="num sc">{scores}</td>']
    if with_candidates is not None:
        cells.append(_candidates_cell(d, j, with_candidates))
    cls = ' class="noisy"' if d.noise_mask is not None and d.noise_mask[j] else ""
    return f"<tr{cls}>{''.join(cells)}</tr>"


def banner(meta: Dict) -> str:
    """The self-check's warning at the top of the page when the model barely tells the pairs apart (else nothing)."""
    check = meta.get("self_check")
    if not check or check.get("can_see", True):
        return ""
    return (f'<p class="warn" id="self-check"><strong>{html.escape(check["message"])}</strong> The ranking below is '
            f'then close to random.</p>')


def render_html(d: ReportData, summary: Dict) -> str:
    """``index.html``: self-contained (inline CSS and SVG, images as data URIs, no script, no URL)."""
    e = html.escape
    runs = d.run_means()
    ranks = ranks_of(d.order)
    meta = d.meta
    ds, mo = meta.get("dataset", {}), meta.get("model", {})
    head = (f"<p>{d.n} pairs of {d.split.num_images} images: dataset {e(str(ds.get('name')))} ({e(str(ds.get('train')))}"
            f", --noise_ratio {e(str(ds.get('noise_ratio')))}, captions {e(str(ds.get('captions_file')))})<br>"
            f"model {e(str(mo.get('vision_model')))}, weights {e(str(mo.get('weights')))}<br>"
            f"{summary['flagged']} pairs flagged by the memory "
            f"bank's GMM (p(clean) &le; {d.clean_threshold:g}: outside its clean set); OSA gives weight 0 to "
            f"{summary['osa_zero']} pairs.</p>")
    det = ""
    if isinstance(summary.get("detectors"), dict):
        rows = "".join(
            f'<tr><td>{e(DETECTORS.get(name, name))}</td><td class="num">{_num(m["auc"], ".3f")}</td>'
            f'<td class="num">{_num(m["mean_noise_rank"], ".1f")}</td><td class="num">'
            f'{_num(m["mean_noise_rank_optimal"], ".1f")}</td><td class="num">{_num(m["mean_noise_rank_random"], ".1f")}'
            f'</td><td class="num">{m["n"]}</td></tr>'
            for name, m in summary["detectors"].items())
        gt = summary["ground_truth"]
        det = (f"<h2>How well each detector finds the noise (ground truth: {gt['noisy']} noisy pairs)</h2>"
               f"<table class=\"det\"><tr><th>detector</th><th>ROC-AUC</th><th>mean noise rank</th><th>optimal</th>"
               f"<th>random</th><th>pairs drawn</th></tr>{rows}</table><p class=\"muted\">ROC-AUC: clean pairs "
               f"positive. Mean noise rank (OSA's Table 9): pairs drawn at random (seed 0), sorted by score, mean "
               f"rank of the noisy ones; higher is better. The GMM flags {gt['flagged_noisy']} noisy and "
               f"{gt['flagged_clean']} clean pairs.</p>")
    else:
        det = f"<p class=\"muted\">Detector quality: {e(str(summary.get('detectors')))}.</p>"
    figs = ("<h2>Score distributions</h2><div class=\"figs\">" + "".join(figures(d)) + "</div>"
            + "".join(f"<p>{e(note)}</p>" for note in run_notes(d)))
    top = d.order[:d.top]
    sus = "".join(_pair_row(d, int(j), int(ranks[j]), runs, k if d.candidates is not None else None)
                  for k, j in enumerate(top))
    cand_head = "<th>the dataset's captions that fit the image best (cosine)</th>" if d.candidates is not None else ""
    trusted = d.order[::-1][:d.trusted]
    tru = "".join(_pair_row(d, int(j), int(ranks[j]), runs, None) for j in trusted)
    head_row = "<tr class=\"head\"><th>rank</th><th>image</th><th>caption</th><th>scores</th>"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width, initial-scale=1\"><title>noise report</title>"
            f"<style>{PAGE_CSS}</style></head><body><h1>Noise report: which pairs look mismatched</h1>{banner(meta)}"
            f"{head}{det}"
            f"{figs}<h2 id=\"suspicious\">The {len(top)} most suspicious pairs</h2><table class=\"pairs\">"
            f"{head_row}{cand_head}</tr>{sus}</table><h2 id=\"trusted\">The {len(trusted)} most trusted pairs, for "
            f"contrast</h2><table class=\"pairs\">{head_row}</tr>{tru}</table><p class=\"muted\">Every pair, ranked: "
            f"pairs.csv (columns in report.json); numbers: report.json. Command: "
            f"{e(str(meta.get('command', '')))}</p></body></html>\n")


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


