"""The noise report page's figures: inline SVG histograms of the scores (the GMM's fit, p(clean), the cosine, each
run's weights) and one line of text for a run whose weights would make a histogram of one bar.
"""
from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    from npc.report_data import ReportData

CHAR_PX = 6.0  # the most a character of the figures' small text (class "s", 10 px) takes, in viewBox pixels
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
    items = [(label, color, "rect") for label, _, color in series] + [(label, color, "line")
                                                                     for label, _, _, color in curves]
    lx = {"right": ml + pw - 118, "center": ml + pw / 2 - 50, "left": ml + 8}[legend]
    if vline is not None and lo <= vline[0] <= hi:
        xv = X(vline[0])
        right = xv > ml + 0.6 * pw
        side = 'x="{:.1f}" text-anchor="end"'.format(xv - 3) if right else f'x="{xv + 3:.1f}"'
        # the label below the legend where the two would share pixels (text of class "s": under 6 px a character)
        w = CHAR_PX * len(vline[1])
        span = (xv - 3 - w, xv - 3) if right else (xv + 3, xv + 3 + w)
        legend_span = (lx, lx + 14 + CHAR_PX * max((len(t) for t, _, _ in items), default=0))
        below = items and span[0] < legend_span[1] and legend_span[0] < span[1]
        ty = mt + 4 + 13 * len(items) + 10 if below else mt + 10
        parts.append(f'<line x1="{xv:.1f}" y1="{mt}" x2="{xv:.1f}" y2="{mt + ph}" stroke="#555" '
                     f'stroke-dasharray="4,3"/><text {side} y="{ty}" class="s vl">{e(vline[1])}</text>')
    parts.append(f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" stroke="#333"/>'
                 f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" stroke="#333"/>')
    for v in np.linspace(lo, hi, 5):
        parts.append(f'<text x="{X(v):.1f}" y="{mt + ph + 14}" text-anchor="middle" class="s">{v:.2g}</text>')
    for c in ((0, round(math.sqrt(top)), top) if ylog else (0, round(top / 2), top)):
        parts.append(f'<text x="{ml - 4}" y="{Y(c) + 4:.1f}" text-anchor="end" class="s">{c:.0f}</text>')
    parts.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 4}" text-anchor="middle" class="s">{e(xlabel)}</text>')
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
