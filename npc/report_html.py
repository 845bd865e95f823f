"""The noise report's page, index.html: one self-contained file (inline CSS, SVG and script, images as data
URIs, nothing fetched) with the report's figures, its ranked pairs and the decision mode (npc/report_assets.py).
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from npc.report_assets import PAGE_CSS, PAGE_JS
from npc.report_figures import figures, run_notes
from npc.report_data import DETECTORS, _num, ranks_of

if TYPE_CHECKING:
    from npc.report_data import ReportData

THUMB_PX = 96


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
        keys = ", ".join(d.keys[c] for c in pairs)
        where = (f"cos {best:.3f}, {split.key_name} {keys}" if len(pairs) == 1 else  # the pairs' keys, never a line
                 f"cos {best:.3f}, {len(pairs)} pairs with this text, {split.key_name}s {keys}")  # of a derived file
        items.append(f'<li>{e(text)} <span class="muted where">({where})</span> {" ".join(marks)}</li>')
    merged = len(idx[k]) - len(items)  # --candidates counts pairs; equal texts are shown once
    note = (f' <span class="muted merged">({len(idx[k])} best pairs, {merged} with a text shown above: equal texts '
            f'merged)</span>' if merged else "")
    return (f'<td class="cands"><span class="cl">the captions that fit the image best:</span>{note}'
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
    key = f"{split.key_name} {d.keys[j]}"  # the pair's key as its data source defines it
    caption += f'<div class="muted where">{e(key)} &middot; {e(d.images[i])} &middot; pair {j}</div>'
    if d.noise_mask is not None and d.noise_mask[j] and d.clean_captions is not None:
        caption += f'<div class="muted">true caption: {e(d.clean_captions[j])}</div>'
    scores = (f'p(clean) {s.p_clean[j]:.3g}<br>cosine {s.cosine[j]:.3f}<br>OSA {s.osa_score[j]:.2f}'
              + "".join(f"<br>{e(n)}: {'&ndash;' if not np.isfinite(w[j]) else f'{w[j]:.3g}'}"
                        for n, w in runs.items()))
    cells = [f'<td class="num">{rank}</td>', f"<td>{img}</td>", f'<td class="cap">{caption}</td>', DECIDE_CELL,
             f'<td class="num sc">{scores}</td>']
    if with_candidates is not None:
        cells.append(_candidates_cell(d, j, with_candidates))
    cls = "pr noisy" if d.noise_mask is not None and d.noise_mask[j] else "pr"
    return f'<tr class="{cls}" data-pair="{j}">{"".join(cells)}</tr>'


#: A pair row's three choices (the page's script gives them their function and state).
DECIDE_CELL = ('<td class="dec"><span class="cl">your decision:</span>'
               + "".join(f'<button type="button" class="d {c}" data-d="{c}" aria-pressed="false" title="{t}">{label}'
                         f'</button>' for c, label, t in (("wrong", "wrong", "the caption does not fit (w)"),
                                                           ("right", "right", "the caption fits (r)"),
                                                           ("unsure", "not sure", "not sure (u)")))
               + "</td>")

FILTERS = (("all", "all"), ("undecided", "undecided"), ("wrong", "wrong"), ("right", "right"), ("unsure", "not sure"))


def page_data(d: ReportData, summary: Dict) -> str:
    """The JSON the page's script reads (the report's identity, each shown pair's key and caption), safe inside a
    ``<script>`` element: ``<``, ``>``, ``&`` and ``/`` escaped, so no text of the data can end it or look like a URL."""
    from npc.io import formula_safe

    pairs = {}
    for _, j in d.shown():
        pairs[str(j)] = {"key": d.keys[j], "caption": formula_safe(d.split.captions[j])}
    data = {"identity": summary["identity"], "dataset": str(d.meta.get("dataset", {}).get("name")),
            "order": [j for _, j in d.shown()], "pairs": pairs}
    text = json.dumps(data, ensure_ascii=False)
    for c, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("/", "\\/")):
        text = text.replace(c, code)
    return text


def decide_bar(d: ReportData) -> str:
    """The decision mode's bar (kept at the top of the window while the pairs scroll by): the counter, the filter,
    the download and the keys."""
    filters = "".join(f'<button type="button" data-f="{f}" aria-pressed="{str(f == "all").lower()}">{label}</button>'
                      for f, label in FILTERS)
    return ('<div id="decide" class="bar"><span id="dec-count" aria-live="polite">no decision yet</span> '
            f'<span class="filt" role="group" aria-label="show">show: {filters}</span> '
            '<button type="button" id="dec-download">download decisions.csv</button> '
            '<span class="muted keys">keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous pair, <kbd>w</kbd> wrong, '
            '<kbd>r</kbd> right, <kbd>u</kbd> not sure, <kbd>x</kbd> undo</span>'
            '<span id="dec-store" class="muted"></span></div>')


def banner(meta: Dict) -> str:
    """The self-check's warning at the top of the page when the model barely tells the pairs apart (else nothing)."""
    check = meta.get("self_check")
    if not check or check.get("can_see", True):
        return ""
    return (f'<p class="warn" id="self-check"><strong>{html.escape(check["message"])}</strong> The ranking below is '
            f'then close to random.</p>')


def render_html(d: ReportData, summary: Dict) -> str:
    """``index.html``: self-contained (inline CSS, SVG and script, images as data URIs, no URL)."""
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
    head_row = "<tr class=\"head\"><th>rank</th><th>image</th><th>caption</th><th>decision</th><th>scores</th>"
    intro = ("<p>Decide, pair by pair, whether the caption fits its image: <em>wrong</em>, <em>right</em> or "
             "<em>not sure</em>, by click or with the keys below. Your decisions stay in this browser (its local "
             "storage, for this report's data and run) and come back when the page is opened again; "
             "<em>download decisions.csv</em> saves them as a file (<code>key,decision,caption</code>, the "
             "report's data fingerprint in its first line).</p>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width, initial-scale=1\"><title>noise report</title>"
            f"<style>{PAGE_CSS}</style></head><body><h1>Noise report: which pairs look mismatched</h1>{banner(meta)}"
            f"{head}{det}"
            f"{figs}<h2 id=\"decisions\">Your decisions</h2>{intro}{decide_bar(d)}"
            f"<h2 id=\"suspicious\">The {len(top)} most suspicious pairs</h2><table class=\"pairs\">"
            f"{head_row}{cand_head}</tr>{sus}</table><h2 id=\"trusted\">The {len(trusted)} most trusted pairs, for "
            f"contrast</h2><table class=\"pairs\">{head_row}</tr>{tru}</table><p class=\"muted\">Every pair, ranked: "
            f"pairs.csv (columns in report.json); numbers: report.json. Command: "
            f"{e(str(meta.get('command', '')))}</p><script type=\"application/json\" id=\"npc-report\">"
            f"{page_data(d, summary)}</script><script>{PAGE_JS}</script></body></html>\n")
