"""What a noise report (find_noisy_pairs.py) costs per 1,000 pairs, and its memory at CC120K's size.

    OMP_NUM_THREADS=1 python bench/noise_report_cost.py            # all three parts (a few minutes on a CPU)
    python bench/noise_report_cost.py --parts demo --repeats 1

Three parts, each in a process of its own (peak memory is the process's peak RSS, which includes
torch and the libraries: ``baseline_rss_mib`` is the peak right after the imports):

* ``demo``: the whole command on the demo's training split (10,000 pairs of 2,000 images, 40% noise,
  ``npc-tiny`` from the demo's base), generated if missing: per stage (setup, encoding, scores,
  candidate captions, writing) and per 1,000 pairs, the median of ``--repeats`` runs; the detectors'
  ROC-AUC beside the memory bank's.
* ``scale``: everything after the encoding at CC120K's size: 120,000 pairs of 120,000 images (one
  caption each), 512-d features (ViT-B/32's) made up so that 80% of the pairs match; the scores (the
  bank's per-sample losses in batches of 256 and its GMM, cosines, OSA's score), the ranking, the
  candidate captions of the 50 shown pairs among all 120,000, and the folder (pairs.csv of 120,000
  rows, index.html).
* ``vitb32``: the encoding of ``--vitb32_pairs`` pairs with ViT-B/32 (``ViT-B-32-quickgelu``, random
  weights: speed does not depend on them) from generated 640x480 JPEGs, one caption each (CC's
  layout), through the report's encoding path (``npc.evaluation.encode_split``), batch 64, fp32.

Writes bench/results/noise_report/noise_report_cost.json (and .md): the numbers, the machine, the
library versions, the commit, the command, ``OMP_NUM_THREADS`` and the load average before and after
(other work on a shared machine slows every part).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "noise_report"
RUNS = REPO / "bench" / "runs"
PARTS = ("demo", "scale", "vitb32")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def part_demo(repeats: int) -> dict:
    from npc.noise_report import run
    from npc.params import parse_args

    baseline = rss_mib()
    out = RUNS / "noise_report_demo"
    runs = []
    for _ in range(repeats):
        summary = run(parse_args(["--no_progress", "--num_workers", "0", "--out", str(out)], "report"))
        runs.append(summary)
    bank = json.loads((REPO / "dataset/demo/annotations/memory_bank/0.4_mbank_info.json").read_text())
    timing = {k: statistics.median(r["timing"][k] for r in runs)
              for k in ("setup_s", "encode_s", "score_s", "candidates_s", "write_s", "total_s", "s_per_1000_pairs")}
    last = runs[-1]
    return {"pairs": last["pairs"], "images": last["images"], "model": last["model"], "repeats": repeats,
            "timing_median": timing, "timing_runs": [r["timing"] for r in runs],
            "detectors": last["detectors"], "bank_p_clean_auc": bank.get("p_clean_auc"),
            "flagged": last["flagged"], "bank_n_clean": bank.get("n_clean"),
            "candidates": last.get("candidates"), "baseline_rss_mib": round(baseline, 1),
            "peak_rss_mib": round(rss_mib(), 1)}


def part_scale(n: int, dim: int, seed: int = 0) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from npc import noise_report as nr
    from npc.data import Split

    baseline = rss_mib()
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    noisy = torch.rand(n, generator=g) < 0.2
    txt = img + 1.2 * torch.randn(n, dim, generator=g) / dim ** 0.5
    txt[noisy] = torch.randn(int(noisy.sum()), dim, generator=g)
    txt = torch.nn.functional.normalize(txt, dim=1)
    caption_image = np.arange(n)
    times = {}
    with tempfile.TemporaryDirectory(dir=RUNS) as tmp:
        picture = Path(tmp) / "image.png"
        Image.new("RGB", (64, 64), (120, 160, 200)).save(picture)
        split = Split("train", [f"caption number {k} of a made-up split" for k in range(n)],
                      [f"images/{k}.jpg" for k in range(n)], [picture] * n, caption_image, 1)
        t0 = time.perf_counter()
        scores = nr.score_pairs(img, txt, caption_image, scale=100.0, bank_batch_size=256, bank_seed=99,
                                osa_shift=0.0)
        order = nr.suspicion_order(scores.p_clean, scores.cosine)
        times["score_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        top = order[:50]
        candidates = nr.best_captions(img[torch.as_tensor(top)], txt, 5)
        times["candidates_s"] = time.perf_counter() - t0
        d = nr.ReportData(split=split, scores=scores, clean_threshold=0.9, order=order, lines=np.arange(2, n + 2),
                          images=list(split.image_ids), noise_mask=noisy.numpy(), candidates=candidates, top=50)
        t0 = time.perf_counter()
        summary = nr.write_report(Path(tmp) / "report", d)
        times["write_s"] = time.perf_counter() - t0
        csv_mib = (Path(tmp) / "report" / "pairs.csv").stat().st_size / 2 ** 20
        html_mib = (Path(tmp) / "report" / "index.html").stat().st_size / 2 ** 20
    after = sum(times.values())
    return {"pairs": n, "feature_dim": dim, "timing": {k: round(v, 3) for k, v in times.items()},
            "after_encoding_s": round(after, 3), "after_encoding_s_per_1000_pairs": round(after / n * 1000, 4),
            "flagged": summary["flagged"], "pairs_csv_mib": round(csv_mib, 1),
            "index_html_mib": round(html_mib, 2), "features_mib": round(2 * n * dim * 4 / 2 ** 20, 1),
            "baseline_rss_mib": round(baseline, 1), "peak_rss_mib": round(rss_mib(), 1)}


def part_vitb32(n: int, batch: int = 64) -> dict:
    import numpy as np

    from npc.data import Split
    from npc.evaluation import encode_split
    from npc.model import create_model
    from studylib.paper_images import write_paper_size_jpegs

    baseline = rss_mib()
    rng = np.random.default_rng(0)
    words = "a man woman dog red blue small sitting on the table street grass with two people riding bike".split()
    with tempfile.TemporaryDirectory(dir=RUNS) as tmp:
        paths = write_paper_size_jpegs(Path(tmp), n)
        split = Split("train", [" ".join(rng.choice(words, 10)) for _ in range(n)], [p.name for p in paths], paths,
                      np.arange(n), 1)
        model, preprocess, tokenizer = create_model("ViT-B/32", "none", init_seed=0)
        t0 = time.perf_counter()
        encode_split(model, split, preprocess, tokenizer, batch_size=batch, progress=False)
        seconds = time.perf_counter() - t0
    return {"pairs": n, "model": "ViT-B-32-quickgelu (random weights)", "batch": batch, "precision": "fp32",
            "encode_s": round(seconds, 3), "encode_s_per_1000_pairs": round(seconds / n * 1000, 3),
            "baseline_rss_mib": round(baseline, 1), "peak_rss_mib": round(rss_mib(), 1)}


def child(args) -> dict:
    import torch

    out = {"torch_threads": torch.get_num_threads()}
    if args.child == "demo":
        out.update(part_demo(args.repeats))
    elif args.child == "scale":
        out.update(part_scale(args.scale_pairs, 512))
    else:
        out.update(part_vitb32(args.vitb32_pairs))
    return out


def table(record: dict) -> list:
    lines = ["| part | pairs | seconds per 1,000 pairs | what | peak RSS (MiB) |", "|---|---|---|---|---|"]
    p = record["parts"]
    if "demo" in p:
        d = p["demo"]
        lines.append(f"| demo, whole command | {d['pairs']} | {d['timing_median']['s_per_1000_pairs']:.2f} | "
                     f"npc-tiny; encoding {d['timing_median']['encode_s']:.1f} s, scores "
                     f"{d['timing_median']['score_s']:.1f} s, writing {d['timing_median']['write_s']:.2f} s "
                     f"(median of {d['repeats']}) | {d['peak_rss_mib']:.0f} |")
    if "scale" in p:
        s = p["scale"]
        lines.append(f"| CC120K size, after encoding | {s['pairs']} | {s['after_encoding_s_per_1000_pairs']:.3f} | "
                     f"scores {s['timing']['score_s']:.1f} s, candidates {s['timing']['candidates_s']:.1f} s, "
                     f"writing {s['timing']['write_s']:.1f} s | {s['peak_rss_mib']:.0f} |")
    if "vitb32" in p:
        v = p["vitb32"]
        lines.append(f"| ViT-B/32 encoding | {v['pairs']} | {v['encode_s_per_1000_pairs']:.1f} | 640x480 JPEGs, "
                     f"one caption each, batch {v['batch']}, fp32 | {v['peak_rss_mib']:.0f} |")
    return lines


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    p.add_argument("--repeats", type=int, default=3, help="runs of the demo part (the median is reported)")
    p.add_argument("--scale_pairs", type=int, default=120_000)
    p.add_argument("--vitb32_pairs", type=int, default=256)
    p.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return {}
    from npc.io import atomic_write_json
    from npc.reporting import environment, write_table

    record = {**environment(__file__, argv, "cpu"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
              "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in os.getloadavg()], "parts": {}}
    for part in [x for x in args.parts.split(",") if x]:
        cmd = [sys.executable, __file__, "--child", part, "--repeats", str(args.repeats),
               "--scale_pairs", str(args.scale_pairs), "--vitb32_pairs", str(args.vitb32_pairs)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
            raise SystemExit(f"part {part} failed")
        result = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[7:])
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        record["parts"][part] = result
        print(f"{part}: {json.dumps(result)[:400]}")
    record["load_average_after"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine slows it
    OUT.mkdir(parents=True, exist_ok=True)
    record["device"] = f"cpu ({record['parts'][next(iter(record['parts']))]['torch_threads']} threads)" \
        if record["parts"] else record["device"]
    atomic_write_json(OUT / "noise_report_cost.json", record)
    print(write_table(table(record), OUT / "noise_report_cost.md"))
    return record


if __name__ == "__main__":
    main()
