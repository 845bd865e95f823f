"""The memory bank of clean pairs (docs/method.md section 3), built once with the pretrained model.

1. Per-sample symmetric InfoNCE of every training pair within its batch, batches of consecutive
   samples in file order (as the release computes it).
2. A 2-component Gaussian mixture (scikit-learn) on the min-max scaled losses; p(clean) is the
   posterior of the lower-mean component; clean = p(clean) > ``clean_threshold``.
3. For every training image, the clean pair whose image is most similar (cosine, image-image); for
   every caption, the clean pair whose caption is most similar (cosine, text-text). Top-1, no
   self-exclusion. Unlike the release, features are L2-normalized, so "cosine" holds.

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
import logging
import pickle
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from npc import data as D
from npc.data import Split
from npc.loaders import BankIndex
from npc.config import BankConfig, DataConfig, ModelConfig
from npc.detection import weight_auc
from npc.distributed import DistInfo, barrier, broadcast_object
from npc.errors import MissingFileError, UserError
from npc.io import atomic_save_npy, atomic_write_json, atomic_write_text, file_sha256, read_json
from npc.locks import file_lock
from npc.losses import clip_loss_per_sample
from npc.noise import ratio_tags


log = logging.getLogger("npc")


class BankFileError(UserError, ValueError):
    """A memory-bank file that cannot be used; the message names it."""


@dataclass(frozen=True)
class BankInputs:
    """What a memory bank is built from besides the model: the data, the model's configuration (its initial
    weights key the bank), the GMM's settings and the batch of encoding."""

    data: DataConfig
    model: ModelConfig
    bank: BankConfig
    encode_batch_size: int
    num_workers: int = 0


def bank_dir_for(data: DataConfig, model: ModelConfig) -> Path:
    """Where the memory bank of the training split lives, as its data source says: the release's
    annotations/memory_bank, or beside a CSV ``<train csv stem>.memory_bank/<model>_<weights>_<key>/``, one
    folder per model and initial weights (by content: :func:`npc.fingerprints.bank_key`)."""
    from npc.fingerprints import bank_key
    from npc.sources import source_for

    return source_for(data).bank_dir(lambda: bank_key(data, model))


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


# ----------------------------------------------------------------------------- steps 1 and 2

