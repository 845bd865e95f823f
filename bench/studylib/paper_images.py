"""Generated JPEG files of MSCOCO's size, for timing the loading and evaluation of paper-size images."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _paper_size_jpeg(path: Path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    field = field.resize((640, 480), Image.Resampling.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-36, 37, (480, 640, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_paper_size_jpegs(folder: Path, n: int, processes: int = 1) -> list:
    """``n`` generated 640x480 JPEGs (smooth colour fields with pixel noise, quality 90, about 155 KiB
    each: close to MSCOCO train2014's mean of about 160 KB); image ``i`` depends on ``i`` only."""
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_paper_size_jpeg, paths, range(n), chunksize=64))
    else:
        for i, p in enumerate(paths):
            _paper_size_jpeg(p, i)
    return paths
