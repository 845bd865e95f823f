"""The memory bank's files: where they lie, writing them as one unit, reading them back (the release's too).

Files (``annotations/memory_bank/`` of the dataset, or ``<train csv stem>.memory_bank/<model>_<weights>_<key>/``
beside a CSV training split, one folder per model and initial weights; where training reads them):
``<r>_mbank_img_idx.npy``: int64 (n_train_images,), image index -> clean sample index;
``<r>_mbank_txt_idx.npy``: int64 (n_train_captions,), sample index -> clean sample index;
``<r>_mbank_info.json``: how the bank was built and what it found;
``<r>_mbank_pclean.npy``: float64 (n_train_captions,), the GMM's p(clean) of every pair (for the
``gmm_filter`` / ``pclean_weight`` baselines and the study of the estimators);
``<r>_mbank_pclean.csv``: the same p(clean) and the clean set, one row per training pair in your order
(for a CSV file, ``line``: its line number there), with the image and the caption (npc/pair_table.py).
The info file records the self-check too (npc/self_check.py): whether the model tells the pairs apart.
The release's files (pickled dicts ``str(image_id) -> array``, ``str(sample) -> array``) are read
through a restricted unpickler that only admits numpy arrays inside plain dicts.
"""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from npc.config import DataConfig, ModelConfig
from npc.data import Split
from npc.errors import MissingFileError, UserError
from npc.io import atomic_save_npy, atomic_write_json, atomic_write_text, file_sha256
from npc.loaders import BankIndex
from npc.noise import ratio_tags


class BankFileError(UserError, ValueError):
    """A memory-bank file that cannot be used; the message names it."""


def bank_dir_for(data: DataConfig, model: ModelConfig) -> Path:
    """Where the memory bank of the training split lives, as its data source says: the release's
    annotations/memory_bank, or beside a CSV ``<train csv stem>.memory_bank/<model>_<weights>_<key>/``, one
    folder per model and initial weights (by content: :func:`npc.fingerprints.bank_key`)."""
    from npc.fingerprints import bank_key
    from npc.sources import source_for

    folder = source_for(data).bank_dir(lambda: bank_key(data, model))
    decisions = data.pair_decisions
    if decisions:  # a bank of its own: other pairs, other clean set (npc/decisions.py)
        from npc.decisions import read_decisions

        folder = folder / f"decisions_{read_decisions(decisions).sha256[:12]}"
    return folder


def _bank_prefix(tag: str, noise_mode: str = "caption") -> str:
    return f"{tag}_imgnoise" if noise_mode == "image" else tag


def bank_paths(bank_dir, noise_ratio, noise_mode: str = "caption") -> Tuple[Path, Path, Path]:
    """Paths of the image bank, text bank and info file; for ratio 0 an existing ``0.0_``/``0_`` twin wins."""
    bank_dir = Path(bank_dir)
    prefixes = [_bank_prefix(tag, noise_mode) for tag in ratio_tags(noise_ratio)]
    for p in prefixes:
        img = bank_dir / f"{p}_mbank_img_idx.npy"
        if img.is_file():
            break
    else:
        p = prefixes[0]
    return bank_dir / f"{p}_mbank_img_idx.npy", bank_dir / f"{p}_mbank_txt_idx.npy", bank_dir / f"{p}_mbank_info.json"


def partial_marker(bank_dir, noise_ratio, noise_mode: str = "caption") -> Path:
    """``.<r>_mbank.partial``: present while a build writes the bank's files (removed after its info file)."""
    img_path = bank_paths(bank_dir, noise_ratio, noise_mode)[0]
    return img_path.with_name("." + img_path.name.replace("_img_idx.npy", ".partial"))


