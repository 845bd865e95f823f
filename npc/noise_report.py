"""Which pairs of a training split look mismatched: a noise report (docs/own_data.md).

Every training pair is scored by the detectors of this project that need no training, from one
encoding of the split with the model under study:

* ``p_clean``: the memory bank's GMM p(clean), computed by the bank's own functions
  (:func:`npc.memory_bank.per_sample_losses`, :func:`npc.memory_bank.clean_probability_and_fit`) with the bank's
  settings (``--bank_batch_size``, ``--bank_seed``): the numbers of ``<r>_mbank_pclean.npy`` built
  with the same model and flags.
* ``cosine``: the cosine of the pair's image and caption features (DataComp's CLIP score).
* ``osa_score``: OSA's debiased score, ``logit_scale * cosine - shift``, the shift estimated as a
  ``--method osa`` run estimates it (:func:`npc.osa.random_shift`, ``--batch_size`` random inputs drawn
  from ``--seed``). It is the cosine moved and scaled, so it ranks the pairs as the cosine does; what
  it adds is its zero: OSA gives weight 0 to every pair at or below it.

The report folder (:func:`write_report`) holds ``pairs.csv`` (one row per pair, most suspicious first;
columns in :data:`COLUMNS`), ``report.json`` (counts, the GMM's fit, each detector's ROC-AUC and mean
noise rank when the split has a ground-truth noise mask, timings) and ``index.html`` (one page, every
image embedded as a data URI, no network). The folder is built beside its target and renamed into
place: it appears complete or not at all.

Memory stays linear in the number of pairs: features of every image and caption (n x d floats), and
the best captions of the shown images are found by matrix products over chunks of captions (the
n x n similarity matrix is never built).
"""
from __future__ import annotations

import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from npc.pair_table import user_images  # noqa: F401  (where callers have found it)
from npc.report_page import (COLUMNS, DETECTORS, ReportData, ReportError, _num, check_out_folder,  # noqa: F401
                             detector_metrics, ranks_of, write_report)

log = logging.getLogger("npc")

# ----------------------------------------------------------------------------- scores

@dataclass
class PairScores:
    cosine: np.ndarray          # (n,) float64
    p_clean: np.ndarray         # (n,) float64
    osa_score: np.ndarray       # (n,) float64
    losses: np.ndarray          # (n,) per-sample InfoNCE within the bank's batches (the GMM's input)
    gmm: Dict                   # the GMM's fit, in min-max scaled loss units
    osa_shift: float
    logit_scale: float

    def detector(self, name: str) -> np.ndarray:
        return getattr(self, name)


