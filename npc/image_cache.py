"""A preprocessed image cache: CLIP's resize + center crop done once, stored as uint8 in a memmap.

CLIP's preprocessing has no augmentation, so every epoch decodes and resizes the same JPEGs again;
with NPC a batch also needs its memory-bank images. The cache keeps the resized, cropped RGB pixels
(``uint8``, ``(n_images, H, W, 3)``) in one memory-mapped file; a batch is a fancy-indexed read, and
conversion to float and CLIP's normalization happen on the training device (``npc.model.encode``
accepts uint8 NHWC batches).

The cache is validated against its source: a fingerprint of the image paths, their sizes and
modification times, the crop size and the transform. Any difference rebuilds it (atomically: the
array and its metadata are written to temporary files and renamed, metadata last).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from npc.io import atomic_write_json
from npc.locks import file_lock
from npc.model import normalize_uint8  # noqa: F401  (the cache's pixels, normalized on the device)


def pil_part(preprocess):
    """The PIL-level steps of an open_clip transform (everything before ToTensor/Normalize)."""
    steps = []
    for t in getattr(preprocess, "transforms", [preprocess]):
        if type(t).__name__ in ("ToTensor", "MaybeToTensor", "Normalize"):
            break
        steps.append(t)
    from torchvision.transforms import Compose

    return Compose(steps)


def normalization(preprocess):
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            return tuple(float(x) for x in t.mean), tuple(float(x) for x in t.std)
    raise ValueError("the preprocessing transform has no Normalize step")


def fingerprint(paths: Sequence[Path], pil_transform) -> str:
    h = hashlib.sha256(repr(pil_transform).encode())
    from npc.images import image_stat

    for p in paths:
        st = image_stat(p)  # a file, or a member of a tar shard
        if st is None:
            raise FileNotFoundError(f"image not found: {p}")
        h.update(f"{p}\0{st[0]}\0{st[1]}\n".encode())
    return h.hexdigest()


class _Decode(Dataset):
    """Image ``i`` after the PIL-level steps, and ``""``; an unreadable one: zeros of ``shape`` and why."""

    def __init__(self, paths, pil_transform, shape=None):
        self.paths, self.t, self.shape = list(paths), pil_transform, shape

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from npc.csv_format import DataError
        from npc.images import load_image  # the one decoding rule, with the PIL-level steps only

        try:
            pixels = load_image(self.paths[i], lambda img: torch.from_numpy(np.asarray(self.t(img), dtype=np.uint8).copy()))
            return pixels, ""
        except DataError as e:
            if self.shape is None:
                raise
            return torch.zeros(self.shape, dtype=torch.uint8), str(e)


class ImageCache:
    """``cache[indices]`` -> uint8 tensor (len, H, W, 3) of preprocessed images of one split."""

    def __init__(self, folder, name: str, paths: Sequence[Path], preprocess, *, num_workers: int = 2,
                 progress: bool = True, log=print, split=None):
        self.split = split  # names the split and caption lines of an unreadable image
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.array_path = self.folder / f"{name}.u8"
        self.meta_path = self.folder / f"{name}.json"
        self.pil = pil_part(preprocess)
        self.mean, self.std = normalization(preprocess)
        fp = fingerprint(paths, self.pil)
        meta = self._read_meta()
        if self._stale(meta, fp):  # one builder at a time; a second one waits, then finds it built
            with file_lock(self.folder / f".{name}.lock", f"the image cache {self.array_path}", wait=True, log=log):
                meta = self._read_meta()
                if self._stale(meta, fp):
                    why = "none found" if meta is None else "its source changed"
                    log(f"image cache: building {self.array_path} for {len(paths)} images ({why})")
                    meta = self._build(paths, fp, num_workers, progress)
        else:
            log(f"image cache: reusing {self.array_path}")
        self.shape = tuple(meta["shape"])
        self.array = np.memmap(self.array_path, dtype=np.uint8, mode="r", shape=self.shape)
        self.unreadable = {int(i): why for i, why in meta.get("unreadable", {}).items()}  # image -> why

    def _stale(self, meta, fp: str) -> bool:
        return meta is None or meta.get("fingerprint") != fp or not self.array_path.is_file()

    def _read_meta(self):
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _build(self, paths, fp: str, num_workers: int, progress: bool) -> dict:
        """The cache of every image; an unreadable one is recorded (with why) and read as an error (a batch
        that needs it is refused naming it, or with --skip_unreadable_images left out: npc.loaders)."""
        from npc.csv_format import DataError

        first = None
        for k in range(len(paths)):  # the size after preprocessing: of the first readable image
            try:
                first = _Decode(paths[k:k + 1], self.pil)[0][0]
                break
            except DataError:
                continue
        if first is None:
            raise DataError(f"image cache: none of the {len(paths)} images can be read, e.g. "
                            f"{_Decode(paths[:1], self.pil, ())[0][1]}")
        shape = (len(paths), *first.shape)
        unreadable = {}
        tmp = self.array_path.with_name(f".{self.array_path.name}.{os.getpid()}.tmp")
        try:
            out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
            loader = DataLoader(_Decode(paths, self.pil, shape[1:]), batch_size=64, num_workers=num_workers)
            pos = 0
            for batch, why in tqdm(loader, desc="image cache", disable=not progress, leave=False):
                unreadable.update({str(pos + k): w for k, w in enumerate(why) if w})
                if batch.shape[1:] != shape[1:]:
                    raise ValueError(f"images of different sizes after preprocessing: {tuple(batch.shape[1:])} "
                                     f"vs {shape[1:]}")
                out[pos:pos + len(batch)] = batch.numpy()
                pos += len(batch)
            out.flush()
            del out
            if self.meta_path.exists():
                self.meta_path.unlink()  # invalidate before replacing the array
            os.replace(tmp, self.array_path)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise
        meta = {"fingerprint": fp, "shape": list(shape), "mean": self.mean, "std": self.std, "n_images": len(paths),
                "unreadable": unreadable}
        atomic_write_json(self.meta_path, meta)
        return meta

    def __len__(self):
        return self.shape[0]

    def __call__(self, indices) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        bad = [int(i) for i in idx if int(i) in self.unreadable]
        if bad:
            from npc.loaders import _UnreadableImage

            where = f" ({self.split.describe_image(bad[0])})" if self.split is not None else ""
            raise _UnreadableImage(f"{self.unreadable[bad[0]]}{where}", bad[0])
        return torch.from_numpy(np.ascontiguousarray(self.array[idx]))
