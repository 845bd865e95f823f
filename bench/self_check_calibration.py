"""What the self-check (npc/self_check.py) measures on data a model can see and on data it cannot.

    OMP_NUM_THREADS=1 python bench/self_check_calibration.py --demo_root DIR --pretrained_dir DIR

Cases, each scored as find_noisy_pairs.py scores a split (one encoding, the bank's GMM p(clean)):

* ``tiny_demo``: the tests' tiny demo (80 training images x 5 captions, 40% noise) with the tests'
  briefly pretrained npc-micro base (1 epoch of 120 pretraining images), generated here;
* ``tiny_demo_longer_base``: the same, the base pretrained for :data:`LONGER_EPOCHS` epochs;
* ``demo``: the demo at its real size (``--demo_root``, 2,000 images x 5 captions, 40% noise) with its
  real npc-micro base (from ``--pretrained_dir``, built by the demo);
* ``textures_<model>``: ``--textures`` images of random noise, one caption of random words each, with
  each of those two models (a model cannot see these: it must fire);
* ``random_init``: the demo at its real size with a randomly initialized npc-micro.

Writes bench/results/self_check/calibration.json: every case's numbers and verdict, the thresholds,
the command, the commit, the versions and the thread count.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LONGER_EPOCHS = 30  # the tiny base pretrained longer (the tests' is 1 epoch)
OUT = REPO / "bench" / "results" / "self_check" / "calibration.json"


def make_textures(folder: Path, n: int, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    words = random.Random(seed)
    vocab = ["stone", "river", "glass", "orange", "quiet", "seven", "paper", "window", "lamp", "cloud", "green", "metal",
             "small", "old", "dog", "tree", "bread", "north", "soft", "bridge", "yellow", "chair", "wave", "salt"]
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "images" / f"t{i}.png")
        rows.append(f"images/t{i}.png\t{' '.join(words.choice(vocab) for _ in range(6))}")
    path = folder / "train.csv"
    path.write_text("filepath\ttitle\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def score(data, model_name: str, base_path, seed_init: bool = False) -> dict:
    import numpy as np
    import torch

    from npc.evaluation import encode_split
    from npc.model import RANDOM_INIT_SEED, create_model, logit_scale
    from npc.noise_report import score_pairs
    from npc.self_check import separability
    from npc.sources import source_for

    model, preprocess, tokenizer = create_model(model_name, "demo-base" if base_path else "none",
                                                demo_base_path=base_path, init_seed=RANDOM_INIT_SEED)
    model.eval()
    split, mask = source_for(data).load_train(log=lambda *_: None)
    img, txt = encode_split(model, split, preprocess, tokenizer, batch_size=256, progress=False)
    s = score_pairs(img, txt, split.caption_image, scale=logit_scale(model).item(), bank_batch_size=128, bank_seed=99,
                    osa_shift=0.0)
    out = separability(img, txt, split.caption_image, s.p_clean, s.gmm)
    if mask is not None:
        from npc.detection import weight_auc

        out["p_clean_auc"] = weight_auc(s.p_clean, np.asarray(mask, dtype=bool))
    out["pairs"] = len(split)
    out["threads"] = torch.get_num_threads()
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo_root", required=True, help="the demo at its real size (its 0.4 noise is written there)")
    p.add_argument("--pretrained_dir", required=True, help="holding the demo's npc-micro base for --demo_root")
    p.add_argument("--textures", type=int, default=250)
    p.add_argument("--only", default="", help="comma-separated cases (default: all)")
    a = p.parse_args(argv)
    only = [c for c in a.only.split(",") if c]
    import open_clip
    import torch

    from npc.config import DataConfig
    from npc.demo import demo_base_path, ensure_demo_base
    from npc.synthetic import generate_demo_dataset

    model = "npc-micro"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny_root, tiny_pre = tmp / "demo", tmp / "pretrained"
        generate_demo_dataset(tiny_root, seed=0, progress=False, n_pretrain=120, n_train=80, n_dev=16, n_test=20)
        tiny_base = ensure_demo_base(tiny_root, model, tiny_pre, progress=False, log=lambda *_: None,
                                     recipe=dict(epochs=1, batch_size=32, warmup=2))
        t0 = time.perf_counter()
        longer = ensure_demo_base(tiny_root, model, tmp / "pretrained_longer", progress=False, log=lambda *_: None,
                                  recipe=dict(epochs=LONGER_EPOCHS, batch_size=32, warmup=2))
        results["tiny_base_longer_build_s"] = round(time.perf_counter() - t0, 1)
        real_base = demo_base_path(Path(a.pretrained_dir), model, a.demo_root)
        textures = DataConfig(dataset="csv", train_data=str(make_textures(tmp / "tex", a.textures)), noise_ratio=0)
        cases = {"tiny_demo": (DataConfig(dataset="demo", dataset_root=str(tiny_root), noise_ratio=0.4), tiny_base),
                 "tiny_demo_longer_base": (DataConfig(dataset="demo", dataset_root=str(tiny_root), noise_ratio=0.4),
                                           longer),
                 "demo": (DataConfig(dataset="demo", dataset_root=a.demo_root, noise_ratio=0.4), real_base),
                 "textures_tiny_base": (textures, tiny_base), "textures_demo_base": (textures, real_base),
                 "textures_longer_base": (textures, longer),
                 "random_init": (DataConfig(dataset="demo", dataset_root=a.demo_root, noise_ratio=0.4), None)}
        for name, (data, base) in cases.items():
            if only and name not in only:
                continue
            results[name] = score(data, model, base)
            r = results[name]
            print(f"{name}: can_see {r['can_see']} own_auc {r['own_caption_auc']:.3f}"
                  f" i2t {r['i2t_r1']:.4f} ({r['i2t_hits']}/{r['images']}) "
                  f"t2i {r['t2i_r1']:.4f} undecided {r.get('undecided_fraction')} "
                  f"gap {r.get('component_gap')} auc {r.get('p_clean_auc')}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    doc = {"command": "OMP_NUM_THREADS=1 python bench/self_check_calibration.py --demo_root DIR --pretrained_dir DIR "
                      f"--textures {a.textures}",
           "model": model, "cases": results, "git_commit": commit, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                        "python": platform.python_version()}}
    from npc.io import atomic_write_json

    atomic_write_json(OUT, doc)
    return doc


if __name__ == "__main__":
    main()