def pair_cosines(img: torch.Tensor, txt: torch.Tensor, caption_image: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Cosine of every pair (features L2-normalized): ``<img[caption_image[j]], txt[j]>``."""
    ci = torch.as_tensor(caption_image, device=img.device)
    out = [(img[ci[s:s + chunk]] * txt[s:s + chunk]).sum(dim=1).double().cpu() for s in range(0, len(ci), chunk)]
    return torch.cat(out).numpy() if out else np.empty(0)


def score_pairs(img: torch.Tensor, txt: torch.Tensor, caption_image: np.ndarray, *, scale: float,
                bank_batch_size: int, bank_seed: int, osa_shift: float) -> PairScores:
    """Every detector's score of every pair, from the split's features."""
    from npc import memory_bank as mb

    losses = mb.per_sample_losses(img, txt, caption_image, scale, bank_batch_size)
    p_clean, fit = mb.clean_probability_and_fit(losses, seed=bank_seed)
    cosine = pair_cosines(img, txt, caption_image)
    fit.update(loss_min=float(losses.min()), loss_max=float(losses.max()))
    return PairScores(cosine=cosine, p_clean=p_clean, osa_score=scale * cosine - osa_shift, losses=losses, gmm=fit,
                      osa_shift=float(osa_shift), logit_scale=float(scale))


def suspicion_order(p_clean: np.ndarray, cosine: np.ndarray) -> np.ndarray:
    """Pair indices, most suspicious first: p(clean) ascending, ties by cosine ascending, then by index."""
    return np.lexsort((np.arange(len(p_clean)), cosine, p_clean))


def best_captions(queries: torch.Tensor, txt: torch.Tensor, k: int, chunk: int = 32768
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` captions most similar (cosine) to each query image: (indices, cosines), best first.
    Chunks of captions: memory ``len(queries) x chunk``, never ``n x n``."""
    k = min(k, txt.shape[0])
    best_v = torch.empty(queries.shape[0], 0, device=queries.device)
    best_i = torch.empty(queries.shape[0], 0, dtype=torch.int64, device=queries.device)
    for start in range(0, txt.shape[0], chunk):
        sims = queries @ txt[start:start + chunk].t()
        v, i = sims.topk(min(k, sims.shape[1]), dim=1)
        best_v, pos = torch.cat([best_v, v], dim=1).topk(k, dim=1)
        best_i = torch.cat([best_i, i + start], dim=1).gather(1, pos)
    return best_i.cpu().numpy(), best_v.double().cpu().numpy()


# ----------------------------------------------------------------------------- the command

def versions() -> Dict[str, str]:
    import open_clip

    return {"torch": torch.__version__, "open_clip": open_clip.__version__, "python": platform.python_version()}


def clean_captions_of(source, split) -> Optional[List[str]]:
    """The training captions before the noise (the same pairs in the same order), for a split this project
    made noisy (``source``: its data source); None when there is no noise of this project's."""
    if float(source.data.noise_ratio) == 0:
        return None
    clean = source.load_split("train", check_images=False).captions
    return clean if len(clean) == len(split.captions) else None


def load_runs(run_dirs: Sequence[str], split) -> Dict[str, object]:
    """``--run DIR``: each run's per-pair weights, checked to be of this training split."""
    from npc.pair_weights import load_pair_weights, split_fingerprint

    fingerprint = split_fingerprint(split)
    runs = {}
    for d in run_dirs:
        pw = load_pair_weights(d)
        if pw.weights.shape[1] != len(split) or pw.split_sha256 != fingerprint:
            raise ReportError(f"--run {d}: {pw.path.name} was written for another training split ({pw.weights.shape[1]} "
                              f"pairs; this one has {len(split)}): give the run's dataset flags and --noise_ratio")
        name = Path(d).resolve().name if Path(d).is_dir() else Path(d).resolve().parent.name
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"
        base, k = name, 2
        while name in runs:
            name, k = f"{base}_{k}", k + 1
        runs[name] = pw
    return runs


def run(cfg, *, ckpt_path: Optional[Path] = None, ckpt=None, command: str = "") -> Dict:
    """``find_noisy_pairs.py``: score every training pair of the dataset of ``cfg`` (its configuration, built by
    :func:`npc.params.parse_args` for the report) with its model (``ckpt_path``/``ckpt``: the checkpoint to load,
    already read) and write the report folder."""
    from npc.demo import demo_base_path
    from npc.distributed import DistInfo
    from npc.evaluation import encode_split
    from npc.model import RANDOM_INIT_SEED, create_model, load_checkpoint_weights, logit_scale
    from npc.osa import random_shift
    from npc.run_setup import prepare_demo, setup_logging, show_progress
    from npc.self_check import separability
    from npc.sources import source_for
    from npc.train_utils import autocast_for, resolve_device, resolve_precision

    rep, source = cfg.report, source_for(cfg.data)
    setup_logging(None, DistInfo())
    check_out_folder(rep.out)  # before anything is computed
    t_start = time.perf_counter()
    progress = show_progress(cfg.run)
    device = resolve_device(cfg.run.device)
    precision = resolve_precision(cfg.optim.precision, device, cfg.data.dataset)
    pretrained = cfg.model.pretrained
    if ckpt_path is not None and (pretrained == "demo-base" or os.path.isfile(str(pretrained))):
        pretrained = "none"  # every weight comes from the checkpoint
    base_path = prepare_demo(cfg.data, cfg.model, cfg.run.device, progress, base=pretrained == "demo-base")
    if source.dataset.ships_base and base_path is None and pretrained == "demo-base":
        base_path = demo_base_path(Path(cfg.model.pretrained_dir), cfg.model.vision_model, cfg.data.dataset_root)
    model, preprocess, tokenizer = create_model(cfg.model.vision_model, pretrained, precision=precision, device=device,
                                                context_length=cfg.model.context_length, demo_base_path=base_path,
                                                init_seed=RANDOM_INIT_SEED)
    if ckpt_path is not None:
        load_checkpoint_weights(model, ckpt_path, ckpt=ckpt)
    model.eval()
    from npc.decisions import load_decided_train

    split, mask, decided = load_decided_train(source, cfg.data, log=log.info)
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    runs = load_runs(rep.runs or [], split)
    weights = str(ckpt_path) if ckpt_path is not None else str(cfg.model.pretrained)
    log.info(f"noise report: {len(split)} pairs / {split.num_images} images, model {cfg.model.vision_model} ({weights}), "
             f"device {device}, {precision}")
    t_setup = time.perf_counter()
    img, txt = encode_split(model, split, preprocess, tokenizer, batch_size=cfg.evaluation.eval_batch_size, device=device,
                            autocast=autocast_for(precision, device), num_workers=cfg.data.num_workers,
                            progress=progress, desc="report", report=log.info)
    t_encode = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.optim.seed)
    shift = random_shift(model, max(1, cfg.optim.batch_size), generator=gen, device=device)
    scores = score_pairs(img, txt, split.caption_image, scale=logit_scale(model).item(),
                         bank_batch_size=cfg.bank.bank_batch_size, bank_seed=cfg.bank.bank_seed, osa_shift=shift)
    order = suspicion_order(scores.p_clean, scores.cosine)
    check = separability(img, txt, split.caption_image, scores.p_clean, scores.gmm, what="these pairs")
    (log.info if check["can_see"] else log.warning)(f"noise report: {check['message']}")
    t_score = time.perf_counter()
    top = order[:rep.top]
    candidates = best_captions(img[torch.as_tensor(split.caption_image[top], device=img.device)], txt,
                               rep.candidates) if rep.candidates > 0 and len(top) else None
    t_cand = time.perf_counter()
    log.info(f"noise report: scored {len(split)} pairs (encoding {t_encode - t_setup:.1f} s, scores "
             f"{t_score - t_encode:.1f} s, candidate captions {t_cand - t_score:.1f} s)")
    lines = (split.source_lines if split.source_lines is not None else np.arange(1, len(split) + 1))
    meta = {
        "dataset": {"name": cfg.data.dataset, "noise_ratio": str(cfg.data.noise_ratio), "noise_mode": cfg.data.noise_mode,
                    "train": source.describe(), "format": source.format,
                    "captions_file": str(split.caps_file),
                    # what the key column of every per-pair file is (Split.keys, defined by the data source)
                    "key": {"name": split.key_name, "meaning": source.key_meaning}},
        "model": {"vision_model": cfg.model.vision_model, "weights": weights, "precision": precision},
        "settings": {"bank_batch_size": cfg.bank.bank_batch_size, "bank_seed": cfg.bank.bank_seed,
                     "eval_batch_size": cfg.evaluation.eval_batch_size, "osa_batch_size": cfg.optim.batch_size,
                     "osa_seed": cfg.optim.seed, "top": rep.top, "candidates": rep.candidates,
                     **({"pair_decisions_sha256": decided["sha256"]} if decided else {})},
        **({"pair_decisions": decided} if decided else {}),
        "timing": {"device": str(device), "threads": torch.get_num_threads(),
                   "setup_s": round(t_setup - t_start, 3), "encode_s": round(t_encode - t_setup, 3),
                   "score_s": round(t_score - t_encode, 3), "candidates_s": round(t_cand - t_score, 3)},
        "self_check": check, "command": command, "versions": versions(),
    }
    d = ReportData(split=split, scores=scores, clean_threshold=cfg.bank.clean_threshold, order=order,
                   lines=np.asarray(lines), images=user_images(split, cfg.data.dataset_root),
                   noise_mask=mask, clean_captions=clean_captions_of(source, split) if mask is not None else None,
                   runs=runs, candidates=candidates, top=rep.top, trusted=rep.trusted, meta=meta)

    def finish(summary: Dict) -> None:
        tm = summary["timing"]
        scaled = tm["encode_s"] + tm["score_s"] + tm["candidates_s"] + tm["write_s"]
        tm["s_per_1000_pairs"] = round(scaled / max(len(split), 1) * 1000, 3)
        tm["total_s"] = round(time.perf_counter() - t_start, 3)

    summary = write_report(rep.out, d, finish)
    tm = summary["timing"]
    msg = f"noise report: wrote {rep.out} (index.html, pairs.csv, report.json) in {tm['total_s']:.1f} s, " \
          f"{tm['s_per_1000_pairs']:.2f} s per 1,000 pairs; {summary['flagged']} pairs flagged"
    if isinstance(summary.get("detectors"), dict):
        msg += "; ROC-AUC " + ", ".join(f"{k} {_num(v['auc'], '.3f')}".replace("&ndash;", "-")
                                        for k, v in summary["detectors"].items())
    log.info(msg)
    sys.stdout.flush()
    return summary
