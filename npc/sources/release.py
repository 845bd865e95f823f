"""The reference release's layout (the demo's too): its datasets, its reader and its source.

The release holds a dataset in one folder (docs/method.md section 1)::

    <root>/images/                        every image of the dataset
    <root>/annotations/scan_split/        <split>_caps.txt, <split>_ids.txt, <r>_noise_train_caps.txt
    <root>/annotations/memory_bank/       <r>_mbank_img_idx.npy, <r>_mbank_txt_idx.npy

Captions come in consecutive runs of ``num_anns`` per image. Train ids are listed once per image,
dev/test ids once per caption. A pair's key is its caption's line in ``<split>_caps.txt``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from npc.data import Split, read_lines
from npc.errors import DataError
from npc.noise import ensure_noisy_split
from npc.sources import register
from npc.sources.base import Dataset, DataSource

log = logging.getLogger("npc")


def _coco_name(image_id: str) -> str:
    return f"COCO_2014_{int(image_id):012d}.jpg"


def _cc_name(image_id: str) -> str:
    return f"{image_id}.jpg"


# The datasets of the release's layout; MSCOCO and Flickr30K are also held as Karpathy's split files.
DEMO = Dataset("demo", "the embedded generated dataset (MSCOCO layout)", 5, "dataset/demo", generated=True,
               ships_base=True, cuda_precision="amp_bf16", default_flags="demo")
COCO = Dataset("coco", "MSCOCO (SCAN split)", 5, "dataset/MSCOCO", folds_1k=True)
F30K = Dataset("f30k", "Flickr30K (SCAN split)", 5, "dataset/Flickr30K")
CC = Dataset("cc", "Conceptual Captions 120K (real noise)", 1, "dataset/CC120K")
# id -> image file name; None: looked up in annotations/scan_split/image_name.txt (Flickr30K). The demo is
# generated in MSCOCO's layout and naming, so it exercises the MSCOCO code path.
IMAGE_NAMES: Dict[str, Optional[Callable[[str], str]]] = {"demo": _coco_name, "coco": _coco_name, "f30k": None,
                                                            "cc": _cc_name}


def annotation_dir(root) -> Path:
    return Path(root) / "annotations" / "scan_split"


def memory_bank_dir(root) -> Path:
    return Path(root) / "annotations" / "memory_bank"


def image_file_names(dataset: str, root, image_ids: Sequence[str]) -> List[str]:
    naming = IMAGE_NAMES[dataset]
    if naming is not None:
        try:
            return [naming(i) for i in image_ids]
        except ValueError as e:
            raise DataError(f"{dataset}: image ids must be integers ({e})") from None
    table_path = annotation_dir(root) / "image_name.txt"
    table = read_lines(table_path)
    names = []
    for i in image_ids:
        k = int(i)
        if not 0 <= k < len(table):
            raise DataError(f"image id {k} has no line in {table_path} ({len(table)} lines)")
        names.append(table[k].strip())
    return names


def load_split(root, dataset: str, split: str, num_anns: Optional[int] = None, *,
               caps_file=None, check_images: bool = True, warn_empty: bool = True) -> Split:
    """Read ``<split>_caps.txt`` (or ``caps_file``) and ``<split>_ids.txt`` and check they agree.

    Train ids are one line per image (repeated ``num_anns`` times to align with captions); every
    other split has one id line per caption, in runs of ``num_anns`` equal ids. Empty caption lines
    are kept (they are pairs too) with a warning naming them.
    """
    if dataset not in IMAGE_NAMES:
        raise DataError(f"--dataset {dataset} is not held in the release's layout (it holds {', '.join(IMAGE_NAMES)})")
    num_anns = num_anns or next(d.num_anns for d in ReleaseLayout.definitions if d.name == dataset)
    ann = annotation_dir(root)
    caps_path = Path(caps_file) if caps_file else ann / f"{split}_caps.txt"
    ids_path = ann / f"{split}_ids.txt"
    captions = read_lines(caps_path)
    empty = [k + 1 for k, c in enumerate(captions) if not c.strip()]
    if empty and warn_empty:
        log.warning(f"warning: {caps_path}: {len(empty)} empty caption line(s): line "
                    f"{', '.join(map(str, empty[:5]))}{', ...' if len(empty) > 5 else ''}")
    ids = [line.strip() for line in read_lines(ids_path)]
    if split in ("train", "pretrain"):
        if len(captions) != len(ids) * num_anns:
            raise DataError(f"{caps_path} has {len(captions)} captions but {ids_path} lists {len(ids)} images "
                            f"x num_anns {num_anns} = {len(ids) * num_anns} (train ids are one line per image)")
        image_ids = ids
    else:
        if len(captions) != len(ids):
            raise DataError(f"{caps_path} has {len(captions)} captions but {ids_path} has {len(ids)} ids "
                            f"({split} ids are one line per caption)")
        if len(ids) % num_anns:
            raise DataError(f"{ids_path}: {len(ids)} lines is not a multiple of num_anns {num_anns}")
        blocks = np.asarray(ids, dtype=object).reshape(-1, num_anns)
        bad = np.nonzero((blocks != blocks[:, :1]).any(axis=1))[0]
        if len(bad):
            line = bad[0] * num_anns + 1
            raise DataError(f"{ids_path}: ids must come in runs of num_anns={num_anns} equal ids; "
                            f"the run starting at line {line} is {list(blocks[bad[0]])}")
        image_ids = list(blocks[:, 0])
    image_dir = Path(root) / "images"
    paths = [image_dir / n for n in image_file_names(dataset, root, image_ids)]
    if check_images:
        check_image_files(paths)
    caption_image = np.repeat(np.arange(len(image_ids), dtype=np.int64), num_anns)
    return Split(split, captions, image_ids, paths, caption_image, num_anns, caps_path)


def check_image_files(paths: Sequence[Path], show: int = 5) -> None:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        listed = "\n  ".join(str(p) for p in missing[:show])
        raise DataError(f"{len(missing)} of {len(paths)} image files are missing, e.g.:\n  {listed}")


def load_train_split(root, dataset: str, num_anns: int, noise_ratio, *, noise_seed: int = 99,
                     noise_mode: str = "caption", log=print, check_images: bool = True, force: bool = False):
    """The training split with noisy captions (built and cached on first use) and its noise mask.

    ``train_caps.txt`` is checked against ``train_ids.txt`` first: a bad file is blamed as itself,
    and no noisy split is built from it.
    """
    load_split(root, dataset, "train", num_anns, check_images=False)
    caps_path, mask = ensure_noisy_split(annotation_dir(root), noise_ratio, seed=noise_seed, mode=noise_mode,
                                         num_anns=num_anns, log=log, force=force)
    split = load_split(root, dataset, "train", num_anns, caps_file=caps_path, check_images=check_images,
                       warn_empty=False)
    return split, mask


@register
class ReleaseLayout(DataSource):
    format = "release"
    definitions = (DEMO, COCO, F30K, CC)
    key_name = "line"  # the caption's line in <split>_caps.txt
    key_meaning = "the caption's line in annotations/scan_split/<split>_caps.txt (the clean captions file)"
    expected_images = {"coco": (113_287, 5_000, 5_000), "f30k": (29_000, 1_000, 1_000),  # f30k: as in common use
                       "cc": (118_851, 1_000, 1_000)}

    @classmethod
    def found(cls, data) -> bool:
        return annotation_dir(data.dataset_root).is_dir()

    def expected_files(self) -> str:
        return f"the reference release's layout ({annotation_dir(self.data.dataset_root)}/)"

    def describe(self) -> str:
        return f"the reference release's layout at {self.data.dataset_root} (annotations/scan_split/)"

    def _root(self) -> Path:
        root = Path(self.data.dataset_root)
        if not root.is_dir():
            raise DataError(f"--dataset_root {root}: no such folder (the {self.data.dataset} dataset's images/ and "
                            f"annotations/scan_split/, or Karpathy's split file, are expected there; docs/data.md)")
        return root

    def inputs(self, split: str) -> List[Path]:
        ann = annotation_dir(self.data.dataset_root)
        return [ann / f"{split}_caps.txt", ann / f"{split}_ids.txt", ann / "image_name.txt"]

    def parse_split(self, split: str) -> Split:
        return load_split(self._root(), self.data.dataset, split, self.data.num_anns, check_images=False)

    def check_image_files(self, split: Split, show: int = 5) -> None:
        check_image_files(split.image_paths, show)

    def noisy_train(self, log, check_images: bool, force: bool = False):
        d = self.data
        split = self.read_split("train", check_images)  # checked against train_ids.txt first: a bad file is blamed
        caps_path, mask = ensure_noisy_split(annotation_dir(self._root()), d.noise_ratio, seed=d.noise_seed,
                                             mode=d.noise_mode, num_anns=self.num_anns(), log=log, force=force)
        captions = read_lines(caps_path)
        if len(captions) != len(split):
            raise DataError(f"{caps_path} has {len(captions)} captions, {split.caps_file} {len(split)}: rebuild it "
                            f"with construct_noise.py --force")
        split.captions, split.caps_file = captions, caps_path
        return split, mask

    def num_anns(self) -> int:
        return self.data.num_anns or self.dataset.num_anns

    def build_noise(self, log, force: bool = False):
        # the noise needs train_caps.txt only (the release's construct_noise.py reads nothing else)
        d = self.data
        return ensure_noisy_split(annotation_dir(self._root()), d.noise_ratio, seed=d.noise_seed, mode=d.noise_mode,
                                  num_anns=self.num_anns(), log=log, force=force)

    def listed_at(self, split: Split, image_index: int) -> str:
        ids = annotation_dir(self.data.dataset_root) / f"{split.name}_ids.txt"
        k, i = split.num_anns, image_index
        at = f"{ids}, line {i + 1}" if split.name == "train" else f"{ids}, lines {i * k + 1}-{i * k + k}"
        if IMAGE_NAMES[self.data.dataset] is None:  # Flickr30K: the id is a line of image_name.txt
            at += f"; {annotation_dir(self.data.dataset_root) / 'image_name.txt'}, line {int(split.image_ids[i]) + 1}"
        return at

    def missing_images_advice(self) -> str:
        images = Path(self.data.dataset_root) / "images"
        if IMAGE_NAMES[self.data.dataset] is _coco_name:
            return (f"missing images: every image goes in {images}/ as COCO_2014_<12-digit id>.jpg "
                    f"(dataset/MSCOCO_rename.py renames the 2014 files; or keep the original names and folders with "
                    f"Karpathy's dataset_coco.json instead, docs/data.md)")
        if IMAGE_NAMES[self.data.dataset] is None:
            return f"missing images: every image goes in {images}/ under the name image_name.txt gives its id"
        return f"missing images: every image goes in {images}/ as <id>.jpg"

    def write_cleaned(self, split: Split, keep, out) -> List[Path]:
        """A new folder ``out`` holding ``train_caps.txt`` (the training captions kept, in order) and
        ``train_ids.txt`` (the image id of each, one a line: images keep different numbers of captions)."""
        from npc.io import atomic_write_lines

        out = self.cleaned_target(out)
        if out.resolve() == annotation_dir(self.data.dataset_root).resolve():
            raise DataError(f"--write_cleaned {out} is the data's own folder: name a new folder")
        out.mkdir(parents=True, exist_ok=True)
        idx = np.nonzero(np.asarray(keep, dtype=bool))[0]
        atomic_write_lines(out / "train_caps.txt", [split.captions[i] for i in idx])
        atomic_write_lines(out / "train_ids.txt", [split.image_ids[split.caption_image[i]] for i in idx])
        return [out / "train_caps.txt", out / "train_ids.txt"]

    def bank_dir(self, model_key) -> Path:
        return memory_bank_dir(self.data.dataset_root)
