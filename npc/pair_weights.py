"""What a training run did to each pair: ``pair_weights.npz`` in the run's folder.

Rank 0 rewrites the file (atomically) at the end of every epoch, before the epoch's checkpoint, so it
holds one row per finished epoch. Arrays (``np.load(path)``, no pickle):

``weights``  float32 (n_epochs, n_pairs): per epoch, the mean weight the method gave each training pair
             over the steps that drew it (in the training split's order, the order of the memory
             bank's ``<r>_mbank_pclean.npy``); NaN where the epoch did not draw the pair (the last,
             incomplete batch of every epoch is dropped).
``epochs``   int64 (n_epochs,): the epochs (1-based) of the rows.
``kind``     what a weight is: ``estimator`` (the method's per-pair weights: NPC's, OSA's, p(clean),
             as logged in ``metrics.jsonl``, whose ``npc.mean_weight`` is the mean of a row over the
             drawn pairs), ``selection`` (a training subset, ``gmm_filter`` / ``oracle_filter``: 1 for
             a pair drawn, 0 for a pair outside the subset) or ``uniform`` (plain CLIP: 1 for a pair drawn).
``method``   the run's ``--method``.
``split_sha256``  fingerprint of the training split (captions and image names, in order): a report
             refuses the file of another split.

``npc_bank_only`` computes and logs NPC's weights but its loss uses none: its file holds the computed
weights, as its log does. Without an estimator, the drawn pairs are those of the epoch's batches
(pairs of images that ``--skip_unreadable_images`` left out still count as drawn).
``pair_weights.csv`` beside it holds the same weights keyed by your own rows: one row per training pair in
your order (for a CSV file, ``line``: its line number there), the image, the caption and a column
``weight_epoch<k>`` per epoch (npc/pair_table.py).

A resumed run keeps the rows of the epochs its checkpoint finished and writes the others again.
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from npc.errors import BadFileError, MissingFileError

from npc.pair_table import user_images, write_pair_csv

FILE_NAME = "pair_weights.npz"
CSV_NAME = "pair_weights.csv"
KINDS = ("estimator", "selection", "uniform")


def split_fingerprint(split) -> str:
    """SHA-256 of a split's captions and image names, in order (which pair is which)."""
    h = hashlib.sha256()
    h.update(json.dumps([list(split.captions), [str(i) for i in split.image_ids],
                         np.asarray(split.caption_image).tolist()]).encode("utf-8"))
    return h.hexdigest()


def epoch_row(n_pairs: int, weights: Optional[np.ndarray] = None, indices: Optional[np.ndarray] = None,
              drawn: Optional[np.ndarray] = None, subset: Optional[np.ndarray] = None) -> np.ndarray:
    """One epoch's row: the mean of ``weights`` per pair of ``indices`` (a pair drawn twice gets the mean),
    or, without weights, 1 for the ``drawn`` pairs and 0 for the pairs outside ``subset``; NaN elsewhere."""
    row = np.full(n_pairs, np.nan, dtype=np.float64)
    if weights is not None:
        idx = np.asarray(indices, dtype=np.int64)
        sums = np.bincount(idx, weights=np.asarray(weights, dtype=np.float64), minlength=n_pairs)
        counts = np.bincount(idx, minlength=n_pairs)
        seen = counts > 0
        row[seen] = sums[seen] / counts[seen]
    else:
        if subset is not None:
            row[:] = 0.0
            row[np.asarray(subset, dtype=np.int64)] = np.nan
        row[np.asarray(drawn, dtype=np.int64)] = 1.0
    return row.astype(np.float32)


def drawn_pairs(sampler) -> np.ndarray:
    """Every pair an :class:`npc.loaders.EpochBatchSampler` draws in its current epoch, over all ranks."""
    from npc.loaders import EpochBatchSampler

    whole = EpochBatchSampler(sampler.n, sampler.global_batch, sampler.seed, 0, 1, drop_last=sampler.drop_last,
                              shuffle=sampler.shuffle, indices=sampler.indices)
    whole.set_epoch(sampler.epoch)
    batches = [np.asarray(b, dtype=np.int64) for b in whole]
    return np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)


