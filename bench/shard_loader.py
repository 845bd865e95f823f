"""What webdataset shards cost: the shard index's size and build time, and image loading from shards against
the same pairs as image files listed in a CSV, side by side in one run.

    OMP_NUM_THREADS=1 python bench/shard_loader.py                 # 20,000 pairs of 256 px JPEGs, about 3 min on CPU
    OMP_NUM_THREADS=1 python bench/shard_loader.py --samples 2000 --load 200 --out /tmp/x   # a quick look

Generates ``--samples`` pairs (small JPEGs of random coloured blocks, ``--image_size`` px as img2dataset's
default resize writes them, and a caption each; npc/synthetic/shards.py) into shards of ``--per_shard``
samples (img2dataset's default 10,000) and, the same bytes, into one file per image with a CSV. Then:

* the index (npc/sources/webdataset_shards.py): each shard indexed from scratch, its bytes per sample, the
  build time per 10,000 samples, the time to read the split again from the indexes (a run's start) and the
  memory the split then holds (Python's tracemalloc); the shards' bytes per sample;
* loading: ``--load`` pairs at random positions (NPC's access pattern: a batch and its memory-bank pairs
  anywhere in the data), each read and decoded by the one decoding rule and open_clip's evaluation
  transform at 224 px, in this process (no loader workers), from the shards and from the files,
  alternating ``--rounds`` times (after a warm-up of 20 pairs each), the files in the page cache (just
  written) in both cases; pairs/s of each round and their median.

Writes ``shard_loader.json`` and ``shard_loader.md`` into ``--out`` (default bench/results/shards/), with
the device, versions, git commit and this command. The files are written in a temporary folder
(``--work``), removed at the end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=20_000, help="pairs generated")
    p.add_argument("--per_shard", type=int, default=10_000, help="samples per shard (img2dataset's default)")
    p.add_argument("--image_size", type=int, default=256, help="image side in px (img2dataset's default resize)")
    p.add_argument("--load", type=int, default=1500, help="pairs loaded per round and path")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each loading from shards then from files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="folder for the generated files (default: a temporary one)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "shards")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from open_clip.transform import image_transform

    from npc.config import DataConfig
    from npc.images import load_image
    from npc.io import atomic_write_json
    from npc.reporting import environment, write_table
    from npc.sources import source_for
    from npc.sources import webdataset_shards as W
    from npc.synthetic.shards import random_jpeg_samples, write_csv_set, write_shards

    load_before = [round(x, 2) for x in os.getloadavg()]  # the machine may be shared: say how busy it was
    work = Path(tempfile.mkdtemp(prefix="shard_loader.", dir=args.work))
    try:
        t0 = time.perf_counter()
        samples = random_jpeg_samples(args.samples, seed=args.seed, size=args.image_size)
        n_shards = -(-args.samples // args.per_shard)
        names = [f"{k:05d}.tar" for k in range(n_shards)]
        shards = write_shards(work, samples, names)
        csv_path = write_csv_set(work / "csv", "train", samples)
        jpeg_bytes = sum(len(s[0]) for s in samples)
        caption_bytes = sum(len(s[2].encode("utf-8")) for s in samples)
        del samples
        t_gen = time.perf_counter() - t0
        print(f"generated {args.samples} pairs in {n_shards} shard(s) and as files in {t_gen:.1f} s")

        # the index, from scratch
        W._INDEXES.clear()
        t0 = time.perf_counter()
        for shard in shards:
            W.shard_index(shard)
        t_build = time.perf_counter() - t0
        index_bytes = sum(W.index_path(s).stat().st_size for s in shards)
        spec = str(work / f"{{00000..{n_shards - 1:05d}}}.tar") if n_shards > 1 else str(shards[0])
        W._INDEXES.clear()
        t0 = time.perf_counter()
        split = source_for(DataConfig(dataset="webdataset", train_data=spec)).load_split("train", check_images=False)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        files = source_for(DataConfig(dataset="csv", train_data=str(csv_path))).load_split("train", check_images=False)
        t_read_csv = time.perf_counter() - t0
        assert split.captions == files.captions
        import tracemalloc

        W._INDEXES.clear()
        tracemalloc.start()
        held = source_for(DataConfig(dataset="webdataset", train_data=spec)).load_split("train", check_images=False)
        split_memory = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del held
        shard_bytes = sum(s.stat().st_size for s in shards)
        print(f"index: {index_bytes / args.samples:.1f} bytes/sample, built in {t_build:.2f} s, split read in "
              f"{t_read:.2f} s (CSV: {t_read_csv:.2f} s)")

        # loading at random positions, alternating the two paths
        preprocess = image_transform(224, is_train=False)
        order = np.random.default_rng(args.seed).permutation(args.samples)[:args.load]
        rates = {"shards": [], "files": []}
        for s in (split, files):  # warm-up: the transform's first calls, the first reads
            [load_image(s.image_paths[i], preprocess) for i in order[:20]]
        for r in range(args.rounds):
            for name, s in (("shards", split), ("files", files)):
                t0 = time.perf_counter()
                batch = torch.stack([load_image(s.image_paths[i], preprocess) for i in order])
                dt = time.perf_counter() - t0
                rates[name].append(args.load / dt)
                print(f"round {r + 1}: {name}: {args.load / dt:.0f} pairs/s")
                del batch
        med = {k: statistics.median(v) for k, v in rates.items()}
        result = {
            "samples": args.samples, "shards": n_shards, "per_shard": args.per_shard, "image_size": args.image_size,
            "mean_jpeg_bytes": round(jpeg_bytes / args.samples, 1),
            "mean_caption_bytes": round(caption_bytes / args.samples, 1),
            "shard_bytes_per_sample": round(shard_bytes / args.samples, 1),
            "index_bytes_per_sample": round(index_bytes / args.samples, 1),
            "split_in_memory_bytes_per_sample": round(split_memory / args.samples, 1),
            "index_build_s_per_10k": round(t_build / args.samples * 10_000, 3),
            "split_read_from_index_s_per_10k": round(t_read / args.samples * 10_000, 3),
            "split_read_csv_s_per_10k": round(t_read_csv / args.samples * 10_000, 3),
            "load": args.load, "rounds": args.rounds, "transform": "open_clip image_transform(224, is_train=False)",
            "pairs_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "median_pairs_per_s": {k: round(v, 1) for k, v in med.items()},
            "shards_over_files": round(med["shards"] / med["files"], 3),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            **environment(__file__, argv, torch.device("cpu")),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "shard_loader.json", result)
    lines = [
        f"Measured by `{result['command']}` (OMP_NUM_THREADS={result['omp_num_threads']}) on {result['device']}, "
        f"torch {result['torch']}, open_clip {result['open_clip']}, commit {result['git_commit']}; {result['cpus']} CPUs, "
        f"load average {result['load_average_before'][0]} before, {result['load_average_after'][0]} after.",
        "",
        "| what | value |", "|---|---|",
        f"| pairs, shards | {args.samples:,} in {n_shards} shard(s) of {args.per_shard:,} |",
        f"| mean JPEG / caption | {result['mean_jpeg_bytes']:,.0f} / {result['mean_caption_bytes']:.0f} bytes |",
        f"| shard size | {result['shard_bytes_per_sample']:,.0f} bytes per sample (tar headers: 3 members) |",
        f"| index size | {result['index_bytes_per_sample']} bytes per sample |",
        f"| the split in memory (one process) | {result['split_in_memory_bytes_per_sample']:.0f} bytes per sample |",
        f"| index build | {result['index_build_s_per_10k']} s per 10,000 samples |",
        f"| split read from the indexes | {result['split_read_from_index_s_per_10k']} s per 10,000 samples "
        f"(CSV: {result['split_read_csv_s_per_10k']} s) |",
        f"| loading, random positions, 1 process | shards {med['shards']:.0f} pairs/s, files {med['files']:.0f} "
        f"pairs/s (median of {args.rounds} rounds of {args.load}; shards / files = {result['shards_over_files']}) |",
    ]
    print(write_table(lines, args.out / "shard_loader.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
