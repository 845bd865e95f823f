"""Why the oracles are not the ceiling on the demo: a control with no noise at all.

``oracle_weight`` at 60% caption noise is CLIP fine-tuning in which the 6,000 noisy pairs weigh 0:
it learns from the 4,000 clean pairs, with the noisy ones still in its batches as negatives. This
control runs the same method on the demo's *clean* training split with a random 60% (or 40%) of the
pairs weighing 0 (the mask drawn with ``--mask_seed``, the same number of pairs as the noisy split
masks). If it scores like ``oracle_weight`` at the same ratio, the oracle's deficit comes from the
number of pairs it keeps, not from the noisy pairs around them. Same protocol as the benchmark
(5 epochs, batch 128, lr 2e-4, seeds 0/1/2, test split).

    python bench/oracle_data_control.py                  # 60% and 40% weighed 0, seeds 0/1/2
    python bench/oracle_data_control.py --render         # the table from the records

Writes ``bench/results/noisy_benchmark/oracle_data_control.{json,md}`` (one record per run, appended
atomically; runs already recorded are skipped).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from npc.io import atomic_write_json
from npc.reporting import REPO, environment, write_table

RESULTS = REPO / "bench" / "results" / "noisy_benchmark"
OUT = RESULTS / "oracle_data_control.json"


def random_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """``round(fraction * n)`` of ``n`` pairs, drawn at random, marked True (weighed 0 by ``oracle_weight``)."""
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:round(fraction * n)]] = True
    return mask


def train_one(fraction: float, seed: int, mask_seed: int, logs: Path, exp: str) -> None:
    """The run itself (in a child process started from the repository root, where main_CLIP is importable)."""
    import main_CLIP
    from bench.noisy_benchmark import command_for
    from npc.sources.base import DataSource

    real = DataSource.load_train

    def clean_split_random_mask(self, **kw):
        split, _ = real(self, **kw)
        return split, random_mask(len(split), fraction, mask_seed)

    DataSource.load_train = clean_split_random_mask
    # the benchmark's protocol (its flags for oracle_weight, the lr it chose for CLIP), on the clean split
    main_CLIP.main(command_for("oracle_weight", "0.0", seed, epochs=5, lr=2e-4, logs=logs, exp=exp)[2:])


def run_one(fraction: float, seed: int, mask_seed: int, logs: Path) -> dict:
    import os
    import shutil
    import subprocess

    exp = f"control_oracle_weight_drop{fraction}_s{seed}"
    run_dir = REPO / logs / exp
    if run_dir.exists():  # a run interrupted half-way: start it again from scratch
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.oracle_data_control", "--train_one", str(fraction), str(seed),
                    str(mask_seed), str(logs), exp], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    res = json.loads((run_dir / "results.json").read_text())
    metrics = next(iter(res["results"].values()))
    return {"method": "oracle_weight on clean captions, random pairs weighed 0", "weighed_0": fraction,
            "kept_pairs": int(round((1 - fraction) * 10000)), "seed": seed, "mask_seed": mask_seed,
            "rsum": metrics["rsum"], "seconds": round(time.perf_counter() - t0, 1),
            **environment("bench/oracle_data_control.py", sys.argv[1:], "cpu")}


def render(records: list) -> str:
    bench = json.loads((RESULTS / "noisy_benchmark.json").read_text())
    lines = ["| pairs weighed 0 | kept pairs | this control: clean captions, random mask | `oracle_weight`: noisy captions, "
             "true mask |", "|---|---|---|---|"]
    for fraction in sorted({r["weighed_0"] for r in records}, reverse=True):
        ctl = [r["rsum"] for r in sorted(records, key=lambda r: r["seed"]) if r["weighed_0"] == fraction]
        orc = [r["rsum"] for r in sorted(bench, key=lambda r: r["seed"])
               if r["method"] == "oracle_weight" and r["noise_ratio"] == fraction]

        def cell(v):
            if not v:
                return "–"
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            return f"{statistics.fmean(v):.1f} ± {sd:.1f} ({' / '.join(f'{x:.1f}' for x in v)})"

        lines.append(f"| {fraction:.0%} | {round((1 - fraction) * 10000):,} | {cell(ctl)} | {cell(orc)} |")
    return write_table(lines, OUT.with_suffix(".md"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fractions", default="0.6,0.4", help="comma list: the share of pairs weighed 0")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--mask_seed", type=int, default=99)
    p.add_argument("--logs", type=Path, default=Path("bench/runs"))
    p.add_argument("--render", action="store_true")
    p.add_argument("--train_one", nargs=5, help=argparse.SUPPRESS)  # FRACTION SEED MASK_SEED LOGS EXP: one run
    args = p.parse_args(argv)
    if args.train_one:
        fraction, seed, mask_seed, logs, exp = args.train_one
        train_one(float(fraction), int(seed), int(mask_seed), Path(logs), exp)
        return 0
    records = json.loads(OUT.read_text()) if OUT.is_file() else []
    if not args.render:
        done = {(r["weighed_0"], r["seed"], r["mask_seed"]) for r in records}
        for fraction in [float(f) for f in args.fractions.split(",")]:
            for seed in [int(s) for s in args.seeds.split(",")]:
                if (fraction, seed, args.mask_seed) in done:
                    continue
                rec = run_one(fraction, seed, args.mask_seed, args.logs)
                records.append(rec)
                atomic_write_json(OUT, records)
                print(f"weighed 0: {fraction:.0%}, seed {seed}: rsum {rec['rsum']:.1f} ({rec['seconds']:.0f}s)", flush=True)
    print(render(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