@dataclass
class PairWeights:
    weights: np.ndarray   # (n_epochs, n_pairs) float32, NaN = not drawn
    epochs: np.ndarray
    kind: str
    method: str
    split_sha256: str
    path: Path

    def mean_over_epochs(self) -> np.ndarray:
        """Per pair, the mean of its epochs' weights (NaN for a pair no epoch drew)."""
        w = self.weights.astype(np.float64)
        counts = np.isfinite(w).sum(axis=0)
        sums = np.where(np.isfinite(w), w, 0.0).sum(axis=0)
        out = np.full(w.shape[1], np.nan)
        out[counts > 0] = sums[counts > 0] / counts[counts > 0]
        return out


def load_pair_weights(path) -> PairWeights:
    """A run folder's ``pair_weights.npz`` (or the file itself); errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise MissingFileError(f"{path}: no per-pair weights file (a run of this version writes "
                                f"{FILE_NAME} in its folder at the end of every epoch)")
    try:
        with np.load(path, allow_pickle=False) as z:
            pw = PairWeights(weights=z["weights"], epochs=z["epochs"], kind=str(z["kind"]), method=str(z["method"]),
                             split_sha256=str(z["split_sha256"]), path=path)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise BadFileError(f"{path}: not a per-pair weights file of this project ({type(e).__name__}: {e})") from None
    if pw.weights.ndim != 2 or pw.weights.shape[0] != len(pw.epochs) or pw.kind not in KINDS:
        raise BadFileError(f"{path}: malformed per-pair weights file (weights {pw.weights.shape}, "
                         f"{len(pw.epochs)} epochs, kind {pw.kind!r})")
    return pw


def record_epoch(run_dir, epoch: int, split, method: str, sampler, weights: Optional[np.ndarray] = None,
                 indices: Optional[np.ndarray] = None, dataset_root=None) -> Path:
    """Add epoch ``epoch``'s row to ``run_dir/pair_weights.npz`` (rows of later epochs, left by a run
    stopped before its checkpoint, are dropped). ``weights``/``indices``: the epoch's gathered per-step
    weights and pair indices, or None for a method without an estimator (then ``sampler`` says which
    pairs the epoch drew, and its ``indices``, if any, are the training subset)."""
    from npc.io import atomic_write_bytes

    n = len(split)
    if weights is not None:
        kind, row = "estimator", epoch_row(n, weights=weights, indices=indices)
    else:
        subset = getattr(sampler, "indices", None)
        kind = "uniform" if subset is None else "selection"
        row = epoch_row(n, drawn=drawn_pairs(sampler), subset=subset)
    fingerprint = split_fingerprint(split)
    path = Path(run_dir) / FILE_NAME
    rows, epochs = [], []
    if path.is_file():
        try:
            old = load_pair_weights(path)
        except ValueError:
            old = None  # unreadable: written again from this epoch's row
        if old is not None and old.weights.shape[1] == n and old.split_sha256 == fingerprint and old.kind == kind:
            keep = old.epochs < epoch
            rows, epochs = list(old.weights[keep]), list(old.epochs[keep])
    rows.append(row)
    epochs.append(epoch)
    buf = io.BytesIO()
    np.savez_compressed(buf, weights=np.stack(rows).astype(np.float32), epochs=np.asarray(epochs, dtype=np.int64),
                        kind=np.array(kind), method=np.array(method), split_sha256=np.array(fingerprint))
    atomic_write_bytes(path, buf.getvalue())
    write_csv(path.with_name(CSV_NAME), split, np.stack(rows), epochs, user_images(split, dataset_root))
    return path


def write_csv(path, split, weights: np.ndarray, epochs, images) -> Path:
    """``pair_weights.csv``: the same weights, one row per training pair in your order (npc/pair_table.py),
    a column ``weight_epoch<k>`` per epoch (empty: the epoch did not draw the pair)."""
    return write_pair_csv(path, split, images, {f"weight_epoch{int(e)}": w for e, w in zip(epochs, weights)})
