"""What real CLIP weights cost on a CPU: ViT-B/32 encoding 1,000 images, and a small fine-tune.

    python bench/cpu_cost.py                      # torch's default threads (one per core)
    python bench/cpu_cost.py --images 1000 --pairs 200 --epochs 2 --batch_size 32

Random ViT-B/32 weights (``--pretrained none``): the cost is the architecture's, the same as with
``--pretrained openai`` (no download needed to measure it). Images are generated 640x480 JPEGs (a
photograph's size), one caption each.

* ``encode``: ``--images`` images and their captions through ``npc.evaluation.encode_split`` (the path of
  the memory bank, the noise report and evaluation), batch 64, fp32;
* ``finetune``: ``main_CLIP.py`` on a CSV of ``--pairs`` training pairs (dev and test 20 images each),
  ``--epochs`` x ``--batch_size``, ``--method clip``: the seconds of the whole command and of the
  training steps (from the run's metrics.jsonl).

Writes bench/results/cpu_cost/cpu_cost.json: the numbers, the command, the device and its threads and
cores, the load average before and after (a shared machine slows everything), the versions and the
git commit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "cpu_cost" / "cpu_cost.json"
WORDS = "a man woman dog red blue small sitting on the table street grass with two people riding bike".split()


def captions(n, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 10)) for _ in range(n)]


def part_encode(folder: Path, n: int) -> dict:
    import numpy as np

    from npc.data import Split
    from npc.evaluation import encode_split
    from npc.model import create_model
    from studylib.paper_images import write_paper_size_jpegs

    (folder / "encode").mkdir()
    paths = write_paper_size_jpegs(folder / "encode", n)
    split = Split("train", captions(n, 0), [p.name for p in paths], paths, np.arange(n), 1)
    model, preprocess, tokenizer = create_model("ViT-B/32", "none", init_seed=0)
    t0 = time.perf_counter()
    encode_split(model, split, preprocess, tokenizer, batch_size=64, progress=False)
    seconds = time.perf_counter() - t0
    return {"images": n, "captions": n, "batch": 64, "precision": "fp32", "encode_s": round(seconds, 1),
            "s_per_1000_images": round(seconds / n * 1000, 1)}


def part_finetune(folder: Path, pairs: int, epochs: int, batch_size: int) -> dict:
    from studylib.paper_images import write_paper_size_jpegs

    sys.path.insert(0, str(REPO))
    import main_CLIP

    files = {}
    for k, (split, n) in enumerate((("train", pairs), ("dev", 20), ("test", 20))):
        (folder / split).mkdir()
        paths = write_paper_size_jpegs(folder / split, n)
        rows = [f"{p.relative_to(folder)}\t{c}" for p, c in zip(paths, captions(n, k + 1))]
        files[split] = folder / f"{split}.csv"
        files[split].write_text("filepath\ttitle\n" + "\n".join(rows) + "\n", encoding="utf-8")
    flags = ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
             "--test_data", str(files["test"]), "--vision_model", "ViT-B/32", "--pretrained", "none",
             "--batch_size", str(batch_size), "--epochs", str(epochs), "--lr", "1e-5", "--num_workers", "0",
             "--no_progress", "--logs_dir", str(folder / "logs"), "--experiments", "ft", "--eval_batch_size", "64"]
    t0 = time.perf_counter()
    main_CLIP.main(flags)
    seconds = time.perf_counter() - t0
    records = [json.loads(line) for line in (folder / "logs" / "ft" / "metrics.jsonl").read_text().splitlines()]
    steps = records[-1]["step"]
    train_s = sum(batch_size * (r["step"] - (records[k - 1]["step"] if k else 0)) / r["pairs_per_s"]
                  for k, r in enumerate(records))
    return {"pairs": pairs, "epochs": epochs, "batch_size": batch_size, "steps": steps, "method": "clip",
            "dev_test_images": 20, "command_s": round(seconds, 1), "training_steps_s": round(train_s, 1),
            "pairs_per_s": [round(r["pairs_per_s"], 2) for r in records],
            "flags": " ".join(f for f in flags if not f.startswith(str(folder)))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--parts", default="encode,finetune")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path[:0] = [str(REPO), str(REPO / "bench")]
    import open_clip
    import torch

    load_before = os.getloadavg()
    parts = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "encode" in a.parts:
            parts["encode"] = part_encode(Path(tmp), a.images)
            print("encode:", parts["encode"], flush=True)
        if "finetune" in a.parts:
            parts["finetune"] = part_finetune(Path(tmp), a.pairs, a.epochs, a.batch_size)
            print("finetune:", parts["finetune"], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    doc = {"command": "python bench/cpu_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "model": "ViT-B/32 (ViT-B-32-quickgelu), random weights (--pretrained none)", "parts": parts,
           "device": "cpu", "torch_threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average_before": [round(x, 2) for x in load_before],
           "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpu": platform.processor() or platform.machine(),
           "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                        "python": platform.python_version()}, "git_commit": commit}
    from npc.io import atomic_write_json

    atomic_write_json(OUT, doc)
    return doc


if __name__ == "__main__":
    main()
