"""The contract of a data source (see :mod:`npc.sources`), its datasets' definitions, and what formats share.

A source class declares the datasets it serves (:class:`Dataset`: a dataset's own properties, read by the
rest of the code instead of comparing names), parses a split (:meth:`DataSource.parse_split`) and says where
its derived files go. Parsed splits are kept per process (:meth:`DataSource.read_split`): every split is
parsed once per run however many parts of the run ask for it, and parsed again when its files change.
"""
from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Dict, Iterable, List, Optional, Tuple

import numpy as np

from npc.data import CSV_SPLIT_FLAGS, Split, readable_split
from npc.errors import DataError
from npc.io import atomic_write_lines, make_dir
from npc.locks import file_lock
from npc.noise import TRAIN_CAPS, ensure_noisy_split, read_caption_lines


@dataclass(frozen=True)
class Dataset:
    """One ``--dataset``: its own properties, declared once by the source class that serves it."""

    name: str
    description: str
    num_anns: int = 5                 # captions per image (0: any number, per image)
    default_root: str = ""            # relative to the repository ("": its splits are given by flags)
    folds_1k: bool = False            # the test split is also reported as the mean of 5 folds of 1K images
    generated: bool = False           # made by this project (the demo): generated on first use, clean captions
    ships_base: bool = False          # a base model is made for it (--pretrained demo-base is its own)
    cuda_precision: str = "fp16"      # the default precision on CUDA (fp16: the release's, whose learning rates
                                      # the real-data defaults are)
    default_flags: str = "real"       # the table of per-dataset defaults it takes (npc.params): real or demo


# ----------------------------------------------------------------------------- parsed splits, once per run

_PARSED: "OrderedDict[tuple, Tuple[tuple, Split]]" = OrderedDict()
_KEEP = 12  # splits kept (a run reads at most train, dev, test and pretrain)
# Fields of a DataConfig that do not change how a split is parsed (data_format: the source's class says it).
_NOT_READ = frozenset({"data_format", "noise_ratio", "noise_mode", "noise_seed", "dev_length", "eval_splits",
                       "skip_unreadable_images", "image_cache", "num_workers"})


def _stamp(paths: Iterable) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(p), None, None))
    return tuple(out)


def forget_parsed() -> None:
    """Drop every kept split (tests that rewrite files within the same second use it)."""
    _PARSED.clear()


