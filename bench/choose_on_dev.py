"""The 60% attempt's choice among its candidates, on the dev split only (docs/studies/benchmark.md).

    python bench/choose_on_dev.py 'npc_pclean[bank_weight=0.5]' 'npc_pclean[bank_weight=0.25]' \
        --reference pclean_weight --seed 0

Reads ``best_dev_rsum`` of the benchmark's records (never a test recall) at 40% and 60% noise, seed
``--seed``, and applies the rule stated before the runs: the chosen candidate has the higher best dev rsum
at 60% among those whose best dev rsum at 40% is at least the reference's; if none or all pass, the higher
at 60%. Prints the dev numbers and the choice and writes them to
``bench/results/noisy_benchmark/attempt_choice.json``.
"""
from __future__ import annotations

import argparse
import sys

from noisy_benchmark import RESULTS, load

from npc.io import atomic_write_json
from npc.reporting import environment


def dev(records: list, method: str, noise: float, seed: int) -> float:
    found = [r["best_dev_rsum"] for r in records if r["method"] == method and r["noise_ratio"] == noise
             and r["seed"] == seed]
    if len(found) != 1:
        raise SystemExit(f"{method} at {noise:.0%}, seed {seed}: {len(found)} records (expected one)")
    return found[0]


def choose(candidates: list, reference: dict, devs: dict) -> str:
    """The rule: among candidates at least the reference's dev rsum at 40%, the best at 60%; if none or all
    pass, the best at 60% of them all."""
    passing = [c for c in candidates if devs[c][0.4] >= reference[0.4]]
    pool = passing if 0 < len(passing) < len(candidates) else candidates
    return max(pool, key=lambda c: devs[c][0.6])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("candidates", nargs="+")
    p.add_argument("--reference", default="pclean_weight")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    records = load(RESULTS / "noisy_benchmark.json")
    ref = {n: dev(records, a.reference, n, a.seed) for n in (0.4, 0.6)}
    devs = {c: {n: dev(records, c, n, a.seed) for n in (0.4, 0.6)} for c in a.candidates}
    chosen = choose(a.candidates, ref, devs)
    for name, d in [(a.reference, ref), *devs.items()]:
        print(f"{name:32s} best dev rsum 40% {d[0.4]:.1f}  60% {d[0.6]:.1f}")
    print("chosen:", chosen)
    atomic_write_json(RESULTS / "attempt_choice.json", {
        **environment(__file__, argv if argv is not None else sys.argv[1:], "cpu"), "seed": a.seed,
        "reference": {a.reference: ref}, "candidates": devs, "chosen": chosen,
        "rule": "the higher best dev rsum at 60% among candidates whose best dev rsum at 40% is at least the "
                "reference's; if none or all pass, the higher at 60%"})
    return 0


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
