"""Synthetic noisy correspondence: build (or reuse) the noisy copy of ``train_caps.txt``.

Two protocols exist in the field and their results are NOT comparable, so the mode is part of the
file name and of every log line:

* ``caption`` (NPC, NCR, BiCro, PCME++; the default): a fraction of the caption LINES is shuffled
  among themselves with numpy's global generator, exactly as the reference release does, so the
  same seed and input give a file byte-identical to the release's ``<r>_noise_train_caps.txt``.
* ``image`` (DECL, RCL, L2RM): a fraction of the IMAGES is chosen and each chosen image receives
  the whole caption block of another chosen image, so all ``num_anns`` captions become wrong.
  Written as ``<r>_imgnoise_train_caps.txt`` so it can never be mistaken for the caption file.

A caption is noisy when its line differs from the same line of ``train_caps.txt`` (a shuffled
caption that lands on its own slot, or a duplicate caption, is clean). The noise mask (True =
noisy) is saved beside the caption file as ``<stem>_mask.npy``.

Every file is written through :mod:`npc.io` (temporary file + rename), so an interrupted run
never leaves a truncated caption file that a later run would reuse.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from npc.errors import ConfigError, MissingFileError, UserError
from npc.io import atomic_save_npy, atomic_write_json, atomic_write_lines, file_sha256, read_json
from npc.locks import file_lock

__all__ = [
    "DEFAULT_SEED", "NOISE_MODES", "TRAIN_CAPS", "NoisySplitError",
    "read_caption_lines", "caption_shuffle", "image_shuffle", "noise_mask",
    "ratio_tag", "noisy_caps_path", "noise_mask_path", "noise_info_path", "find_noisy_caps", "ensure_noisy_split",
]

PathLike = Union[str, os.PathLike]

DEFAULT_SEED = 99                 # the release's seed
NOISE_MODES = ("caption", "image")
TRAIN_CAPS = "train_caps.txt"
_FILE_SUFFIX = {"caption": "_noise_train_caps.txt", "image": "_imgnoise_train_caps.txt"}


class NoisySplitError(UserError, ValueError):
    """An existing noisy caption file cannot be used (e.g. its line count is wrong)."""


# --------------------------------------------------------------------------------------------
# Reading caption files
# --------------------------------------------------------------------------------------------
def read_caption_lines(path: PathLike) -> List[str]:
    """Lines of a UTF-8 caption file with only the line terminator ("\\n" or "\\r\\n") removed.

    Neither ``str.splitlines`` nor text-mode ``readlines`` is used on purpose: both also break on
    characters such as a lone "\\r", "\\x0b" or "\\u2028" that may occur inside a caption, which
    would change the line count and shift every caption after it. Leading / trailing spaces are
    kept so that captions round-trip exactly.
    """
    with open(path, "r", encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines[-1] == "":          # the file ends with a newline (or is empty)
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


# --------------------------------------------------------------------------------------------
# The two noise protocols
# --------------------------------------------------------------------------------------------
def _check_fraction(ratio, name: str = "ratio") -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1], got {ratio!r}")
    r = float(ratio)
    if not 0.0 <= r <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {ratio!r}")
    return r


def caption_shuffle(captions: Sequence[str], ratio: float, seed: int = DEFAULT_SEED) -> List[str]:
    """Caption-level noise, draw for draw the reference release's algorithm (spec section 2).

    With numpy's GLOBAL generator seeded by ``np.random.seed(seed)``:
    ``idx = np.arange(N)``; ``np.random.shuffle(idx)``; ``k = int(ratio * N)``; the captions at
    ``idx[:k]`` are gathered into a numpy array, that array is shuffled with ``np.random.shuffle``,
    and written back to positions ``idx[:k]``. Written one caption a line, the result is
    byte-identical to the release's ``<r>_noise_train_caps.txt`` for the same seed and input.

    The global generator is used (rather than a local ``RandomState``) because that is the
    release's algorithm; its state is saved and restored around the call so the caller's random
    stream is left exactly as it was.
    """
    r = _check_fraction(ratio)
    captions = list(captions)
    n = len(captions)
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        idx = np.arange(n)
        np.random.shuffle(idx)
        k = int(r * n)
        chosen = idx[:k]
        # A fixed-width unicode array, as in the release. It could only alter a caption ending
        # in "\x00" (numpy drops trailing NULs), which text captions never do.
        gathered = np.array([captions[i] for i in chosen])
        np.random.shuffle(gathered)
        out = captions[:]
        for pos, cap in zip(chosen.tolist(), gathered.tolist()):
            out[pos] = cap
    finally:
        np.random.set_state(saved)
    return out


def image_shuffle(captions: Sequence[str], num_anns: int, ratio: float,
                  seed: int = DEFAULT_SEED) -> List[str]:
    """Image-level noise (DECL / RCL protocol): whole caption blocks are moved between images.

    ``k = int(ratio * n_images)`` images are chosen at random (``np.random.default_rng(seed)``,
    so the global numpy stream is not touched) and put in a random order ``c_0 .. c_{k-1}``;
    image ``c_i`` receives the ``num_anns`` captions of image ``c_{(i+1) mod k}``. That cyclic
    shift is a derangement of the chosen images whenever ``k >= 2``, so every caption of every
    chosen image becomes wrong (unless two images happen to share identical captions). With
    ``k == 1`` the single chosen image keeps its own captions and nothing changes.
    """
    r = _check_fraction(ratio)
    if isinstance(num_anns, bool) or not isinstance(num_anns, (int, np.integer)) or num_anns < 1:
        raise ConfigError(f"--num_anns must be a positive integer, got {num_anns!r}")
    captions = list(captions)
    if len(captions) % num_anns:
        raise NoisySplitError(f"{len(captions)} captions are not a whole number of images of --num_anns "
                              f"{num_anns} captions each (--noise_mode image moves whole images' captions)")
    n_img = len(captions) // num_anns
    k = int(r * n_img)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(n_img)[:k].tolist()
    donors = chosen[1:] + chosen[:1]
    out = captions[:]
    for dst, src in zip(chosen, donors):
        out[dst * num_anns:(dst + 1) * num_anns] = captions[src * num_anns:(src + 1) * num_anns]
    return out


def noise_mask(clean_captions: Sequence[str], noisy_captions: Sequence[str]) -> np.ndarray:
    """Boolean array, True where the noisy line differs from the clean line at the same index."""
    if len(clean_captions) != len(noisy_captions):
        raise ValueError(f"caption lists differ in length: {len(clean_captions)} clean vs "
                         f"{len(noisy_captions)} noisy")
    return np.fromiter((a != b for a, b in zip(clean_captions, noisy_captions)),
                       dtype=bool, count=len(clean_captions))


# --------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------
def _check_mode(mode: str) -> str:
    if mode not in NOISE_MODES:
        raise ConfigError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")
    return mode


def noise_ratio_arg(text: str):
    """The one check of a ``--noise_ratio`` flag (every script's argparse type): a number in [0, 1), kept
    as typed (``0`` an int, ``0.2`` a float), since file names carry ``str()`` of the ratio (:func:`ratio_tag`)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--noise_ratio must be a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"--noise_ratio must be in [0, 1), got {text}")
    return value


