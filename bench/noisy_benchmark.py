"""The embedded noisy-correspondence benchmark: base vs CLIP fine-tuning vs NPC (paper / release).

On the demo dataset, for each noise ratio and seed, runs the real entry points
(``main_CLIP.py``, ``main_NPC.py``) as subprocesses with identical epochs, batch and data, and
records test recalls, wall time, NPC's noise-detection quality (ROC-AUC of its weights against the
ground-truth noise mask, mean weight of clean and noisy pairs) and the memory bank's clean-set
precision/recall. Results are appended to a JSON list after every run (written atomically), and
runs already recorded are skipped, so an interrupted benchmark continues where it stopped.

    python bench/noisy_benchmark.py                 # full: noise 0/0.2/0.4/0.6 x seeds 0/1/2 (hours on 2 CPUs)
    python bench/noisy_benchmark.py --quick         # one seed, 2 epochs, noise 0/0.6: a smoke run
    python bench/noisy_benchmark.py --search        # learning-rate search on the dev split (40% noise)
    python bench/noisy_benchmark.py --render        # table + plot from the recorded JSON into bench/results/noisy_benchmark/
    python bench/noisy_benchmark.py --jobs 2 ...    # two runs at a time, each with OMP_NUM_THREADS=1 (2 CPUs)

Each record keeps ``omp_num_threads`` and ``concurrent_jobs``: its ``seconds`` are wall time under that load.

Learning rates come from ``--search`` (dev split only, never test): for each method the lr with the
best dev rsum at 40% noise, seed 0, among ``--lrs``; the chosen values are written to
``bench/results/noisy_benchmark/lr_search.json`` and used by the benchmark runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from npc.io import atomic_write_json
from npc.methods import METHODS as METHOD_REGISTRY
from npc.methods import base_name, compose, get_method, name_parts
from npc.reporting import REPO, device_name, environment, git_commit, pyplot, repo_relative, save_figure, write_table

# The rows: "base" (the demo's base model, evaluated without training) and the methods of npc.methods.
# The table's order: the first grid's rows, then the methods registered since.
_FIRST = ("base", "clip", "npc_paper", "npc_release", "npc_bank_only", "gmm_filter", "pclean_weight", "npc_first_order")
METHODS = _FIRST + tuple(m for m in METHOD_REGISTRY if m not in _FIRST)
RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
RESULTS = REPO / "bench" / "results" / "noisy_benchmark"


def check_same_tree() -> None:
    """The runs execute the entry points of the tree ``npc`` was imported from: refuse to run from another
    checkout (an editable install of one tree, this script from another), whose records would name the wrong code."""
    here = Path(__file__).resolve().parents[1]
    if here != REPO.resolve():
        raise SystemExit(f"bench/noisy_benchmark.py is in {here} but imports npc from {REPO}: run it with "
                         f"PYTHONPATH={here}")


def method_options(method: str) -> list:
    """A row's method as command-line flags: a registered name, or one with options (``npc_paper[bank_weight=0.5]``,
    the name the run itself gives that composition)."""
    return ["--method", base_name(method)] + [x for k, v in name_parts(method).items() for x in ("--method_opt", f"{k}={v}")]


def check_method(method: str) -> None:
    """A row's method must be a registered one or a composition of options the run names the same way."""
    from npc.errors import ConfigError

    if method == "base":
        return
    try:
        name = compose(get_method(base_name(method)), options=name_parts(method)).name
    except ConfigError as e:
        raise SystemExit(f"--methods {method}: {e}") from None
    if name != method:
        raise SystemExit(f"--methods {method}: the run names this method {name}; give that name")


def command_for(method: str, noise: str, seed: int, *, epochs: int, lr: float | None, logs: Path, exp: str,
                extra=()) -> list:
    script = "main_CLIP.py" if method == "base" else f"main_{get_method(base_name(method)).script.upper()}.py"
    cmd = [sys.executable, script, "--dataset", "demo", "--noise_ratio", noise, "--seed", str(seed),
           "--logs", repo_relative(logs), "--experiments", exp, "--no_progress"]
    if method == "base":
        return cmd + ["--eval", *extra]
    cmd += [*method_options(method), "--epochs", str(epochs)]
    if lr is not None:
        cmd += ["--lr", repr(lr)]
    return cmd + list(extra)


