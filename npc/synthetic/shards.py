"""Webdataset tar shards in img2dataset's layout, and the same pairs as a CSV set, for the tests, the docs
and bench/shard_loader.py.

A shard holds, per sample, ``<key>.jpg`` (or another image extension), ``<key>.json`` (img2dataset's fields
``key``, ``caption``, ``status``, ``url``, ``width``, ``height``) and ``<key>.txt`` (the caption), in that
member order (webdataset's writer sorts a sample's members). Keys are img2dataset's: the shard's number
(5 digits) then the sample's number in its shard (4 digits). Tar headers carry no time or owner, so the same
samples give the same bytes.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

Sample = Tuple[bytes, str, str]  # (image bytes, image extension, caption)


def _member(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0
    tf.addfile(info, io.BytesIO(data))


def write_shard(path, samples: Sequence[Sample], shard_number: int) -> List[str]:
    """One shard of ``samples`` at ``path`` (written atomically); returns the samples' keys."""
    from PIL import Image

    from npc.io import atomic_open

    keys = []
    with atomic_open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for k, (image, ext, caption) in enumerate(samples):
            key = f"{shard_number:05d}{k:04d}"
            with Image.open(io.BytesIO(image)) as img:
                width, height = img.size
            meta = {"key": key, "caption": caption, "status": "success", "url": f"https://example.invalid/{key}.{ext}",
                    "width": width, "height": height}
            _member(tf, f"{key}.{ext}", image)
            _member(tf, f"{key}.json", json.dumps(meta).encode("utf-8"))
            _member(tf, f"{key}.txt", caption.encode("utf-8"))
            keys.append(key)
    return keys


def write_shards(folder, samples: Sequence[Sample], names: Sequence[str]) -> List[Path]:
    """``samples`` in order over shards ``names`` (files in ``folder``), as evenly as they go."""
    folder = Path(folder)
    bounds = np.linspace(0, len(samples), len(names) + 1).round().astype(int)
    paths = []
    for n, name in enumerate(names):
        write_shard(folder / name, samples[bounds[n]:bounds[n + 1]], n)
        paths.append(folder / name)
    return paths


def write_csv_set(folder, split: str, samples: Sequence[Sample]) -> Path:
    """The same pairs as ``<folder>/<split>.csv`` and one image file each in ``<folder>/images/`` (the same
    bytes as the shards' members)."""
    from npc.io import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    rows = []
    for k, (image, ext, caption) in enumerate(samples):
        name = f"images/{split}_{k:06d}.{ext}"
        atomic_write_bytes(folder / name, image)
        rows.append(f"{name}\t{caption}\n")
    path = folder / f"{split}.csv"
    atomic_write_text(path, "filepath\ttitle\n" + "".join(rows))
    return path


def demo_samples(demo_root, split: str) -> List[Sample]:
    """One pair per image of the demo's ``split`` (the release's layout): image ``i`` with its caption
    ``i mod num_anns``, so that the pairs use every caption position."""
    from npc.data import load_split

    s = load_split(demo_root, "demo", split)
    out = []
    for i, path in enumerate(s.image_paths):
        caps = [c for c, k in zip(s.captions, s.caption_image) if k == i]
        out.append((Path(path).read_bytes(), Path(path).suffix[1:].lower(), caps[i % len(caps)]))
    return out


def demo_as_shards(demo_root, out, train_shards: int = 3, csv: bool = True) -> Dict[str, object]:
    """The demo's train, dev and test pairs (:func:`demo_samples`) as shards ``out/{00000..}.tar`` (train, in
    ``train_shards`` shards), ``out/dev.tar``, ``out/test.tar``; with ``csv``, the same pairs as a CSV set in
    ``out/csv/``. Returns the flags' values: ``{"train": spec, "dev": ..., "test": ..., "csv": {split: path}}``."""
    out = Path(out)
    specs: Dict[str, object] = {}
    csv_files = {}
    for split in ("train", "dev", "test"):
        samples = demo_samples(demo_root, split)
        if split == "train":
            names = [f"{n:05d}.tar" for n in range(train_shards)]
            specs[split] = str(out / f"{{00000..{train_shards - 1:05d}}}.tar") if train_shards > 1 else str(out / names[0])
        else:
            names = [f"{split}.tar"]
            specs[split] = str(out / names[0])
        write_shards(out, samples, names)
        if csv:
            csv_files[split] = write_csv_set(out / "csv", split, samples)
    specs["csv"] = csv_files
    return specs


def random_jpeg_samples(n: int, seed: int = 0, size: int = 64) -> List[Sample]:
    """``n`` pairs of JPEGs (``size`` px square: smooth random colours with grain, about the bytes of a photo
    at that size) and a caption naming the sample (for measuring)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        blocks = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(blocks, "RGB").resize((size, size), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
        img = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8), "RGB")
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append((buf.getvalue(), "jpg", f"a photo of pattern {k} in {rng.integers(2, 9)} colours"))
    return out