def ratio_tags(noise_ratio) -> List[str]:
    """The spellings a file of this ratio may carry, the given one first: for a zero ratio both the
    release's ``0`` (its integer default) and ``0.0`` (an explicit ``--noise_ratio 0`` as a float)."""
    tags = [ratio_tag(noise_ratio)]
    if float(noise_ratio) == 0:
        tags += [t for t in ("0", "0.0") if t not in tags]
    return tags


def ratio_tag(noise_ratio) -> str:
    """The ratio as it appears in file names: Python's ``str()`` of the value as given.

    ``0.2 -> "0.2"``, ``0 -> "0"`` (the release's default), ``0.0 -> "0.0"`` (an explicit
    ``--noise_ratio 0`` parsed as float). The two zero spellings are both accepted when looking
    for files (:func:`find_noisy_caps`).
    """
    if isinstance(noise_ratio, bool) or not isinstance(noise_ratio, numbers.Real):
        raise TypeError(f"noise ratio must be a number, got {noise_ratio!r}")
    return str(noise_ratio)


def noisy_caps_path(ann_dir: PathLike, noise_ratio, mode: str = "caption", prefix: str = "") -> Path:
    """``ann_dir/<r>_noise_train_caps.txt`` (caption mode, the release's name) or
    ``ann_dir/<r>_imgnoise_train_caps.txt`` (image mode); ``prefix`` goes before the name (a CSV
    dataset's files beside its CSV: ``<stem>.<r>_noise_train_caps.txt``)."""
    return Path(ann_dir) / f"{prefix}{ratio_tag(noise_ratio)}{_FILE_SUFFIX[_check_mode(mode)]}"


def noise_mask_path(caps_path: PathLike) -> Path:
    """The mask file beside a noisy caption file: same stem + ``_mask.npy``."""
    p = Path(caps_path)
    return p.with_name(f"{p.stem}_mask.npy")


def noise_info_path(caps_path: PathLike) -> Path:
    """The provenance file beside a noisy caption file: same stem + ``_info.json``."""
    p = Path(caps_path)
    return p.with_name(f"{p.stem}_info.json")


