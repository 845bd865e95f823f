"""The contract of a data source (see :mod:`npc.sources`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Dict, Optional, Tuple

import numpy as np

from npc.csv_format import DataError
from npc.data import CSV_SPLIT_FLAGS, Split, readable_split
from npc.io import atomic_write_lines
from npc.locks import file_lock
from npc.noise import TRAIN_CAPS, ensure_noisy_split, read_caption_lines


class DataSource:
    """One dataset as one on-disk format holds it. Subclasses set ``format`` and ``datasets`` and implement
    :meth:`read_split`, :meth:`noisy_train`, :meth:`bank_dir` and :meth:`describe`."""

    format: ClassVar[str]
    datasets: ClassVar[Tuple[str, ...]]     # the --dataset values this format serves
    key_name: ClassVar[str] = "line"        # what a pair's own key is (a file line, a sentence id, ...)
    may_share_images: ClassVar[bool] = False  # its splits are files a user made: dev/test may hold training images
    reads_split_files: ClassVar[bool] = False  # its splits are --train_data, --dev_data, --test_data, not a folder

    # Images per split (train, dev, test) of the full datasets this format holds, for check_data.py.
    expected_images: ClassVar[Dict[str, Tuple[int, int, int]]] = {}

    def __init__(self, data):
        self.data = data

    @classmethod
    def found(cls, data) -> bool:
        """Whether this format's files are where ``data`` points (for ``--data_format auto``)."""
        return True

    # -- to implement
    def expected_files(self) -> str:
        """What this format's files are, for a message when none is found."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the log: the format and where it was found."""
        raise NotImplementedError

    def read_split(self, split: str, check_images: bool) -> Split:
        """Split ``split`` (train: its clean captions) with each pair's key; ``check_images``: the files exist."""
        raise NotImplementedError

    def noisy_train(self, log: Callable[[str], None], check_images: bool) -> Tuple[Split, np.ndarray]:
        """The training split with the captions of ``data.noise_ratio`` (built and cached on first use) and the
        noise mask (True = the caption differs from the clean one)."""
        raise NotImplementedError

    def bank_dir(self, model_key: Callable[[], str]) -> Path:
        """The folder of the training split's memory bank (``model_key()``: the model and its initial weights, for
        formats that keep one bank per model)."""
        raise NotImplementedError

    # -- shared
    def where(self, split: str) -> str:
        """The flag that says where ``split`` is read from, for messages."""
        return f"--dataset_root {self.data.dataset_root}"

    def load_split(self, split: str, check_images: bool = True) -> Split:
        """Split ``split``. With ``check_images``, every image of an evaluation split (dev, test) is decoded: an
        unreadable one is an error naming it, or with ``--skip_unreadable_images`` left out with its captions."""
        decode = check_images and split not in ("train", "pretrain")  # decoding finds missing images too
        out = self.read_split(split, check_images=check_images and not decode)
        if decode:
            out = readable_split(out, skip=self.data.skip_unreadable_images)[0]
        return out

    def load_train(self, log: Callable[[str], None] = print, check_images: bool = True):
        """The noisy training split and its noise mask (None where the noise is not known: real noise)."""
        split, mask = self.noisy_train(log, check_images)
        return split, mask if self.ground_truth_known() else None

    def ground_truth_known(self) -> bool:
        """Whether the training split's noise mask is the truth: noise this project made, or the generated demo's
        clean data. At ``--noise_ratio 0`` on real data the noise is the data's own: not measurable."""
        return self.data.dataset == "demo" or float(self.data.noise_ratio) > 0

    def listed_at(self, split: Split, image_index: int) -> str:
        """Where the image ``image_index`` of ``split`` is listed (for a missing or unreadable image)."""
        first = int(np.searchsorted(split.caption_image, image_index))
        return f"{split.source_file or split.caps_file}, {split.keys[first]}"

    def missing_images_advice(self) -> str:
        """What to do about missing images, for this format."""
        raise NotImplementedError

    def fingerprint_flags(self, splits) -> Dict[str, str]:
        """The flag that names each split, for a resume refused because a split changed."""
        return {s: self.where(s) for s in splits}


class SplitFiles(DataSource):
    """A format whose splits are files the user names with --train_data, --dev_data and --test_data (no
    --dataset_root): files a user made, so dev and test may hold training images. Subclasses set ``label``
    (what the files are) and ``file_hint`` (how a split's flag names them)."""

    may_share_images = True
    reads_split_files = True
    label: ClassVar[str]
    file_hint: ClassVar[str]

    def describe(self) -> str:
        files = ", ".join(f"{self.where(s)} {f}" for s, f in self.data.split_files().items() if f)
        return f"{self.label} ({files})"

    def where(self, split: str) -> str:
        return CSV_SPLIT_FLAGS.get(split, f"--{split}_data")

    def split_spec(self, split: str) -> str:
        """What the split's flag names; a split without it is an error naming the flag."""
        f = self.data.split_files().get(split)
        if not f:
            raise DataError(f"--dataset {self.data.dataset}: the {split} split needs {self.where(split)} "
                            f"{self.file_hint}")
        return str(f)


def noisy_beside(data, split: Split, clean: Path, what, log: Callable[[str], None],
                 rebuild_command: Optional[str] = None) -> Tuple[Split, np.ndarray]:
    """The noise of a format whose captions are no caption file of its own (CSV, Karpathy's JSON, shards): the
    training ``split``'s captions, in split order, written to ``clean`` (``<prefix>train_caps.txt``, which the
    noise protocol shuffles) and the noisy split beside it, under one lock, so that a process never reads
    another's captions; ``split`` takes the noisy captions. ``what``: the data, for messages."""
    k = check_num_anns_uniform(split, what, data.noise_mode)
    folder, prefix = clean.parent, clean.name[:-len(TRAIN_CAPS)]
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / f".{clean.name}.lock", f"the captions of {what}", wait=True, log=log):
        if not clean.is_file() or read_caption_lines(clean) != split.captions:
            atomic_write_lines(clean, split.captions)
        caps_path, mask = ensure_noisy_split(folder, data.noise_ratio, seed=data.noise_seed, mode=data.noise_mode,
                                             num_anns=k or 1, log=log, prefix=prefix, rebuild_command=rebuild_command)
        split.captions, split.caps_file = read_caption_lines(caps_path), caps_path
    return split, mask


def check_num_anns_uniform(split: Split, source: Path, noise_mode: str) -> Optional[int]:
    """Captions per image when every image has the same number; ``--noise_mode image`` requires it."""
    k = split.uniform_num_anns
    if noise_mode == "image" and not k:
        raise DataError(f"{source}: --noise_mode image moves whole caption blocks between images and needs the same "
                        f"number of captions for every image; this data has from "
                        f"{np.bincount(split.caption_image).min()} to {split.num_anns}")
    return k
