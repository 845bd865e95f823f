"""A small own-data set made from the demo's images: a folder of images and train/dev/test CSV files.

    python bench/demo_as_csv.py --out mydata_demo            # 600 / 100 / 200 images, 1 to 3 captions each

It is laid out as docs/own_data.md describes a user's data (``images/`` beside tab-separated CSV files,
paths relative to them, rows of an image not adjacent), so that the own-data path can be measured end to
end on CPU: images of the demo's train, dev and test splits (the demo is generated first if missing), each
with 1, 2 or 3 of its captions. Nothing of the demo's pretrain split is used: the demo's base model, which
``--pretrained demo-base`` starts from, was pretrained on it.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_split(dataset_root: Path, out: Path, split: str, n_images: int, name: str) -> int:
    from npc.data import load_split
    from npc.io import atomic_write_text

    s = load_split(dataset_root, "demo", split)
    if n_images > s.num_images:
        raise SystemExit(f"error: the demo's {split} split has {s.num_images} images; asked for {n_images}")
    rows = []
    for i in range(n_images):
        target = Path("images") / f"{name} {i:04d}.jpg"  # a name with a space, as users' files often have
        shutil.copyfile(s.image_paths[i], out / target)
        captions = [c for c, k in zip(s.captions, s.caption_image) if k == i][:1 + i % 3]
        rows += [(target.as_posix(), c) for c in captions]
    rows = rows[1::2] + rows[::2]  # an image's rows are not adjacent
    atomic_write_text(out / f"{name}.csv", "filepath\ttitle\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
    return len(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write images/ and train/dev/test.csv into")
    p.add_argument("--train", type=int, default=600, help="training images (from the demo's train split)")
    p.add_argument("--dev", type=int, default=100, help="dev images (from the demo's dev split)")
    p.add_argument("--test", type=int, default=200, help="test images (from the demo's test split)")
    args = p.parse_args(argv)
    from npc.demo import ensure_demo_data
    from npc.params import DATASET_ROOTS

    root = REPO / DATASET_ROOTS["demo"]
    ensure_demo_data(root, progress=False)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", args.train), ("dev", args.dev), ("test", args.test)):
        pairs = write_split(root, args.out, split, n, split)
        print(f"{args.out / (split + '.csv')}: {n} images, {pairs} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