def collect(method: str, run_dir: Path, noise: str) -> dict:
    res = json.loads((run_dir / ("eval_results.json" if method == "base" else "results.json")).read_text())
    metrics = next(iter(res["results"].values()))
    rec = {k: metrics[k] for k in (*RECALLS, "rsum")}
    if method != "base":
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        rec["best_dev_rsum"] = max(e["dev"]["rsum"] for e in epochs)
        rec["dev_rsum_per_epoch"] = [e["dev"]["rsum"] for e in epochs]
        npc = [e.get("weights", e.get("npc")) for e in epochs if "weights" in e or "npc" in e]  # "npc": earlier runs
        if npc and "weight_auc" in npc[0]:
            rec["weight_auc"] = statistics.fmean(e["weight_auc"] for e in npc)
            rec["weight_auc_per_epoch"] = [e["weight_auc"] for e in npc]
            rec["mean_w_clean"] = statistics.fmean(e["mean_weight_clean"] for e in npc)
            rec["mean_w_noisy"] = statistics.fmean(e["mean_weight_noisy"] for e in npc)
        if "bank" in get_method(base_name(method)).needs:
            bank_info = REPO / "dataset" / "demo" / "annotations" / "memory_bank" / f"{noise}_mbank_info.json"
            if bank_info.is_file():
                info = json.loads(bank_info.read_text())
                rec["bank_precision"] = info.get("precision")
                rec["bank_recall"] = info.get("recall")
                rec["bank_clean_fraction"] = info.get("clean_fraction")
    return rec


def run_one(method, noise, seed, *, epochs, lr, logs, tag, jobs: int = 1) -> dict:
    folder = "".join(c if c.isalnum() or c in "_.-" else "_" for c in method)  # npc_paper[bank_weight=0.5]
    exp = f"{tag}_{folder}_n{noise}_s{seed}" + (f"_lr{lr:g}" if tag == "search" else "")
    run_dir = logs / exp
    if run_dir.exists():  # a run interrupted half-way: start it again from scratch
        import shutil

        shutil.rmtree(run_dir)
    cmd = command_for(method, noise, seed, epochs=epochs, lr=lr, logs=logs, exp=exp)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if jobs > 1:  # concurrent torch jobs on shared cores: one thread each, or they fight over the cores
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    rec = {"method": method, "noise_ratio": float(noise), "seed": seed, "epochs": 0 if method == "base" else epochs,
           "lr": lr, **collect(method, run_dir, noise), "seconds": round(seconds, 1),
           "command": " ".join(["python"] + cmd[1:]), "git_commit": git_commit(), **run_environment(env),
           "omp_num_threads": env.get("OMP_NUM_THREADS"), "concurrent_jobs": jobs}
    return rec


def run_environment(run_env: dict) -> dict:
    """Device and versions of a run: the same torch as this process; on CPU the thread count of the run's own
    environment (``OMP_NUM_THREADS`` when set there, e.g. by ``--jobs``; else this process's)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment("", None, device)
    threads = run_env.get("OMP_NUM_THREADS")
    return {**{k: env[k] for k in ("torch", "cuda", "open_clip", "python")},
            "device": device_name(device, int(threads) if threads else None)}


def load(path: Path) -> list:
    return json.loads(path.read_text()) if path.is_file() else []


def key(rec) -> tuple:
    return rec["method"], float(rec["noise_ratio"]), rec["seed"], rec["epochs"], rec.get("lr")


def run_grid(methods, noises, seeds, *, epochs, lrs: dict, out: Path, logs: Path, tag: str, jobs: int = 1) -> list:
    """Every (seed, noise, method) not recorded yet, ``jobs`` at a time; each record is appended to ``out``
    (atomically, by this process only) as its run ends."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    records = load(out)
    done = {key(r) for r in records}
    todo = []
    for seed in seeds:
        for noise in noises:
            for method in methods:
                lr = None if method == "base" else lrs.get(method, lrs.get(get_method(base_name(method)).lr_group))
                k = (method, float(noise), seed, 0 if method == "base" else epochs, lr)
                if k not in done:
                    done.add(k)
                    todo.append((method, noise, seed, lr))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_one, method, noise, seed, epochs=epochs, lr=lr, logs=logs, tag=tag, jobs=jobs)
                   for method, noise, seed, lr in todo]
        for future in as_completed(futures):
            rec = future.result()
            records.append(rec)
            atomic_write_json(out, records)
            extra = f" weight AUC {rec['weight_auc']:.3f}" if "weight_auc" in rec else ""
            print(f"{rec['method']:12s} noise {rec['noise_ratio']:.1f} seed {rec['seed']}: rsum {rec['rsum']:.1f}{extra} "
                  f"({rec['seconds']:.0f}s)", flush=True)
    return records