def find_noisy_caps(ann_dir: PathLike, noise_ratio, mode: str = "caption", prefix: str = "") -> Optional[Path]:
    """The existing noisy caption file for this ratio and mode, or None.

    For a zero ratio both spellings the release produces are accepted (``0_...`` from its integer
    default, ``0.0_...`` from an explicit ``--noise_ratio 0``); the spelling given is tried first.
    """
    for tag in ratio_tags(noise_ratio):
        p = Path(ann_dir) / f"{prefix}{tag}{_FILE_SUFFIX[_check_mode(mode)]}"
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------------------------
# Build or reuse
# --------------------------------------------------------------------------------------------
def _validate_noise_ratio(noise_ratio) -> float:
    if isinstance(noise_ratio, bool) or not isinstance(noise_ratio, numbers.Real):
        raise ConfigError(f"--noise_ratio must be a number in [0, 1), got {noise_ratio!r}")
    r = float(noise_ratio)
    if math.isnan(r) or not 0.0 <= r < 1.0:
        raise ConfigError(f"--noise_ratio must be in [0, 1), got {noise_ratio!r}")
    return r


def _load_mask(path: Path, n: int) -> Optional[np.ndarray]:
    """The saved mask if it is readable, boolean and of length ``n``; else None."""
    if not path.is_file():
        return None
    try:
        m = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if m.dtype != np.bool_ or m.shape != (n,):
        return None
    return m


def ensure_noisy_split(ann_dir: PathLike, noise_ratio, *, seed: int = DEFAULT_SEED,
                       mode: str = "caption", num_anns: int = 5, force: bool = False,
                       log: Callable[[str], None] = print, prefix: str = "",
                       rebuild_command: Optional[str] = None) -> Tuple[Path, np.ndarray]:
    """Return ``(path of the noisy training captions, noise mask)``, building the file if needed.

    Args:
        ann_dir: the annotation folder, ``<dataset root>/annotations/scan_split``.
        noise_ratio: fraction in [0, 1); its ``str()`` names the file (see :func:`ratio_tag`).
        seed: seed of the noise (99, the release's, by default). Only used when building.
        mode: ``"caption"`` (release protocol) or ``"image"`` (DECL/RCL protocol).
        num_anns: captions per image; only used by image mode.
        force: rebuild the file even if it exists (atomically replacing it and its mask).
        log: called with one human-readable line per action.
        prefix: of every file name: ``<prefix>train_caps.txt`` is the clean file, the noisy one
            ``<prefix><r>_noise_train_caps.txt`` (a CSV dataset: ``<csv stem>.``).
        rebuild_command: how the user names this data to construct_noise.py (default: ``python
            construct_noise.py --dataset_root <the dataset's root>``), for the messages.

    Behaviour:
        * ratio 0: ``train_caps.txt`` itself and an all-False mask; nothing is written.
        * file exists (and not ``force``): its ``<stem>_info.json`` records what it was built
          from (fingerprint of ``train_caps.txt``, ratio, mode, seed). Built from another
          ``train_caps.txt``: rebuilt. Built with another seed: :class:`NoisySplitError` naming the
          flag and the command that rebuilds it. Otherwise reused; its line count must equal
          ``train_caps.txt``'s, otherwise :class:`NoisySplitError` naming both files. The mask is
          derived by comparing with ``train_caps.txt``; a saved mask that is missing (files
          downloaded from the release have none), unreadable or disagrees with the files is
          (re)written. A file without info (the release's) gets one whose seed is ``null``.
        * file missing: built with ``mode``/``seed``, written atomically with its mask and info,
          under a lock that makes a concurrent builder wait and then reuse the result.

    Raises:
        ValueError: ratio outside [0, 1) (message names ``--noise_ratio``) or unknown mode.
        FileNotFoundError: ``train_caps.txt`` is missing.
        NoisySplitError: an existing noisy file has the wrong number of lines or another seed.
    """
    r = _validate_noise_ratio(noise_ratio)
    _check_mode(mode)
    ann_dir = Path(ann_dir)
    train_path = ann_dir / f"{prefix}{TRAIN_CAPS}"
    if not train_path.is_file():
        raise MissingFileError(f"training captions not found: {train_path}")
    if r == 0:
        log(f"noise ratio 0: using the clean training captions {train_path}")
        return train_path, np.zeros(len(read_caption_lines(train_path)), dtype=bool)
    build = dict(noise_ratio=noise_ratio, seed=seed, mode=mode, num_anns=num_anns, log=log, prefix=prefix)
    found = None if force else _reusable(ann_dir, train_path, **build, rebuild_command=rebuild_command)
    if found is not None:
        return found
    # Only a build takes the lock (a read-only dataset with its noisy files stays usable); a
    # process that waited for another's build finds its file ready.
    with file_lock(ann_dir / f".{noisy_caps_path(ann_dir, noise_ratio, mode, prefix).name}.lock",
                   f"the noisy split of {ann_dir}", wait=True, log=log):
        found = None if force else _reusable(ann_dir, train_path, **build, rebuild_command=rebuild_command)
        return found if found is not None else _build(ann_dir, train_path, **build)


