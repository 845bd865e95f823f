"""Building the memory bank of a run: reused or built under a lock, each process encoding its share.

Rank 0 decides whether the bank can be reused (npc/bank_provenance.py) and holds the lock; if it must be
built, every rank encodes its share of the training set, rank 0 computes the bank (npc/bank_math.py) and
writes its files (npc/bank_files.py): the same bytes as one process writes.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from npc import data as D
from npc.bank_files import bank_dir_for, bank_paths, load_bank, partial_bank, remove_stale_temporaries, save_bank, \
    save_pclean_csv
from npc.bank_math import bank_quality, build_memory_bank
from npc.bank_provenance import BankInputs, bank_provenance, reusable_bank, say_what_is_replaced
from npc.data import Split
from npc.distributed import DistInfo, barrier, broadcast_object
from npc.errors import UserError
from npc.loaders import BankIndex
from npc.locks import file_lock

log = logging.getLogger("npc")


class Unnormalized(torch.nn.Module):
    """``model`` whose ``encode_image`` / ``encode_text`` return the features as its towers output them, whatever
    ``normalize`` the caller asks (``--bank_recipe release``: the release's bank compares them so). The
    encoding (npc.evaluation.encode_split) calls these two methods of a model without ``token_embedding``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.visual = model.visual

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_image(images, normalize=False)

    def encode_text(self, texts: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_text(texts, normalize=False)


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


def _right_pairs(d, split: Split) -> Optional[np.ndarray]:
    """``--pair_decisions``: the pairs of ``split`` marked right (clean in the bank), else None."""
    if not d.pair_decisions:
        return None
    from npc.decisions import right_pairs

    return right_pairs(d.pair_decisions, split)


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
    release = b.bank_recipe == "release"  # the release compares the features as the model outputs them
    img, txt = encode_split(Unnormalized(model) if release else model, readable, preprocess, tokenizer,
                            batch_size=inputs.encode_batch_size,
                            device=device, autocast=autocast, num_workers=inputs.num_workers,
                            progress=progress and info.is_main, desc="bank", info=info, report=log.info)
    encoded = time.perf_counter() - t0
    if not info.is_main:
        return None
    bank, summary, p_clean = build_memory_bank(img, txt, readable, logit_scale(model).item(),
                                               batch_size=b.bank_batch_size, clean_threshold=b.clean_threshold,
                                               noise_mask=noise_mask if not dropped else None, seed=b.bank_seed,
                                               recipe=b.bank_recipe, known_clean=_right_pairs(d, readable))
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
