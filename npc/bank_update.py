"""``--bank_update N``: a memory bank that learns. Every N epochs the bank (the GMM's p(clean) and the clean
neighbours) is rebuilt from the current model into the run's folder, ``banks/epoch<k>/``, and the run trains
on it from then on (the other methods keep the bank of the initial model throughout)."""
from __future__ import annotations

from typing import Dict

import numpy as np

from npc.bank_build import build_bank
from npc.bank_files import bank_paths, load_bank, load_pclean
from npc.bank_provenance import bank_provenance
from npc.distributed import barrier
from npc.io import read_json
from npc.run_setup import Run, bank_inputs


def update_bank(r: Run, t, epoch: int) -> Dict:
    """The memory bank rebuilt from the current model (``t``: the run's :class:`npc.engine.Trainer`) into the
    run's folder (``banks/epoch<k>/``), with the provenance record of any bank; returns its quality."""
    from npc.detection import weight_auc

    cfg, split = r.cfg, t.dataset.split
    folder = f"banks/epoch{epoch}"
    provenance = bank_provenance(bank_inputs(cfg), split, weights=f"{cfg.run.experiments} after epoch {epoch}")
    build_bank(bank_inputs(cfg), t.model, split, t.noise_mask, t.dataset.preprocess, t.dataset.tokenizer, r.device,
               r.autocast, r.progress, provenance, info=r.info, bank_dir=r.run_dir / folder,
               model_name=f"the model after epoch {epoch}")  # every rank encodes its share, rank 0 writes
    barrier(r.info)
    p_clean = use_bank(r, t, folder)
    built = read_json(bank_paths(r.run_dir / folder, cfg.data.noise_ratio, cfg.data.noise_mode)[2]) or {}
    quality = {k: built[k] for k in ("clean_fraction", "precision", "recall") if k in built}
    if t.noise_mask is not None and 0 < t.noise_mask.sum() < len(t.noise_mask):
        quality["p_clean_auc"] = weight_auc(p_clean, t.noise_mask)
    return quality


def use_bank(r: Run, t, folder: str) -> np.ndarray:
    """Train on the bank in the run's ``folder`` from now on; returns its p(clean)."""
    cfg, split = r.cfg, t.dataset.split
    bank_dir = r.run_dir / folder
    if t.method.uses_bank:
        t.dataset.bank = load_bank(bank_dir, cfg.data.noise_ratio, split, cfg.data.noise_mode)
    p_clean = load_pclean(bank_dir, cfg.data.noise_ratio, len(split), cfg.data.noise_mode)
    t.estimator.bank_changed(p_clean)
    t.bank_in_force = folder
    return p_clean