def _reusable(ann_dir: Path, train_path: Path, *, noise_ratio, seed: int, mode: str, num_anns: int,
              log, prefix: str = "", rebuild_command: Optional[str] = None) -> Optional[Tuple[Path, np.ndarray]]:
    """The existing noisy split if it was built from this ``train_caps.txt`` with this seed; None to build."""
    existing = find_noisy_caps(ann_dir, noise_ratio, mode, prefix)
    if existing is None:
        return None
    clean = read_caption_lines(train_path)
    n = len(clean)
    source = file_sha256(train_path)
    info_path = noise_info_path(existing)
    built = read_json(info_path)
    if built is not None and built.get("sha256") != file_sha256(existing):
        built = None  # the caption file was replaced after its info was written: its origin is unknown
    if built is not None and built.get("source_sha256") != source:
        log(f"{existing.name} was built from another {TRAIN_CAPS} (it changed since): rebuilding it")
        return None
    if built is not None and built.get("seed") is not None and built["seed"] != seed:
        raise NoisySplitError(
            f"{existing} was built with noise seed {built['seed']}, this run asks for {seed}: pass "
            f"--noise_seed {built['seed']} (construct_noise.py: --seed), or rebuild it with "
            f"{rebuild_command or f'python construct_noise.py --dataset_root {ann_dir.parent.parent}'} "
            f"--noise_ratio {noise_ratio} --noise_mode {mode} --seed {seed} --force (its memory bank is then rebuilt "
            f"too)")
    noisy = read_caption_lines(existing)
    if len(noisy) != n:
        raise NoisySplitError(
            f"{existing} has {len(noisy)} lines but {train_path} has {n}; the noisy file "
            f"does not belong to these training captions. Delete it (or rebuild with "
            f"construct_noise.py --force) to regenerate it.")
    mask = noise_mask(clean, noisy)
    mask_path = noise_mask_path(existing)
    saved = _load_mask(mask_path, n)
    if saved is None:
        atomic_save_npy(mask_path, mask)
        log(f"derived noise mask from {existing.name} vs {TRAIN_CAPS}; wrote {mask_path}")
    elif not np.array_equal(saved, mask):
        atomic_save_npy(mask_path, mask)
        log(f"warning: {mask_path} disagreed with {existing.name}; rewrote it")
    if built is None:  # e.g. downloaded from the release: the seed it was built with is unknown
        _write_info(existing, train_path, source, noise_ratio, None, mode, num_anns, mask)
        log(f"{existing.name} has no record of its noise seed (built elsewhere); recorded its origin as unknown "
            f"in {info_path.name}")
    log(f"reusing {existing} ({mode}-level noise file, {int(mask.sum())}/{n} lines noisy)")
    return existing, mask


def _write_info(path: Path, train_path: Path, source: str, noise_ratio, seed, mode: str, num_anns: int,
                mask: np.ndarray) -> None:
    atomic_write_json(noise_info_path(path), {
        "source": train_path.name, "source_sha256": source, "noise_ratio": ratio_tag(noise_ratio), "mode": mode,
        "seed": seed, "num_anns": num_anns, "n_lines": int(mask.size), "n_noisy": int(mask.sum()),
        "sha256": file_sha256(path)})


def _build(ann_dir: Path, train_path: Path, *, noise_ratio, seed: int, mode: str, num_anns: int, log,
           prefix: str = "") -> Tuple[Path, np.ndarray]:
    clean = read_caption_lines(train_path)
    r = float(noise_ratio)
    if mode == "caption":
        noisy = caption_shuffle(clean, r, seed=seed)
    else:
        noisy = image_shuffle(clean, num_anns, r, seed=seed)
    path = noisy_caps_path(ann_dir, noise_ratio, mode, prefix)
    mask = noise_mask(clean, noisy)
    # Caption file, then mask, then info: a run that dies in between leaves no info that vouches for
    # a half-written set (the next run derives the mask or rebuilds).
    atomic_write_lines(path, noisy)
    atomic_save_npy(noise_mask_path(path), mask)
    _write_info(path, train_path, file_sha256(train_path), noise_ratio, seed, mode, num_anns, mask)
    log(f"wrote {path} ({mode}-level noise, ratio {ratio_tag(noise_ratio)}, seed {seed}: "
        f"{int(mask.sum())}/{len(clean)} lines noisy) and {noise_mask_path(path).name}")
    return path, mask