class DataSource:
    """One dataset as one on-disk format holds it. Subclasses set ``format`` and ``definitions`` and implement
    :meth:`parse_split`, :meth:`expected_files`, :meth:`describe`, :meth:`bank_dir` and, when their captions are
    no caption file of their own, :meth:`train_caps_path`."""

    format: ClassVar[str]
    definitions: ClassVar[Tuple[Dataset, ...]]   # the datasets this format serves
    datasets: ClassVar[Tuple[str, ...]]          # their names (the --dataset values), from ``definitions``
    key_name: ClassVar[str] = "line"        # what a pair's own key is (a file line, a sentence id, ...): Split.keys
    key_meaning: ClassVar[str] = "the caption's line in the split's captions file"  # for report.json and docs
    may_share_images: ClassVar[bool] = False  # its splits are files a user made: dev/test may hold training images
    reads_split_files: ClassVar[bool] = False  # its splits are --train_data, --dev_data, --test_data, not a folder
    any_file: ClassVar[bool] = False        # it reads any file given (the format of a file no other source claims)

    # Images per split (train, dev, test) of the full datasets this format holds, for check_data.py.
    expected_images: ClassVar[Dict[str, Tuple[int, int, int]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "definitions" in cls.__dict__:
            cls.datasets = tuple(d.name for d in cls.definitions)

    def __init__(self, data):
        self.data = data

    @property
    def dataset(self) -> Dataset:
        """The definition of this source's ``--dataset``."""
        return next(d for d in self.definitions if d.name == self.data.dataset)

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

    def parse_split(self, split: str) -> Split:
        """Split ``split`` (train: its clean captions) with each pair's key, its image files not looked at."""
        raise NotImplementedError

    def inputs(self, split: str) -> List[Path]:
        """The files ``split`` is parsed from: a kept parse is used while they are unchanged."""
        return []

    def train_caps_path(self) -> Path:
        """Where the training captions are written, in split order (``<prefix>train_caps.txt``; the noisy split and
        its mask go beside it), for a format whose captions are no caption file of its own."""
        raise NotImplementedError

    def train_label(self) -> str:
        """The training split's file (or what names it), for messages."""
        files = self.inputs("train")
        return str(files[0]) if files else self.describe()

    def rebuild_command(self) -> Optional[str]:
        """The command that rebuilds the noisy split, for a message (None: the generic advice)."""
        return None

    def bank_dir(self, model_key: Callable[[], str]) -> Path:
        """The folder of the training split's memory bank (``model_key()``: the model and its initial weights, for
        formats that keep one bank per model)."""
        raise NotImplementedError

    def write_cleaned(self, split: Split, keep: np.ndarray, out: Path) -> List[Path]:
        """The training ``split`` (as :meth:`load_train` gives it) with only the pairs ``keep`` (a boolean mask),
        written to ``out`` in this format, for use outside this project (``check_data.py --write_cleaned``; never
        over an input: :meth:`cleaned_target`). Returns the files written."""
        raise DataError(f"--write_cleaned: the {self.format} format has no cleaned-data writer")

    def cleaned_target(self, out, suffix: str = "") -> Path:
        """``out`` as a path to write, refused when it is one of the data's own files (``suffix``: required)."""
        out = Path(out)
        if suffix and not out.name.endswith(suffix):
            raise DataError(f"--write_cleaned {out}: the {self.format} format writes a {suffix} file; name one")
        inputs = {Path(p).resolve() for s in ("train", "dev", "test") for p in self._inputs_or_none(s)}
        if out.resolve() in inputs:
            raise DataError(f"--write_cleaned {out} is an input of the data: write the cleaned data to another path")
        return out

    def _inputs_or_none(self, split: str) -> List[Path]:
        try:
            return self.inputs(split)
        except DataError:
            return []

    # -- shared
    def read_split(self, split: str, check_images: bool = False) -> Split:
        """Split ``split``, parsed once while its files are unchanged (a copy: callers may replace its fields);
        ``check_images``: every image file exists (:meth:`check_image_files`)."""
        key = (type(self), split, tuple((f.name, getattr(self.data, f.name)) for f in dataclasses.fields(self.data)
                                        if f.name not in _NOT_READ))
        stamp = _stamp(self.inputs(split))
        kept = _PARSED.get(key)
        if kept is None or kept[0] != stamp:
            parsed = dataclasses.replace(self.parse_split(split), key_name=self.key_name)
            check_unique_keys(parsed)
            kept = _PARSED[key] = (stamp, parsed)
            while len(_PARSED) > _KEEP:
                _PARSED.popitem(last=False)
        _PARSED.move_to_end(key)
        s = kept[1]
        out = dataclasses.replace(s, captions=list(s.captions), image_ids=list(s.image_ids),
                                  image_paths=list(s.image_paths),
                                  pair_keys=None if s.pair_keys is None else list(s.pair_keys))
        if check_images:
            self.check_image_files(out)
        return out

    def split_problems(self, split: str) -> Tuple[Optional[Split], List[str]]:
        """For check_data.py: split ``split`` as far as it reads, and every structural problem of its entries, one
        line each naming its place in the user's file. A format that can read past a bad entry (Karpathy's JSON,
        shards) overrides it to list them all; by default the first problem stops the split."""
        try:
            return self.read_split(split), []
        except (DataError, OSError, ValueError) as e:
            return None, [_one_line(e)]

    def check_image_files(self, split: Split, show: int = 5) -> None:
        """Every image file of ``split`` exists; else one error naming the first ``show`` and where each is listed."""
        missing = [i for i, p in enumerate(split.image_paths) if isinstance(p, (str, Path)) and not os.path.isfile(p)]
        if missing:
            listed = "\n  ".join(f"{split.image_paths[i]} ({self.listed_at(split, i)})" for i in missing[:show])
            raise DataError(f"{len(missing)} of {split.num_images} image files of the {split.name} split are "
                            f"missing, e.g.:\n  {listed}")

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

    def noisy_train(self, log: Callable[[str], None], check_images: bool, force: bool = False
                    ) -> Tuple[Split, np.ndarray]:
        """The training split with the captions of ``data.noise_ratio`` (built and cached on first use; ``force``:
        built again) and the noise mask (True = the caption differs from the clean one)."""
        return noisy_beside(self.data, self.read_split("train", check_images), self.train_caps_path(),
                            self.train_label(), log, rebuild_command=self.rebuild_command(), force=force)

    def build_noise(self, log: Callable[[str], None], force: bool = False) -> Tuple[Path, np.ndarray]:
        """construct_noise.py: the noisy training split built (or reused; ``force``: rebuilt), its file and mask."""
        split, mask = self.noisy_train(log, check_images=False, force=force)
        return split.caps_file, mask

    def load_train(self, log: Callable[[str], None] = print, check_images: bool = True):
        """The noisy training split and its noise mask (None where the noise is not known: real noise)."""
        split, mask = self.noisy_train(log, check_images)
        return split, mask if self.ground_truth_known() else None

    def ground_truth_known(self) -> bool:
        """Whether the training split's noise mask is the truth: noise this project made, or generated clean
        data. At ``--noise_ratio 0`` on real data the noise is the data's own: not measurable."""
        return self.dataset.generated or float(self.data.noise_ratio) > 0

    def listed_at(self, split: Split, image_index: int) -> str:
        """Where the image ``image_index`` of ``split`` is listed (for a missing or unreadable image)."""
        first = int(np.searchsorted(split.caption_image, image_index))
        return f"{split.source_file or split.caps_file}, {split.key_label(first)}"

    def missing_images_advice(self) -> str:
        """What to do about missing images, for this format."""
        return "missing images: put every image where the split's file says it is"

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

    def expected_files(self) -> str:
        return f"{self.label} (--train_data, --dev_data, --test_data)"

    def where(self, split: str) -> str:
        return CSV_SPLIT_FLAGS.get(split, f"--{split}_data")

    def split_spec(self, split: str) -> str:
        """What the split's flag names; a split without it is an error naming the flag."""
        f = self.data.split_files().get(split)
        if not f:
            raise DataError(f"--dataset {self.data.dataset}: the {split} split needs {self.where(split)} "
                            f"{self.file_hint}")
        return str(f)

    def inputs(self, split: str) -> List[Path]:
        return [Path(self.split_spec(split))]

    def train_caps_path(self) -> Path:
        """``<stem>.train_caps.txt`` beside the training file."""
        f = Path(self.split_spec("train"))
        return f.parent / f"{f.stem}.{TRAIN_CAPS}"

    def bank_dir(self, model_key) -> Path:
        """``<stem>.memory_bank/<model>/`` beside the training file."""
        f = Path(self.split_spec("train"))
        return f.parent / f"{f.stem}.memory_bank" / model_key()


def group_pairs(name: str, pairs: Iterable[Tuple[str, str, object, str, object]], *, caps_file, source_file=None,
                lines: bool = False, what: Optional[str] = None) -> Split:
    """A :class:`Split` of ``pairs`` ``(image key, image id, image path, caption, pair key)`` in file order: the
    pairs of one image key form one image (images in the order they first appear, each image's captions in file
    order; the image's id and path are its first pair's).
    ``lines``: the pair keys are the file's line numbers (``source_lines``), else strings (``pair_keys``).
    Fewer than 2 images is an error naming ``what`` (default ``source_file``)."""
    index: Dict[str, int] = {}
    ids: List[str] = []
    paths: list = []
    groups: List[list] = []
    for image_key, image_id, path, caption, key in pairs:
        k = index.get(image_key)
        if k is None:
            k = index[image_key] = len(ids)
            ids.append(image_id)
            paths.append(path)
            groups.append([])
        groups[k].append((key, caption))
    if len(ids) < 2:
        raise DataError(f"{what or source_file or caps_file}: the {name} split has {len(ids)} image(s); retrieval "
                        f"needs at least 2")
    captions = [c for g in groups for _, c in g]
    keys = [q for g in groups for q, _ in g]
    caption_image = np.repeat(np.arange(len(ids), dtype=np.int64), [len(g) for g in groups])
    return Split(name, captions, ids, paths, caption_image, max(len(g) for g in groups), Path(caps_file),
                 np.asarray(keys, dtype=np.int64) if lines else None, None if source_file is None else Path(source_file),
                 None if lines else [str(q) for q in keys])


def _one_line(e: BaseException) -> str:
    from npc.cli import one_line

    return one_line(e)


def split_of_good_parts(parts: list, check: Callable[[object], object], read: Callable[[list], Split]
                        ) -> Tuple[Optional[Split], List[str]]:
    """:meth:`DataSource.split_problems` of a format read in parts (Karpathy's entries, shards): each part read on
    its own (``check(part)``: its problem, if any), then the split of the parts that read (``read(parts)``)."""
    good, problems = [], []
    for part in parts:
        try:
            check(part)
            good.append(part)
        except (DataError, OSError, ValueError) as e:
            problems.append(_one_line(e))
    try:
        out = read(good) if good else None
        if out is not None:
            check_unique_keys(out)
    except (DataError, OSError, ValueError) as e:
        return None, problems + [_one_line(e)]
    return out, problems


def check_unique_keys(split: Split) -> None:
    """Every pair of ``split`` has its own key (Split.keys); else one error naming both entries of the first key
    given twice (e.g. two Karpathy images with the same sentids)."""
    keys = split.keys
    first: Dict[str, int] = {}
    for j, k in enumerate(keys):
        other = first.setdefault(k, j)
        if other != j:
            where = split.source_file or split.caps_file

            def entry(p: int) -> str:
                i = int(split.caption_image[p])
                return f"image {split.image_ids[i]} ({split.image_paths[i]})"

            raise DataError(f"{where}: the {split.name} split gives {split.key_label(j)} twice: to a caption of "
                            f"{entry(other)} and to one of {entry(j)}; every pair needs its own key (the key column "
                            f"of pairs.csv, pair_weights.csv and the bank's CSV): give each caption its own "
                            f"{split.key_name}")


def noisy_beside(data, split: Split, clean: Path, what, log: Callable[[str], None],
                 rebuild_command: Optional[str] = None, force: bool = False) -> Tuple[Split, np.ndarray]:
    """The noise of a format whose captions are no caption file of its own (CSV, Karpathy's JSON, shards): the
    training ``split``'s captions, in split order, written to ``clean`` (``<prefix>train_caps.txt``, which the
    noise protocol shuffles) and the noisy split beside it, under one lock, so that a process never reads
    another's captions; ``split`` takes the noisy captions. ``what``: the data, for messages."""
    k = check_num_anns_uniform(split, what, data.noise_mode)
    folder, prefix = clean.parent, clean.name[:-len(TRAIN_CAPS)]
    make_dir(folder, f"the captions of {what}")
    with file_lock(folder / f".{clean.name}.lock", f"the captions of {what}", wait=True, log=log):
        if not clean.is_file() or read_caption_lines(clean) != split.captions:
            atomic_write_lines(clean, split.captions)
        caps_path, mask = ensure_noisy_split(folder, data.noise_ratio, seed=data.noise_seed, mode=data.noise_mode,
                                             num_anns=k or 1, log=log, prefix=prefix, rebuild_command=rebuild_command,
                                             force=force)
        split.captions, split.caps_file = read_caption_lines(caps_path), caps_path
    return split, mask


def check_num_anns_uniform(split: Split, source, noise_mode: str) -> Optional[int]:
    """Captions per image when every image has the same number; ``--noise_mode image`` requires it."""
    k = split.uniform_num_anns
    if noise_mode == "image" and not k:
        raise DataError(f"{source}: --noise_mode image moves whole caption blocks between images and needs the same "
                        f"number of captions for every image; this data has from "
                        f"{np.bincount(split.caption_image).min()} to {split.num_anns}")
    return k