def search(args) -> None:
    out = RESULTS / "lr_search.json"
    records = load(out)
    done = {(r["method"], r["lr"]) for r in records}
    for method in [m for m in args.methods if m != "base"]:
        for lr in args.lrs:
            if (method, lr) in done:
                continue
            rec = run_one(method, args.search_noise, 0, epochs=args.epochs, lr=lr, logs=args.logs, tag="search")
            records.append(rec)
            atomic_write_json(out, records)
            print(f"search {method:12s} lr {lr:.0e}: best dev rsum {rec['best_dev_rsum']:.1f} ({rec['seconds']:.0f}s)",
                  flush=True)
    chosen = {}
    for method in sorted({r["method"] for r in records}):
        best = max((r for r in records if r["method"] == method), key=lambda r: r["best_dev_rsum"])
        chosen[method] = best["lr"]
    for method in list(chosen):  # a method not searched takes the lr of its family's searched method
        chosen.setdefault(get_method(method).lr_group, chosen[method])
    atomic_write_json(RESULTS / "lr_chosen.json", chosen)
    print("chosen learning rates (best dev rsum at noise", args.search_noise, "):", chosen)


def mean_std(values):
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values)


def mean_std_cell(values, digits: int = 1) -> str:
    """A table cell "mean ± std" of the seeds' values (std 0 for one seed), or "–" when there are none."""
    return "{0:.{2}f} ± {1:.{2}f}".format(*mean_std(values), digits) if values else "–"


def table_methods(records: list, unrecorded: bool = False) -> list:
    """The recorded methods in the table's order: registered ones (those registered now, the order of
    ``METHODS``), each followed by its recorded compositions (e.g. with other options); with ``unrecorded``,
    a registered method with no record at all keeps its place too."""
    order = _FIRST + tuple(m for m in METHOD_REGISTRY if m not in _FIRST)
    names = []
    for m in order:
        recorded = sorted({r["method"] for r in records if base_name(r["method"]) == m}, key=lambda n: (n != m, n))
        names += recorded or ([m] if unrecorded and m != "base" else [])
    return names


def summary_table(records: list) -> str:
    """The README's table: test rsum per noise ratio (mean ± std over the seeds) and the mean weight AUC at
    40% and 60% noise, one row per recorded method; a registered method without records is a row that says
    it is not yet benchmarked."""
    noises = sorted({r["noise_ratio"] for r in records})
    auc_noises = [n for n in (0.4, 0.6) if n in noises]
    lines = ["| method | " + " | ".join(f"{n:.0%}" for n in noises) + " | "
             + " | ".join(f"weight AUC {n:.0%}" for n in auc_noises) + " |",
             "|---|" + "---|" * (len(noises) + len(auc_noises))]
    for m in table_methods(records, unrecorded=True):
        rows = {n: [r for r in records if r["method"] == m and r["noise_ratio"] == n] for n in noises}
        if not any(rows.values()):
            lines.append(f"| {m} | " + " | ".join(["not yet benchmarked"] + ["–"] * (len(noises) + len(auc_noises) - 1))
                         + " |")
            continue
        cells = [mean_std_cell([r["rsum"] for r in rows[n]]) for n in noises]
        aucs = [[r["weight_auc"] for r in rows[n] if r.get("weight_auc") is not None] for n in auc_noises]
        cells += [f"{statistics.fmean(a):.3f}" if a else "–" for a in aucs]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(records: list, noises=(0.4, 0.6)) -> str:
    """Test rsum per seed at ``noises`` for every method recorded at all of them, and the share of the damage
    undone at the last: (rsum - CLIP's at that noise) / (CLIP's at 0% - CLIP's at that noise), means over seeds."""
    def rsums(m, noise):
        return sorted(((r["seed"], r["rsum"]) for r in records if r["method"] == m and r["noise_ratio"] == noise))

    def mean(m, noise):
        values = [v for _, v in rsums(m, noise)]
        return statistics.fmean(values) if values else None

    last = noises[-1]
    clean, noisy = mean("clip", 0.0), mean("clip", last)
    lines = ["| method | " + " | ".join(f"rsum {n:.0%} (seeds " + " / ".join(str(s) for s, _ in rsums("clip", n)) + ")"
                                       for n in noises) + f" | gap closed at {last:.0%} |",
             "|---|" + "---|" * (len(noises) + 1)]
    for m in table_methods(records):
        if m == "base" or not all(rsums(m, n) for n in noises):
            continue
        cells = [f"{mean(m, n):.1f} (" + " / ".join(f"{v:.1f}" for _, v in rsums(m, n)) + ")" for n in noises]
        gap = "–" if clean is None or noisy is None else f"{(mean(m, last) - noisy) / (clean - noisy):.1%}"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {gap} |")
    return "\n".join(lines)