def per_sample_losses(img_feats: torch.Tensor, txt_feats: torch.Tensor, caption_image: np.ndarray,
                      scale: float, batch_size: int) -> np.ndarray:
    """Loss of pair i within its batch of consecutive samples (the release's fixed, unshuffled order)."""
    ci = torch.as_tensor(caption_image, device=img_feats.device)
    out = []
    scale_t = torch.tensor(float(scale), device=img_feats.device)
    for start in range(0, txt_feats.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        out.append(clip_loss_per_sample(img_feats[ci[sl]], txt_feats[sl], scale_t).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def fit_loss_gmm(losses: np.ndarray, seed: int = 0):
    """The release's 2-component GMM on the min-max scaled ``losses``: ``(scaled losses, fitted
    sklearn GaussianMixture, index of its clean (lower-mean) component)``."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(losses, dtype=np.float64)
    span = x.max() - x.min()
    x = (x - x.min()) / (span if span > 0 else 1.0)  # reg_covar 5e-4 is meant for losses in [0, 1]
    gmm = GaussianMixture(n_components=2, max_iter=100, tol=1e-2, reg_covar=5e-4, random_state=seed)
    gmm.fit(x[:, None])
    return x, gmm, int(np.argmin(gmm.means_.ravel()))


def clean_probability_and_fit(losses: np.ndarray, seed: int = 0) -> Tuple[np.ndarray, Dict]:
    """Posterior of the low-loss component of a 2-component GMM (the release's GMM settings), and the fit:
    ``means``, ``variances``, ``weights`` (on the min-max scaled losses), ``clean_component``, ``converged``."""
    x, gmm, clean = fit_loss_gmm(losses, seed)
    fit = {"means": gmm.means_.ravel().tolist(), "variances": gmm.covariances_.ravel().tolist(),
           "weights": gmm.weights_.ravel().tolist(), "clean_component": clean, "converged": bool(gmm.converged_)}
    return gmm.predict_proba(x[:, None])[:, clean], fit


def clean_probability(losses: np.ndarray, seed: int = 0) -> np.ndarray:
    """Posterior of the low-loss component of a 2-component GMM (the release's GMM settings)."""
    return clean_probability_and_fit(losses, seed)[0]


# ----------------------------------------------------------------------------- step 3

def nearest(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 4096, max_scores: int = 1 << 28) -> torch.Tensor:
    """Index of the most similar key (cosine; both L2-normalized) for every query, in chunks of queries whose
    score block holds at most ``max_scores`` elements (1 GiB in fp32, whatever the number of keys: at 3M keys a
    block of 4096 queries would be 49 GB). The chunking does not change the result."""
    chunk = max(1, min(chunk, max_scores // max(1, keys.shape[0])))
    out = []
    for start in range(0, queries.shape[0], chunk):
        out.append((queries[start:start + chunk] @ keys.t()).argmax(dim=1))
    return torch.cat(out)


def build_bank_index(img_feats: torch.Tensor, txt_feats: torch.Tensor, caption_image: np.ndarray,
                     p_clean: np.ndarray, clean_threshold: float = 0.9) -> BankIndex:
    clean = np.nonzero(p_clean > clean_threshold)[0]
    if len(clean) == 0:
        raise UserError(f"no training pair has p(clean) > {clean_threshold} (--clean_threshold); "
                           f"the memory bank would be empty")
    # Text side: the clean caption most similar to each caption.
    txt_bank = clean[nearest(txt_feats, txt_feats[torch.as_tensor(clean, device=txt_feats.device)]).cpu().numpy()]
    # Image side: the most similar image among images with a clean caption; of that image's clean
    # captions, the one the GMM is most sure about.
    clean_images = np.unique(caption_image[clean])
    best_caption = np.full(int(caption_image.max()) + 1, -1, dtype=np.int64)
    order = clean[np.argsort(p_clean[clean], kind="stable")]  # ascending: the last write wins
    best_caption[caption_image[order]] = order
    near = clean_images[nearest(img_feats, img_feats[torch.as_tensor(clean_images, device=img_feats.device)]).cpu().numpy()]
    img_bank = best_caption[near]
    return BankIndex(image_bank=img_bank.astype(np.int64), text_bank=txt_bank.astype(np.int64))


def bank_quality(p_clean: np.ndarray, clean_threshold: float, noise_mask: Optional[np.ndarray]) -> Dict:
    clean = p_clean > clean_threshold
    info = {"n_pairs": int(len(clean)), "n_clean": int(clean.sum()), "clean_fraction": float(clean.mean())}
    if noise_mask is None:  # real noise: nothing to compare with
        info["precision"] = info["recall"] = "not measurable (no ground-truth noise mask)"
    else:
        truly_clean = ~np.asarray(noise_mask, dtype=bool)
        hit = int((clean & truly_clean).sum())
        info["precision"] = hit / max(int(clean.sum()), 1)
        info["recall"] = hit / max(int(truly_clean.sum()), 1)
        if truly_clean.any() and (~truly_clean).any():
            info["p_clean_auc"] = weight_auc(p_clean, ~truly_clean)
    return info


# ----------------------------------------------------------------------------- files

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


def build_memory_bank(img_feats: torch.Tensor, txt_feats: torch.Tensor, split: Split, scale: float, *,
                      batch_size: int, clean_threshold: float = 0.9, noise_mask: Optional[np.ndarray] = None,
                      seed: int = 0) -> Tuple[BankIndex, Dict, np.ndarray]:
    """Steps 1-3 from encoded features. Returns the bank, a summary, and p(clean) per pair."""
    from npc.self_check import separability

    losses = per_sample_losses(img_feats, txt_feats, split.caption_image, scale, batch_size)
    p_clean, fit = clean_probability_and_fit(losses, seed=seed)
    bank = build_bank_index(img_feats, txt_feats, split.caption_image, p_clean, clean_threshold)
    info = bank_quality(p_clean, clean_threshold, noise_mask)
    info["self_check"] = separability(img_feats, txt_feats, split.caption_image, p_clean, fit,
                                      what="the training pairs")
    info.update(clean_threshold=clean_threshold, bank_batch_size=batch_size,
                self_image_fraction=float(np.mean(split.caption_image[bank.image_bank] == np.arange(split.num_images))),
                self_text_fraction=float(np.mean(bank.text_bank == np.arange(len(split)))))
    return bank, info, p_clean


# ----------------------------------------------------------------------------- the bank of a run
# Which inputs a bank was built from, when an existing one can serve a run, and building it.

# The bank's build inputs a run may ask differently, and the flag that sets each.
BANK_INPUT_FLAGS = {"vision_model": "--vision_model", "pretrained": "--pretrained", "weights": "--resume",
                    "clean_threshold": "--clean_threshold", "bank_batch_size": "--bank_batch_size",
                    "bank_seed": "--bank_seed"}


def bank_provenance(inputs: BankInputs, train_split, weights: Optional[Path] = None) -> Dict:
    """What a memory bank is built from: the noisy split (by content), the model, its initial weights (by
    content: npc/fingerprints.py) and the GMM's settings."""
    from npc.fingerprints import initial_weights_fingerprint

    d, m, b = inputs.data, inputs.model, inputs.bank
    return {"noisy_split": train_split.caps_file.name, "noisy_split_sha256": file_sha256(train_split.caps_file),
            "noise_ratio": str(d.noise_ratio), "noise_mode": d.noise_mode, "vision_model": m.vision_model,
            "pretrained": str(m.pretrained), "initial_weights": initial_weights_fingerprint(d, m),
            "weights": str(weights) if weights else None,
            "clean_threshold": b.clean_threshold, "bank_batch_size": b.bank_batch_size, "bank_seed": b.bank_seed}


def _same_initial_weights(key: str, built: Dict, wanted: Dict) -> bool:
    """``--pretrained`` named by another path, whose file holds the weights the bank was built from."""
    return key == "pretrained" and "initial_weights" in built and built["initial_weights"] == wanted["initial_weights"]


def bank_differences(built: Dict, wanted: Dict) -> list:
    """The settings a bank was built with (``built``, its info file) that differ from ``wanted``, one phrase each."""
    differ = [f"{flag} {wanted[k]} (the bank has {built.get(k)})" for k, flag in BANK_INPUT_FLAGS.items()
              if built.get(k) != wanted[k] and not _same_initial_weights(k, built, wanted)]
    if built.get("initial_weights", wanted["initial_weights"]) != wanted["initial_weights"]:
        differ.append(f"--pretrained {wanted['pretrained']}: other initial weights than the bank was built from "
                      f"(the content differs: {wanted['initial_weights'][:19]}, the bank has "
                      f"{built['initial_weights'][:19]})")
    return differ


def reusable_bank(inputs: BankInputs, train_split, wanted: Dict) -> Optional[BankIndex]:
    """The existing bank if it was built from ``wanted``; None if missing or built from another noisy split.

    A bank built with other settings (model, weights, threshold, batch, seed) is refused naming the
    flag; one without a record of its inputs (the release's, or older versions') is reused with a warning.
    """
    d = inputs.data
    bank_dir = bank_dir_for(d, inputs.model)
    img_path, _, info_path = bank_paths(bank_dir, d.noise_ratio, d.noise_mode)
    if not img_path.is_file():
        return None
    name = f"{img_path.parent}/{img_path.name.replace('_img_idx.npy', '_*')}"
    built = read_json(info_path) or {}
    if "batch_size" in built and "bank_batch_size" not in built:  # recorded by earlier versions
        built["bank_batch_size"] = built["batch_size"]
    partial = partial_bank(bank_dir, d.noise_ratio, d.noise_mode)
    if partial:
        log.info(f"memory bank: {name} is incomplete ({partial}: an interrupted build): rebuilding the bank")
        return None
    if "noisy_split_sha256" not in built:
        log.warning(f"memory bank: {name} has no record of what it was built from (the release's files, or an older "
                    f"version's): reused as is; pass --rebuild_bank to rebuild it from this run's inputs")
    elif built["noisy_split_sha256"] != wanted["noisy_split_sha256"]:
        log.info(f"memory bank: {name} was built for another version of {wanted['noisy_split']} (it was rebuilt "
                 f"since): rebuilding the bank")
        return None
    elif not bank_files_match(bank_dir, d.noise_ratio, d.noise_mode, built):
        log.info(f"memory bank: the files of {name} are not the ones {info_path.name} describes (an interrupted "
                 f"build?): rebuilding the bank")
        return None
    else:
        differ = bank_differences(built, wanted)
        if differ:
            raise BankFileError(f"memory bank {name} was built with other settings than this run asks for: "
                                   f"{'; '.join(differ)}. Pass --rebuild_bank to rebuild it for this run (it "
                                   f"replaces the files), or use the bank's settings")
    log.info(f"memory bank: reusing {name}")
    check = built.get("self_check")
    if isinstance(check, dict) and check.get("can_see") is False:
        log.warning(f"memory bank: {check.get('message')}")
    return load_bank(bank_dir, d.noise_ratio, train_split, d.noise_mode, trust_pickle=inputs.bank.trust_pickle)


def ensure_bank(inputs: BankInputs, model, train_split, noise_mask, preprocess, tokenizer, device, autocast, progress: bool,
                weights: Optional[Path] = None, info: Optional[DistInfo] = None) -> BankIndex:
    """The memory bank of this noisy split: reused if built from the same inputs, else built (under a lock).

    Called by every rank of a run (``info``): rank 0 decides whether the bank can be reused and holds
    the lock; if it must be built, every rank encodes its share of the training set, rank 0 fits the
    GMM and writes the files (the same bytes as one process writes), and the other ranks read them.
    """
    info = info or DistInfo()
    d = inputs.data
    wanted = bank_provenance(inputs, train_split, weights)
    rebuild = inputs.bank.rebuild_bank
    bank_dir = bank_dir_for(d, inputs.model)
    img_path, _, _ = bank_paths(bank_dir, d.noise_ratio, d.noise_mode)
    with ExitStack() as stack:
        bank, decision = None, "build"
        if info.is_main:
            try:
                partial = partial_bank(bank_dir, d.noise_ratio, d.noise_mode)  # said once, under the lock
                bank = None if rebuild or partial else reusable_bank(inputs, train_split, wanted)
                if bank is None:
                    stack.enter_context(file_lock(bank_dir / f".{img_path.name}.lock",
                                                  f"the memory bank {img_path.parent}", wait=True, log=log.info))
                    bank = None if rebuild else reusable_bank(inputs, train_split, wanted)  # built while we waited?
                decision = "reuse" if bank is not None else "build"
                if decision == "build":  # the lock is held: no other writer of these files is live
                    remove_stale_temporaries(bank_dir, d.noise_ratio, d.noise_mode)
                    if rebuild:
                        say_what_is_replaced(bank_dir, d, wanted)
            except BaseException as e:
                broadcast_object(f"error: {type(e).__name__}: {e}", info)  # the other ranks stop too
                raise
        decision = broadcast_object(decision, info)
        if decision.startswith("error"):
            raise UserError(f"rank {info.rank}: rank 0 could not prepare the memory bank ({decision[7:]})")
        if decision == "build":  # the run's random state is the same whether the bank was built or reused
            with torch.random.fork_rng(devices=[]):  # (the encoding's data loader draws its seed from it)
                bank = build_bank(inputs, model, train_split, noise_mask, preprocess, tokenizer, device, autocast,
                                  progress, wanted, info=info)
        barrier(info)  # rank 0 has written the files
    if bank is None:
        bank = load_bank(bank_dir, d.noise_ratio, train_split, d.noise_mode, trust_pickle=inputs.bank.trust_pickle)
    return bank


def say_what_is_replaced(bank_dir: Path, d: DataConfig, wanted: Dict) -> None:
    """``--rebuild_bank`` (and get_memorybank.py) over an existing bank: one line naming it and, when its info
    file records them, the settings it was built with that this build changes."""
    img_path, _, info_path = bank_paths(bank_dir, d.noise_ratio, d.noise_mode)
    if not img_path.is_file():
        return
    name = f"{img_path.parent}/{img_path.name.replace('_img_idx.npy', '_*')}"
    built = read_json(info_path)
    if not built or "noisy_split_sha256" not in built:
        log.info(f"memory bank: replacing {name} (no record of what it was built from)")
        return
    differ = bank_differences(built, wanted)
    if built["noisy_split_sha256"] != wanted["noisy_split_sha256"]:
        differ.insert(0, f"another version of {wanted['noisy_split']}")
    log.info(f"memory bank: replacing {name}, "
             + (f"built with other settings: {'; '.join(differ)}" if differ else "built with the same settings"))


def with_unreadable_images(bank: BankIndex, summary: Dict, p_clean: np.ndarray, split: Split, dropped: Sequence[int],
                           noise_mask: Optional[np.ndarray]) -> Tuple[BankIndex, Dict, np.ndarray]:
    """The bank of the readable images (``--skip_unreadable_images``) as a bank of the whole ``split``: indices
    mapped back, each entry of a dropped image pointing to the pair itself (a batch leaves out every pair that
    needs an unreadable image), its pairs not clean (p(clean) 0); the summary counts them. Warns once."""
    dropped_caption = np.isin(split.caption_image, np.asarray(dropped, dtype=np.int64))
    caption_of = np.nonzero(~dropped_caption)[0]  # a readable pair's index in the whole split
    image_of = np.setdiff1d(np.arange(split.num_images), dropped)
    text_bank = np.arange(len(split), dtype=np.int64)
    text_bank[caption_of] = caption_of[bank.text_bank]
    image_bank = np.searchsorted(split.caption_image, np.arange(split.num_images)).astype(np.int64)  # its 1st pair
    image_bank[image_of] = caption_of[bank.image_bank]
    full = np.zeros(len(split), dtype=np.float64)
    full[caption_of] = p_clean
    threshold = summary["clean_threshold"]
    summary = {**summary, **bank_quality(full, threshold, noise_mask),
               "unreadable_images": len(dropped), "unreadable_pairs": int(dropped_caption.sum()),
               "self_image_fraction": float(np.mean(split.caption_image[image_bank] == np.arange(split.num_images))),
               "self_text_fraction": float(np.mean(text_bank == np.arange(len(split))))}
    i = dropped[0]
    log.warning(f"memory bank: left out {len(dropped)} unreadable training image(s) and their "
                f"{int(dropped_caption.sum())} pair(s) (--skip_unreadable_images), e.g. {split.image_paths[i]} "
                f"({split.describe_image(i)}): {D.decode_error(split.image_paths[i])}; their pairs count as not clean")
    return BankIndex(image_bank=image_bank, text_bank=text_bank), summary, full


def build_bank(inputs: BankInputs, model, train_split, noise_mask, preprocess, tokenizer, device, autocast, progress: bool,
               provenance: Dict, info: Optional[DistInfo] = None, bank_dir: Optional[Path] = None,
               model_name: str = "the initial model") -> Optional[BankIndex]:
    """Encode the training set with ``model`` (each rank of ``info`` its share), then on rank 0: the GMM,
    the bank and its files in ``bank_dir`` (by default the dataset's memory-bank folder). Returns the
    bank on rank 0, None on the others."""
    info = info or DistInfo()
    log.info(f"memory bank: encoding {train_split.num_images} images / {len(train_split)} captions with {model_name}"
             + (f" ({info.world_size} processes)" if info.enabled else ""))
    from npc.evaluation import encode_split
    from npc.model import logit_scale

    t0 = time.perf_counter()
    d, b = inputs.data, inputs.bank
    readable, dropped = (D.readable_split(train_split, skip=True) if d.skip_unreadable_images
                         else (train_split, []))  # without the flag, an unreadable image stops the encoding
    img, txt = encode_split(model, readable, preprocess, tokenizer, batch_size=inputs.encode_batch_size,
                            device=device, autocast=autocast, num_workers=inputs.num_workers,
                            progress=progress and info.is_main, desc="bank", info=info, report=log.info)
    encoded = time.perf_counter() - t0
    if not info.is_main:
        return None
    bank, summary, p_clean = build_memory_bank(img, txt, readable, logit_scale(model).item(),
                                               batch_size=b.bank_batch_size, clean_threshold=b.clean_threshold,
                                               noise_mask=noise_mask if not dropped else None, seed=b.bank_seed)
    if dropped:
        bank, summary, p_clean = with_unreadable_images(bank, summary, p_clean, train_split, dropped, noise_mask)
    summary.update(provenance)
    bank_dir = bank_dir_for(d, inputs.model) if bank_dir is None else bank_dir
    paths = save_bank(bank, bank_dir, d.noise_ratio, d.noise_mode, summary, p_clean=p_clean)
    save_pclean_csv(p_clean, b.clean_threshold, train_split, bank_dir, d)
    msg = f"memory bank: {summary['n_clean']} of {summary['n_pairs']} pairs clean (p>{b.clean_threshold})"
    if isinstance(summary.get("precision"), str):
        msg += f", precision and recall {summary['precision']}"
    elif "precision" in summary:
        msg += f", precision {summary['precision']:.3f} recall {summary['recall']:.3f} against the noise mask"
    log.info(msg + f"; wrote {paths[0]} and {paths[1].name} (encoding {encoded:.1f} s, the rest "
                   f"{time.perf_counter() - t0 - encoded:.1f} s)")
    check = summary["self_check"]
    (log.info if check["can_see"] else log.warning)(f"memory bank: {check['message']}")
    return bank
