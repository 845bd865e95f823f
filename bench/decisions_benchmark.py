"""What a person's review buys: the demo at 40% noise, its noise report's top pairs decided, training on them.

1. The noise report of the demo at ``--noise`` (``find_noisy_pairs.py``, the demo's base model), timed.
2. Its ``--top`` most suspicious pairs (``pairs.csv``'s order) decided with the known noise mask standing in
   for a person: *wrong* where the caption is noisy, *right* where it is clean; written as the page writes
   ``decisions.csv`` (the report's data fingerprint, keys as the data source names them).
3. ``clip`` and ``npc_paper`` trained with ``--pair_decisions`` for each seed, through bench/noisy_benchmark.py's
   runner (its command, records and locking), one run at a time.

Each run is a record of the benchmark's format in ``bench/results/noisy_benchmark/decisions_benchmark.json``
(added as it ends; runs already recorded are skipped), with the decisions' counts, what they cost (the report's
seconds, the pairs decided, the run's seconds) and the gain against the same method, noise, seed, epochs and
learning rate without decisions in ``noisy_benchmark.json``. ``--render`` writes the table beside it (.md).

    python bench/decisions_benchmark.py                    # noise 0.4, seeds 0,1,2, clip and npc_paper, top 500
    python bench/decisions_benchmark.py --seeds 0 --render
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import noisy_benchmark as nb  # noqa: E402  (bench/ is this script's folder)
from npc.io import atomic_write_text  # noqa: E402
from npc.reporting import REPO, repo_relative  # noqa: E402

OUT = nb.RESULTS / "decisions_benchmark.json"
BASELINES = nb.RESULTS / "noisy_benchmark.json"
WORK = REPO / "bench" / "runs" / "decisions"


def build_report(noise: str, top: int) -> tuple:
    """The noise report of the demo at ``noise`` (its folder, and its wall seconds)."""
    out = WORK / f"report_n{noise}"
    cmd = [sys.executable, "find_noisy_pairs.py", "--dataset", "demo", "--noise_ratio", noise, "--out",
           repo_relative(out), "--top", str(min(top, 50)), "--no_progress"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return out, round(time.perf_counter() - t0, 1)


def decide(report: Path, noise: str, top: int) -> tuple:
    """decisions.csv for the report's ``top`` most suspicious pairs, the noise mask as the person; its path and
    counts."""
    from npc.params import parse_args
    from npc.sources import source_for

    cfg = parse_args(["--dataset", "demo", "--noise_ratio", noise], "report")
    split, mask = source_for(cfg.data).load_train(log=lambda *_: None, check_images=False)
    identity = json.loads((report / "report.json").read_text())["identity"]
    with open(report / "pairs.csv", newline="", encoding="utf-8") as f:
        ranked = sorted(csv.DictReader(f), key=lambda r: int(r["rank"]))[:top]
    keys = split.keys
    rows, counts = [], {"wrong": 0, "right": 0}
    for r in ranked:
        i = int(r["line"]) - 1  # the demo's caption file: the pair's line
        d = "wrong" if mask[i] else "right"
        counts[d] += 1
        caption = split.captions[i].replace('"', '""')
        rows.append(f'{keys[i]},{d},"{caption}"')
    path = WORK / f"decisions_n{noise}_top{top}.csv"
    atomic_write_text(path, "\r\n".join([f"# npc pair decisions: data_fingerprint {identity['data_fingerprint']}, "
                                         f"run {identity['run']}, dataset demo", "key,decision,caption", *rows]) + "\r\n")
    return path, counts


def baseline_of(rec: dict) -> dict | None:
    want = (rec["method"], rec["noise_ratio"], rec["seed"], rec["epochs"], rec["lr"])
    return next((r for r in nb.load(BASELINES) if nb.key(r) == want), None)


def report_cost(noise: str) -> str:
    """The report's own seconds (encoding, scores, files), without its setup (which pretrains the demo's base on
    first use), from its report.json; and its wall seconds as recorded."""
    path = WORK / f"report_n{noise}" / "report.json"
    if not path.is_file():
        return ""
    t = json.loads(path.read_text())["timing"]
    return f"{t['total_s'] - t['setup_s']:.0f}"


def render(records: list, noise: str = "0.4") -> str:
    scoring = report_cost(noise)
    lines = ["| method | seeds | rsum without decisions | rsum with decisions | gain | wall s without / with | "
             "pairs decided (wrong / right) | report wall s (scoring s) |", "|---|---|---|---|---|---|---|---|"]
    for m in sorted({r["method"] for r in records}):
        rs = sorted((r for r in records if r["method"] == m), key=lambda r: r["seed"])
        base = [r["baseline_rsum"] for r in rs if r.get("baseline_rsum") is not None]
        d = rs[0]["pair_decisions"]
        lines.append(f"| {m} | {','.join(str(r['seed']) for r in rs)} | {nb.mean_std_cell(base)} | "
                     f"{nb.mean_std_cell([r['rsum'] for r in rs])} | "
                     f"{nb.mean_std_cell([r['gain_rsum'] for r in rs if r.get('gain_rsum') is not None])} | "
                     f"{statistics.fmean(r['baseline_seconds'] for r in rs if r.get('baseline_seconds')):.0f} / "
                     f"{statistics.fmean(r['seconds'] for r in rs):.0f} | {rs[0]['decided_pairs']} ({d['wrong']} / "
                     f"{d['right']}) | {rs[0]['report_seconds']:.0f} ({scoring or '?'}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noise", default="0.4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="clip,npc_paper")
    p.add_argument("--top", type=int, default=500, help="pairs decided, the report's most suspicious first")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--render", action="store_true", help="only write the table of the records")
    args = p.parse_args(argv)
    if not args.render:
        nb.check_same_tree()
        WORK.mkdir(parents=True, exist_ok=True)
        report, report_s = build_report(args.noise, args.top)
        decisions, counts = decide(report, args.noise, args.top)
        print(f"report in {report_s:.0f} s; decided its top {args.top}: {counts}", flush=True)
        chosen = nb.RESULTS / "lr_chosen.json"
        lrs = json.loads(chosen.read_text()) if chosen.is_file() else {}
        plain = nb.command_for

        def with_decisions(*a, **kw):
            return plain(*a, **kw) + ["--pair_decisions", repo_relative(decisions)]

        nb.command_for = with_decisions  # the benchmark's runner, its command with the decisions
        done = {nb.key(r) for r in nb.load(OUT)}
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in args.methods.split(","):
                lr = lrs.get(method, lrs.get(nb.get_method(nb.base_name(method)).lr_group))
                if (method, float(args.noise), seed, args.epochs, lr) in done:
                    continue
                rec = nb.run_one(method, args.noise, seed, epochs=args.epochs, lr=lr, logs=WORK / "runs",
                                 tag=f"decisions{args.top}")
                res = json.loads((WORK / "runs" / nb.experiment_name(method, args.noise, seed, lr,
                                                                     f"decisions{args.top}") / "results.json").read_text())
                rec.update(pair_decisions=res["pair_decisions"], decided_pairs=args.top, report_seconds=report_s)
                for k in ("bank_precision", "bank_recall", "bank_clean_fraction"):
                    rec.pop(k, None)  # the runner reads the bank without decisions; this run's is its own
                base = baseline_of(rec)
                if base is not None:
                    rec.update(baseline_rsum=base["rsum"], gain_rsum=round(rec["rsum"] - base["rsum"], 2),
                               baseline_seconds=base.get("seconds"))
                nb.add_record(OUT, rec)
                print(f"{method} seed {seed}: rsum {rec['rsum']:.1f} ({rec.get('gain_rsum', float('nan')):+.1f} vs "
                      f"without decisions), {rec['seconds']:.0f} s", flush=True)
    records = nb.load(OUT)
    table = render(records, args.noise)
    atomic_write_text(OUT.with_suffix(".md"), "# Training with a person's decisions (demo, noise "
                      f"{args.noise}, the report's top {args.top} decided by the noise mask)\n\n{table}")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