def full_table(records: list) -> list:
    """Every recall, rsum, weight AUC and wall time per method and noise ratio (mean ± std over the seeds)."""
    noises = sorted({r["noise_ratio"] for r in records})
    methods = table_methods(records)
    lines = ["| method | noise | seeds | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | rsum "
             "| weight AUC | s/run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for noise in noises:
        for m in methods:
            rs = [r for r in records if r["method"] == m and r["noise_ratio"] == noise]
            if not rs:
                continue
            cells = [mean_std_cell([r[k] for r in rs]) for k in (*RECALLS, "rsum")]
            auc = mean_std_cell([r["weight_auc"] for r in rs if r.get("weight_auc") is not None], digits=3)
            secs = statistics.fmean(r["seconds"] for r in rs)
            lines.append(f"| {m} | {noise:.0%} | {len(rs)} | " + " | ".join(cells) + f" | {auc} | {secs:.0f} |")
    return lines


def render(records: list, out_md: Path, out_png: Path) -> str:
    noises = sorted({r["noise_ratio"] for r in records})
    methods = table_methods(records)
    table = write_table(full_table(records), out_md)
    plt = pyplot()
    if plt is None:
        return table
    # rsum against noise: the first grid's rows, then the methods added since beside three references.
    refs = ("clip", "npc_paper", "pclean_weight")
    panels = (("the first grid", [m for m in methods if m in _FIRST], ()),
              ("added since (dashed: references)", [m for m in methods if m in refs or m not in _FIRST], refs))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5), sharey=True)
    for ax, (title, shown, dashed_refs) in zip(axes, panels):
        if len(shown) > 10:  # more rows than tab10's colours: none shares one
            ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for m in shown:
            xs, mus, sds = [], [], []
            for noise in noises:
                vals = [r["rsum"] for r in records if r["method"] == m and r["noise_ratio"] == noise]
                if vals:
                    mu, sd = mean_std(vals)
                    xs.append(noise * 100), mus.append(mu), sds.append(sd)
            dashed = m in dashed_refs
            ax.errorbar(xs, mus, yerr=sds, marker="o", capsize=3, label=m, linestyle="--" if dashed else "-",
                        alpha=0.6 if dashed else 1.0)
        ax.set_xlabel("caption noise (%)")
        ax.set_title(f"demo test rsum: {title}")
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=8)
    save_figure(fig, out_png)
    return table


def split_methods(text: str) -> list:
    """``"clip,npc_paper[a=1,b=2]"`` -> ``["clip", "npc_paper[a=1,b=2]"]``: commas inside brackets stay."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [m for m in (*out, cur) if m]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, 2 epochs, noise 0 and 0.6")
    p.add_argument("--search", action="store_true", help="learning-rate search on dev (see module doc)")
    p.add_argument("--render", action="store_true", help="only render table and plot from the JSON")
    p.add_argument("--noise", default="0.0,0.2,0.4,0.6", help="comma list of noise ratios")
    p.add_argument("--seeds", default="0,1,2", help="comma list of training seeds")
    p.add_argument("--methods", default="base,clip,npc_paper,npc_release",
                   help="comma list of " + ", ".join(METHODS) + " (npc_bank_only: ablation, weights fixed to 1); a "
                        "method with options as the run names it, e.g. 'npc_paper[bank_weight=0.5]' (a comma "
                        "inside brackets belongs to the method)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs of every fine-tuning run")
    p.add_argument("--lrs", default="1e-4,2e-4,5e-4,1e-3", help="--search candidates")
    p.add_argument("--search_noise", default="0.4", help="noise ratio of the --search runs")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default bench/results/noisy_benchmark/noisy_benchmark.json)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at a time (each with OMP_NUM_THREADS=1 when > 1; default 1)")
    p.add_argument("--logs", type=Path, default=REPO / "bench" / "runs", help="where run folders go")
    args = p.parse_args(argv)
    args.methods = split_methods(args.methods)
    unknown = {m for m in args.methods if base_name(m) not in METHODS}
    if unknown:
        p.error(f"--methods: unknown {sorted(unknown)}")
    for m in args.methods:
        check_method(m)
    args.lrs = [float(x) for x in args.lrs.split(",")]
    if args.quick:
        args.seeds, args.epochs, args.noise = "0", 2, "0.0,0.6"
    out = args.out or RESULTS / ("noisy_benchmark_quick.json" if args.quick else "noisy_benchmark.json")
    if args.search:
        search(args)
        return 0
    if not args.render:
        check_same_tree()
        chosen_path = RESULTS / "lr_chosen.json"
        lrs = json.loads(chosen_path.read_text()) if chosen_path.is_file() else {}
        if not lrs:
            print("no bench/results/noisy_benchmark/lr_chosen.json: using the demo's default learning rates")
        run_grid(args.methods, args.noise.split(","), [int(s) for s in args.seeds.split(",")], epochs=args.epochs,
                 lrs=lrs, out=out, logs=args.logs, tag="quick" if args.quick else "bench", jobs=args.jobs)
    records = load(out)
    table = render(records, out.with_suffix(".md"), out.with_suffix(".png"))  # beside the records
    print(table)
    print("\nthe README's table (tests/test_docs.py checks it):\n" + summary_table(records))
    print("\nper seed (docs/studies/benchmark.md):\n" + per_seed_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