def remove_stale_temporaries(bank_dir, noise_ratio, noise_mode: str = "caption") -> int:
    """The temporary files of this bank's writes that a kill cut short (call under the bank's lock: no writer
    of these files is live); returns how many were removed."""
    stem = bank_paths(bank_dir, noise_ratio, noise_mode)[0].name.replace("_img_idx.npy", "_")
    stale = [p for p in Path(bank_dir).glob(f".{stem}*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def save_bank(bank: BankIndex, bank_dir, noise_ratio, noise_mode: str, info: Dict,
              p_clean: Optional[np.ndarray] = None) -> Tuple[Path, Path]:
    """The bank as one unit: a marker that a build is under way, both arrays (and p(clean) when given),
    then the info file, which records their fingerprints, then the marker goes. A set that a crash left
    half replaced does not match its info (:func:`bank_files_match`); one cut before its first info file
    has the marker (:func:`partial_bank`); either is rebuilt, never used."""
    img_path, txt_path, info_path = bank_paths(bank_dir, noise_ratio, noise_mode)
    marker = partial_marker(bank_dir, noise_ratio, noise_mode)
    atomic_write_text(marker, "a build of this memory bank is under way, or was cut short: it is rebuilt\n")
    atomic_save_npy(img_path, bank.image_bank)
    atomic_save_npy(txt_path, bank.text_bank)
    info = {**info, "image_bank_sha256": file_sha256(img_path), "text_bank_sha256": file_sha256(txt_path)}
    if p_clean is not None:
        info["p_clean_sha256"] = file_sha256(save_pclean(p_clean, bank_dir, noise_ratio, noise_mode))
    atomic_write_json(info_path, info)
    marker.unlink(missing_ok=True)
    return img_path, txt_path


def partial_bank(bank_dir, noise_ratio, noise_mode: str = "caption") -> Optional[str]:
    """Why the bank's files without an info file are the remains of a build this project cut short (its
    marker, a p(clean) file, a missing text bank), or None: the release's files, which have no info file."""
    img_path, txt_path, info_path = bank_paths(bank_dir, noise_ratio, noise_mode)
    if info_path.is_file():
        return None
    if partial_marker(bank_dir, noise_ratio, noise_mode).is_file():
        return "a build was cut short"
    if pclean_path(bank_dir, noise_ratio, noise_mode).is_file():
        return f"{pclean_path(bank_dir, noise_ratio, noise_mode).name} is there but not {info_path.name}"
    if not txt_path.is_file():
        return f"{txt_path.name} is missing"
    return None


def bank_files_match(bank_dir, noise_ratio, noise_mode: str, info: Dict) -> bool:
    """Whether the bank's files are the ones its info file was written with."""
    img_path, txt_path, _ = bank_paths(bank_dir, noise_ratio, noise_mode)
    files = [(img_path, "image_bank_sha256"), (txt_path, "text_bank_sha256")]
    if "p_clean_sha256" in info:
        files.append((pclean_path(bank_dir, noise_ratio, noise_mode), "p_clean_sha256"))
    return all(p.is_file() and info.get(key) == file_sha256(p) for p, key in files)


def pclean_path(bank_dir, noise_ratio, noise_mode: str = "caption") -> Path:
    """``<r>_mbank_pclean.npy`` beside the bank files: the GMM's p(clean) of every training pair."""
    img_path = bank_paths(bank_dir, noise_ratio, noise_mode)[0]
    return img_path.with_name(img_path.name.replace("_img_idx.npy", "_pclean.npy"))


def save_pclean(p_clean: np.ndarray, bank_dir, noise_ratio, noise_mode: str = "caption") -> Path:
    path = pclean_path(bank_dir, noise_ratio, noise_mode)
    atomic_save_npy(path, np.asarray(p_clean, dtype=np.float64))
    return path


def save_pclean_csv(p_clean: np.ndarray, clean_threshold: float, split: Split, bank_dir, data: DataConfig) -> Path:
    """``<r>_mbank_pclean.csv``: p(clean) and the clean set keyed by your own rows (npc/pair_table.py):
    ``line``/``key``, ``image``, ``caption``, ``p_clean``, ``clean`` (1: p(clean) > --clean_threshold)."""
    from npc.pair_table import user_images, write_pair_csv

    path = pclean_path(bank_dir, data.noise_ratio, data.noise_mode).with_suffix(".csv")
    p = np.asarray(p_clean, dtype=np.float64)
    return write_pair_csv(path, split, user_images(split, data.dataset_root),
                          {"p_clean": p, "clean": (p > clean_threshold).astype(np.int64)})


def load_pclean(bank_dir, noise_ratio, n_pairs: int, noise_mode: str = "caption") -> np.ndarray:
    """p(clean) per training pair, written by the same build as the bank (the release has no such file).

    The bank's info file must record this file's fingerprint: p(clean) of another build is refused.
    """
    path = pclean_path(bank_dir, noise_ratio, noise_mode)
    info_path = bank_paths(bank_dir, noise_ratio, noise_mode)[2]
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    if not path.is_file() or "p_clean_sha256" not in info:
        raise MissingFileError(f"{path}: no p(clean) recorded by this memory bank's build; rebuild the bank with "
                                f"this project (get_memorybank.py, or --rebuild_bank)")
    if file_sha256(path) != info["p_clean_sha256"]:
        raise BankFileError(f"{path} is not the file {info_path.name} describes (another build?); rebuild the "
                            f"bank with --rebuild_bank")
    p_clean = np.load(path, allow_pickle=False)
    if p_clean.shape != (n_pairs,) or p_clean.dtype.kind != "f":
        raise BankFileError(f"{path}: expected {n_pairs} floats (one per training pair), got {p_clean.dtype} "
                            f"{p_clean.shape}")
    return p_clean


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.dtypes", "Int64DType"), ("numpy.dtypes", "Int32DType"),
}


