"""Rerun recorded benchmark runs by their method's name and compare with the record, bit for bit.

    python bench/spot_check.py clip:0.4:0 pclean_weight:0.4:0 npc_paper:0.4:0 --out spot_check.json

Each ``METHOD:NOISE:SEED`` is looked up in ``bench/results/noisy_benchmark/noisy_benchmark.json`` and run
again through the benchmark's own runner (``run_one``: the real entry point, ``--method METHOD``, the
recorded epochs and learning rate) with the thread count the record was measured with (its ``device``
field; records without one were run with 2 threads), so that float sums happen in the same order. The
record written beside the benchmark's says, per run, the recorded and the new test rsum and whether every
recall is equal.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from noisy_benchmark import RECALLS, RESULTS, load, noise_item, run_one, seed_item

from npc.errors import ConfigError
from npc.io import atomic_write_json, read_json
from npc.reporting import REPO, environment, repo_relative


def threads_of(record: dict) -> int:
    m = re.search(r"\((\d+) threads", record.get("device") or "")
    return int(m.group(1)) if m else 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="METHOD:NOISE:SEED")
    p.add_argument("--out", default="spot_check.json", help="file name under bench/results/noisy_benchmark/")
    a = p.parse_args(argv)
    if Path(a.out).name != a.out or not a.out.endswith(".json"):
        p.error(f"--out {a.out}: a file name ending in .json (written under {repo_relative(RESULTS)})")
    earlier = read_json(RESULTS / a.out) if (RESULTS / a.out).exists() else {"rows": []}
    if not (isinstance(earlier, dict) and "rows" in earlier):
        p.error(f"--out {a.out}: {repo_relative(RESULTS / a.out)} exists and is not a spot check's record: choose "
                f"another name")
    specs = []
    for spec in a.runs:
        parts = spec.split(":")
        try:
            if len(parts) != 3 or not parts[0]:
                raise argparse.ArgumentTypeError("three parts")
            specs.append((spec, parts[0], noise_item(parts[1]), seed_item(parts[2])))
        except argparse.ArgumentTypeError as e:
            p.error(f"{spec}: not METHOD:NOISE:SEED ({e})")
    records = load(RESULTS / "noisy_benchmark.json")
    rows = []
    for spec, method, noise, seed in specs:
        rec = next((r for r in records if r["method"] == method and r["noise_ratio"] == float(noise)
                    and r["seed"] == seed), None)
        if rec is None:
            raise ConfigError(f"{spec}: no such record in {repo_relative(RESULTS / 'noisy_benchmark.json')}")
        threads = threads_of(rec)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the runner's subprocess inherits it
        new = run_one(method, noise, seed, epochs=rec["epochs"], lr=rec.get("lr"), logs=REPO / "bench" / "runs",
                      tag="spot")
        # Records written before the evaluation rounded its percentages carry float noise (17.599999999999998):
        # a recall over 500 images is a multiple of 0.2, so 6 decimals tell every difference.
        equal = all(round(new[k], 6) == round(rec[k], 6) for k in (*RECALLS, "rsum"))
        rows.append({"method": method, "noise_ratio": float(noise), "seed": seed, "threads": threads,
                     "recorded_rsum": rec["rsum"], "rsum": new["rsum"], "every_recall_equal": equal,
                     "recorded_commit": rec["git_commit"], "command": new["command"], "seconds": new["seconds"]})
        print(f"{spec}: recorded {rec['rsum']:.2f}, now {new['rsum']:.2f} ({'equal' if equal else 'DIFFERENT'})",
              flush=True)
    env = environment(__file__, argv, "cpu")
    atomic_write_json(RESULTS / a.out, {**{k: env[k] for k in ("git_commit", "command", "torch", "open_clip",
                                                                  "python")}, "rows": rows})
    return 0 if all(r["every_recall_equal"] for r in rows) else 1


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(lambda argv: sys.exit(main(argv)), sys.argv[1:]))
