"""Render docs/demo_example.png: a few demo-dataset images, enlarged, each beside its captions.

    python docs/make_demo_example.py [--root DIR] [--out docs/demo_example.png]

Without --root a small dataset is generated in a temporary folder (a second or two); with --root the
dataset there is reused if it matches, else generated there. Train images show the COCO-like caption
style; one pretrain image is added below them to show the "web" caption style of the pretrain split.
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path
from typing import List, Tuple


from PIL import Image, ImageDraw, ImageFont

from npc.io import atomic_write_bytes
from npc.synthetic import ANN_SUBDIR, IMAGE_PATTERN, ensure_demo_dataset

SCALE = 4  # 64 px -> 256 px, nearest neighbour so the real pixels stay visible
PAD = 12
MIN_TEXT_W = 420
BG = (255, 255, 255)
INK = (20, 20, 20)
DIM = (110, 110, 110)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 embeds a scalable font
    except TypeError:
        return ImageFont.load_default()


def _rows(root: Path, split: str, count: int, num_anns: int) -> List[Tuple[int, List[str]]]:
    ann = root / ANN_SUBDIR
    caps = (ann / f"{split}_caps.txt").read_text(encoding="utf-8").splitlines()
    ids = [int(x) for x in (ann / f"{split}_ids.txt").read_text(encoding="utf-8").split()]
    per_caption = split in ("dev", "test")
    image_ids = ids[::num_anns] if per_caption else ids
    return [(image_ids[k], caps[k * num_anns:(k + 1) * num_anns]) for k in range(min(count, len(image_ids)))]


def render(root: Path, n_train: int, n_pretrain: int, num_anns: int, image_size: int) -> Image.Image:
    font, title_font = _font(15), _font(17)
    side = image_size * SCALE
    line_h = 21
    row_h = max(side, line_h * (num_anns + 1)) + PAD
    sections = [("train split (COCO-like captions)", "train", n_train),
                ("pretrain split (web alt-text-like captions)", "pretrain", n_pretrain)]
    sections = [s for s in sections if s[2] > 0]
    rows = [(title, _rows(root, split, n, num_anns)) for title, split, n in sections]
    height = PAD + sum(28 + row_h * len(r) for _, r in rows)
    # As wide as the longest caption needs: long 4-object captions must not run off the edge.
    text_w = max([MIN_TEXT_W] + [int(font.getlength(f"{num_anns}. {c}")) + 1
                                 for _, items in rows for _, caps in items for c in caps])
    sheet = Image.new("RGB", (PAD * 3 + side + text_w, height), BG)
    draw = ImageDraw.Draw(sheet)
    y = PAD
    for title, items in rows:
        draw.text((PAD, y), title, font=title_font, fill=INK)
        y += 28
        for image_id, caps in items:
            with Image.open(root / "images" / (IMAGE_PATTERN % image_id)) as im:
                big = im.convert("RGB").resize((side, side), Image.Resampling.NEAREST)
            sheet.paste(big, (PAD, y))
            x = PAD * 2 + side
            draw.text((x, y), f"image id {image_id}", font=font, fill=DIM)
            for i, cap in enumerate(caps):
                draw.text((x, y + line_h * (i + 1)), f"{i + 1}. {cap}", font=font, fill=INK)
            y += row_h
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="demo dataset folder (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo_example.png")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-train", type=int, default=4, help="train images to show")
    ap.add_argument("--num-pretrain", type=int, default=1, help="pretrain images to show")
    args = ap.parse_args()

    # Per-image seeding makes these the same scenes as the first images of the full-size dataset.
    sizes = dict(seed=args.seed, n_pretrain=max(args.num_pretrain, 1), n_train=max(args.num_train, 1), n_dev=1,
                 n_test=1, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root if args.root is not None else Path(tmp) / "demo"
        info = ensure_demo_dataset(root, **sizes) if args.root is None else _reuse_or_make(root, sizes)
        sheet = render(root, args.num_train, args.num_pretrain, info["num_anns"], info["image_size"])
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {len(buf.getvalue()) // 1024} KB)")


def _reuse_or_make(root: Path, sizes: dict) -> dict:
    """With --root, show any complete demo dataset already there instead of shrinking it to a few images."""
    import json

    info_path = root / "demo_info.json"
    if info_path.exists():
        with open(info_path, encoding="utf-8") as f:
            return json.load(f)
    return ensure_demo_dataset(root, **sizes)


if __name__ == "__main__":
    main()
