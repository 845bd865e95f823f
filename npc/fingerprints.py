"""What a run is made of, by content: fingerprints of its data splits and of its initial weights.

A checkpoint records them (``fingerprints``), and resuming compares them with what the files hold now:
data or weights that changed under the same flags are refused like a changed flag. They also key the
memory bank of a CSV training split, so that two models keep their banks side by side.

* A split's fingerprint covers what the run reads of it: every caption with the name of its image as
  the split lists it (a CSV's path column; relative names do not depend on where the folder lies), in
  the split's order, and the size in bytes of every image file (of a webdataset shard: every image member's
  size and each shard's size). It does not hash the images' bytes:
  a split of 100k images would be read in full at every start. An image replaced by another of the
  very same size goes unnoticed.
* The initial weights' fingerprint is the SHA-256 of the weights file (``--pretrained FILE``, or the
  demo's base), ``none`` for a random initialisation (its seed is fixed), and the open_clip model and
  tag for downloaded weights (open_clip's cache checks those itself).
* The images' fingerprint (:func:`images_fingerprint`) keys the memory bank's record: the files or members and
  their sizes, in split order.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Dict, Optional

from npc.images import TarMember, image_size
from npc.io import cached_file_sha256

def split_fingerprint(split) -> Dict[str, object]:
    """A split's fingerprint (see the module's text) with its size, for messages."""
    h = hashlib.sha256()
    shards = {}
    for name, path in zip(split.image_ids, split.image_paths):
        size = image_size(path)  # a file's, or a tar member's (npc/images.py)
        if size is None:
            size = -1  # a missing image: counted as one (--skip_unreadable_images may leave it out)
        if isinstance(path, TarMember):
            shards.setdefault(path.shard, None)
        h.update(f"{name}\x1f{size}\x1e".encode("utf-8", "surrogatepass"))
    for shard in shards:  # tar shards: each one's size in bytes too
        try:
            size = os.stat(shard).st_size
        except OSError:
            size = -1
        h.update(f"{Path(shard).name}\x1f{size}\x1e".encode("utf-8", "surrogatepass"))
    for image, caption in zip(split.caption_image.tolist(), split.captions):
        h.update(f"{image}\x1f{caption}\x1e".encode("utf-8", "surrogatepass"))
    return {"sha256": h.hexdigest(), "pairs": len(split.captions), "images": split.num_images}


def images_fingerprint(split) -> str:
    """The fingerprint of the images a split's pairs are built on, in split order: each image's file (its folder's
    and its own name) or tar member (shard, member, offset) and its size in bytes. The memory bank records it:
    a bank is features of these images, and two entries' files swapped, or a shard's images replaced, change it
    (an image replaced by another of the very same size and name does not)."""
    h = hashlib.sha256()
    for path in split.image_paths:
        size = image_size(path)
        if isinstance(path, TarMember):
            name = f"{Path(path.shard).name}:{path.name}@{path.offset}"
        else:
            name = f"{Path(path).parent.name}/{Path(path).name}"
        h.update(f"{name}\x1f{-1 if size is None else size}\x1e".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def data_fingerprints(data) -> Dict[str, Dict[str, object]]:
    """The fingerprint of every split the run (:class:`npc.config.DataConfig` ``data``) reads: train (its clean
    captions), dev and the evaluation splits."""
    from npc.sources import source_for

    source = source_for(data)
    names = ["train", "dev", *data.eval_split_names]
    return {s: split_fingerprint(source.load_split(s, check_images=False)) for s in dict.fromkeys(names)}


def demo_base_file(data, model) -> Optional[Path]:
    """The demo's base model a run with ``--pretrained demo-base`` starts from, or None when it is not built."""
    from npc.demo import find_demo_base

    return find_demo_base(data.dataset, data.dataset_root, Path(model.pretrained_dir), model.vision_model)


def weights_fingerprint(pretrained: Optional[str], vision_model: str, weights_file: Optional[Path] = None) -> str:
    """The fingerprint of initial weights ``pretrained`` (``weights_file``: the demo base's file)."""
    from npc.model import open_clip_name

    if pretrained in (None, "", "none"):
        return "none"
    if pretrained == "demo-base":
        return "sha256:" + cached_file_sha256(weights_file) if weights_file else "demo-base (not built)"
    if os.path.isfile(pretrained):
        return "sha256:" + cached_file_sha256(pretrained)
    return f"open_clip:{open_clip_name(vision_model)}:{pretrained}"


def initial_weights_fingerprint(data, model) -> str:
    """The fingerprint of a run's initial weights (:class:`npc.config.ModelConfig` ``model``)."""
    base = demo_base_file(data, model) if model.pretrained == "demo-base" else None
    return weights_fingerprint(model.pretrained, model.vision_model, base)


def bank_key(data, model) -> str:
    """The folder of a CSV training split's memory bank, one per model and initial weights (by content):
    ``<model>_<weights>_<8 hex digits>``, e.g. ``npc-tiny_demo-base_1f0c3a9e``."""
    from npc.model import open_clip_name

    name = open_clip_name(model.vision_model)
    pretrained = str(model.pretrained)
    label = Path(pretrained).stem if os.path.isfile(pretrained) else pretrained
    label = re.sub(r"[^A-Za-z0-9.-]+", "-", label).strip("-.")[:40] or "weights"
    digest = hashlib.sha256(f"{name}\n{initial_weights_fingerprint(data, model)}".encode()).hexdigest()[:8]
    return f"{name}_{label}_{digest}"


def changes(saved: Dict, now: Dict, flags: Dict[str, str]) -> list:
    """What differs between a checkpoint's fingerprints ``saved`` and ``now``, one phrase each (keys of both only)."""
    out = []
    for key, flag in flags.items():
        if key not in saved or key not in now or saved[key] == now[key]:
            continue
        a, b = saved[key], now[key]
        if isinstance(a, dict) and isinstance(b, dict):
            out.append(f"the {key} split ({flag}) changed since the run started: {a.get('pairs')} pairs / "
                       f"{a.get('images')} images then, {b.get('pairs')} / {b.get('images')} now"
                       + (" (same sizes, other content)" if (a.get("pairs"), a.get("images")) ==
                          (b.get("pairs"), b.get("images")) else ""))
        elif str(a).startswith("sha256:") and not str(b).startswith("sha256:"):
            out.append(f"{flag}: the run started from a weights file, and there is no such file now")
        else:
            out.append(f"{flag}: the initial weights changed since the run started ({_short(a)} then, "
                       f"{_short(b)} now)")
    return out


def _short(fingerprint) -> str:
    text = str(fingerprint)
    return text[:19] + "..." if text.startswith("sha256:") else text