class _Refused(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"refusing to load {module}.{name} (only numpy arrays in plain dicts are allowed)")


def _load_npy(path: Path, trust_pickle: bool):
    """An ``.npy`` file; object arrays (pickled dicts) only through the restricted unpickler.

    A file that is not an ``.npy`` file, or is cut short, is a :class:`BankFileError` that says to
    rebuild it; only a complete pickle that holds something else suggests ``--trust_pickle``.
    """
    rebuild = "rebuild the bank with --rebuild_bank (or get_memorybank.py with this run's flags)"
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(f)
        except (ValueError, EOFError) as e:
            raise BankFileError(f"{path} is not a .npy file ({e}): {rebuild}") from None
        if not dtype.hasobject:
            try:
                return np.load(path, allow_pickle=False)
            except (ValueError, EOFError, OSError) as e:
                raise BankFileError(f"{path} is truncated or corrupt ({e}): {rebuild}") from None
        try:  # an object array: the release's pickled dict
            if trust_pickle:
                return np.load(path, allow_pickle=True)
            return _RestrictedUnpickler(io.BufferedReader(f)).load()
        except _Refused as e:
            raise BankFileError(f"{path}: {e}. If you trust this file, pass --trust_pickle.") from None
        except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as e:
            raise BankFileError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}): {rebuild}") from None


def _from_release_dict(obj, keys: Sequence[str], path: Path) -> np.ndarray:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise BankFileError(f"{path}: expected an integer array or a dict, got {type(obj).__name__}")
    out = np.empty(len(keys), dtype=np.int64)
    for k, key in enumerate(keys):
        if key not in obj:
            raise BankFileError(f"{path}: no entry for key {key!r} ({len(obj)} entries; built for another split?)")
        out[k] = int(np.asarray(obj[key]).ravel()[0])
    return out


def load_bank(bank_dir, noise_ratio, split: Split, noise_mode: str = "caption", trust_pickle: bool = False
              ) -> BankIndex:
    """Read a bank built by this project (integer arrays) or by the release (pickled dicts)."""
    img_path, txt_path, _ = bank_paths(bank_dir, noise_ratio, noise_mode)
    for p in (img_path, txt_path):
        if not p.is_file():
            raise MissingFileError(f"memory-bank file not found: {p} (build it with get_memorybank.py)")
    img = _load_npy(img_path, trust_pickle)
    txt = _load_npy(txt_path, trust_pickle)
    if not (isinstance(img, np.ndarray) and img.dtype.kind in "iu"):
        img = _from_release_dict(img, [str(i) for i in split.image_ids], img_path)
    if not (isinstance(txt, np.ndarray) and txt.dtype.kind in "iu"):
        txt = _from_release_dict(txt, [str(i) for i in range(len(split))], txt_path)
    for arr, n, p in ((img, split.num_images, img_path), (txt, len(split), txt_path)):
        if arr.shape != (n,):
            raise BankFileError(f"{p}: shape {arr.shape} does not match the training split ({n} entries)")
        if len(arr) and (arr.min() < 0 or arr.max() >= len(split)):
            raise BankFileError(f"{p}: sample indices out of range [0, {len(split)})")
    return BankIndex(image_bank=img.astype(np.int64), text_bank=txt.astype(np.int64))
