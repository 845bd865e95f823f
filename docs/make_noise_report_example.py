"""Render docs/noise_report_example.png: what a noise report (find_noisy_pairs.py) shows, drawn from a report folder.

    python find_noisy_pairs.py --out noise_report                  # the demo at 40% noise
    python docs/make_noise_report_example.py --report noise_report [--out docs/noise_report_example.png]

Not a browser screenshot (none is needed to read the report, and none runs here): the page's key
elements redrawn with matplotlib from the report's own files: the histograms of the GMM's input and
of the cosine (from pairs.csv), and the most suspicious and most trusted pairs with their images,
scores and best-fitting captions (from report.json's ``shown``).
"""
from __future__ import annotations

import argparse
import csv
import json
import textwrap
from pathlib import Path

import numpy as np

NOISY, CLEAN = "#d95f0e", "#2c7fb8"


def _image_path(report: dict, image: str) -> Path:
    base = Path(report["dataset"]["train"])
    return (base if report["dataset"]["name"] != "csv" else base.parent) / image


def render(folder: Path, out: Path, n_suspicious: int = 5, n_trusted: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from npc.io import formula_unescape

    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    with open(folder / "pairs.csv", newline="", encoding="utf-8") as f:  # cells as written, formula quotes removed
        rows = {int(r["pair"]): {k: formula_unescape(v) for k, v in r.items()} for r in csv.DictReader(f)}
    has_truth = "noisy" in next(iter(rows.values()))
    noisy = np.array([has_truth and rows[j]["noisy"] == "1" for j in sorted(rows)])
    loss = np.array([float(rows[j]["loss"]) for j in sorted(rows)])
    cosine = np.array([float(rows[j]["cosine"]) for j in sorted(rows)])
    shown = report["shown"]
    sus, tru = shown["suspicious"][:n_suspicious], shown["trusted"][:n_trusted]
    n_rows = len(sus) + len(tru)
    fig = plt.figure(figsize=(12, 2.9 + 1.45 * n_rows))
    grid = fig.add_gridspec(1 + n_rows, 4, height_ratios=[2.1] + [1] * n_rows, width_ratios=[1, 4.6, 1, 4.6],
                            hspace=0.35, wspace=0.08)
    g = report["gmm"]
    x = (loss - g["loss_min"]) / max(g["loss_max"] - g["loss_min"], 1e-12)
    ax = fig.add_subplot(grid[0, 0:2])
    bins = np.linspace(0, 1, 31)
    for sel, label, color in ((~noisy, "clean (truth)", CLEAN), (noisy, "noisy (truth)", NOISY)):
        ax.hist(x[sel], bins=bins, color=color, alpha=0.55, label=label)
    grid_x = np.linspace(0, 1, 200)
    for k in range(2):
        dens = g["weights"][k] * np.exp(-(grid_x - g["means"][k]) ** 2 / (2 * g["variances"][k])) / np.sqrt(
            2 * np.pi * g["variances"][k])
        clean = k == g["clean_component"]
        ax.plot(grid_x, dens * len(x) / 30, color="#1b5e20" if clean else "#b71c1c",
                label="clean component" if clean else "noisy component")
    ax.set_title("the memory bank's GMM on the pairs' losses", fontsize=10)
    ax.set_xlabel("per-pair loss, min-max scaled (the GMM's input)", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[0, 2:4])
    bins = np.linspace(cosine.min(), cosine.max(), 31)
    for sel, label, color in ((~noisy, "clean (truth)", CLEAN), (noisy, "noisy (truth)", NOISY)):
        ax.hist(cosine[sel], bins=bins, color=color, alpha=0.55, label=label)
    det = report["detectors"]
    if isinstance(det, dict):
        ax.text(0.02, 0.95, "ROC-AUC\n" + "\n".join(f"{k}: {v['auc']:.4f}" for k, v in det.items()),
                transform=ax.transAxes, va="top", fontsize=8, family="monospace")
    ax.set_title("cosine of the pair", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.tick_params(labelsize=7)

    candidates = shown.get("candidates", [])
    captions = {j: r["caption"] for j, r in rows.items()}
    ranked = [(j, "suspicious", candidates[k] if k < len(candidates) else []) for k, j in enumerate(sus)] + \
             [(j, "trusted", []) for j in tru]
    for k, (j, kind, cands) in enumerate(ranked):
        r = rows[j]
        ax_img = fig.add_subplot(grid[1 + k, 0])
        ax_img.imshow(Image.open(_image_path(report, r["image"])).convert("RGB"), interpolation="nearest")
        ax_img.set_xticks([])
        ax_img.set_yticks([])
        ax_txt = fig.add_subplot(grid[1 + k, 1:4])
        ax_txt.axis("off")
        truth = ("noisy (truth)" if r["noisy"] == "1" else "clean (truth)") if has_truth else ""
        head = (f"#{r['rank']} ({'most suspicious' if kind == 'suspicious' else 'most trusted'}), line {r['line']}: "
                f"p(clean) {float(r['p_clean']):.2g}, cosine {float(r['cosine']):.3f}, OSA {float(r['osa_score']):.2f}"
                f"{'  FLAGGED' if r['flagged'] == '1' else ''}  {truth}")
        ax_txt.text(0, 0.92, head, fontsize=8.5, va="top", color=NOISY if r["flagged"] == "1" else CLEAN)
        ax_txt.text(0, 0.70, textwrap.shorten(f"caption: {r['caption']}", 150), fontsize=9, va="top")
        if cands:
            ax_txt.text(0.02, 0.48, "the dataset's captions that fit this image best:", fontsize=7, va="top",
                        color="#777")
        for m, (c, v) in enumerate(cands[:2]):
            ax_txt.text(0.04, 0.28 - 0.2 * m, textwrap.shorten(f"{m + 1}. {captions[c]}", 120) + f"  (cos {v:.3f})",
                        fontsize=7.5, va="top", color="#444")
    fig.suptitle(f"Noise report of the demo's training split ({report['pairs']} pairs, --noise_ratio "
                 f"{report['dataset']['noise_ratio']}): {report['flagged']} flagged by the GMM", fontsize=11, y=0.995)
    fig.subplots_adjust(top=0.95)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90, bbox_inches="tight")
    tmp.replace(out)
    print(f"wrote {out}")


def main(argv=None):
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--report", type=Path, required=True, help="a report folder written by find_noisy_pairs.py")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "noise_report_example.png")
    args = ap.parse_args(argv)
    render(args.report, args.out)


if __name__ == "__main__":
    main()
