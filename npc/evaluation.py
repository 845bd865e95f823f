"""Encode a split and rank: the evaluation path (metrics themselves live in evaluation_metrics).

Each image is decoded and encoded once (not once per caption); captions are tokenized and encoded
in batches. Everything runs in eval mode under ``no_grad``, on CPU or GPU.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Dict, Optional, Tuple

import torch
from tqdm import tqdm

from data import Split, image_loader
from npc.evaluation_metrics import fold_metrics, retrieval_metrics
from npc.model import encode


@torch.no_grad()
def encode_split(model, split: Split, preprocess, tokenizer, *, batch_size: int = 256, device="cpu",
                 autocast=None, num_workers: int = 0, progress: bool = True, desc: str = "encode"
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalized features: (n_images, d) and (n_captions, d), fp32, on ``device``."""
    autocast = autocast or nullcontext
    was_training = model.training
    model.eval()
    img_feats, txt_feats = [], []
    loader = image_loader(split, preprocess, batch_size, num_workers)
    for images in tqdm(loader, desc=f"{desc} images ({split.name})", disable=not progress, leave=False):
        with autocast():
            img_feats.append(encode(model, images=images.to(device, non_blocking=True))[0].float())
    for start in tqdm(range(0, len(split.captions), batch_size), desc=f"{desc} captions ({split.name})",
                      disable=not progress, leave=False):
        tokens = tokenizer(split.captions[start:start + batch_size]).to(device)
        with autocast():
            txt_feats.append(encode(model, texts=tokens)[1].float())
    model.train(was_training)
    return torch.cat(img_feats), torch.cat(txt_feats)


def evaluate_split(model, split: Split, preprocess, tokenizer, *, folds_1k: bool = False, **kw
                   ) -> Dict[str, Dict[str, float]]:
    """Recall table rows for one split: the full split, and for MSCOCO test also the 1K folds."""
    img, txt = encode_split(model, split, preprocess, tokenizer, **kw)
    sims = img @ txt.t()
    n = split.num_images
    rows = {}
    label = f"{split.name} {n // 1000}K" if n % 1000 == 0 and n >= 1000 else f"{split.name} ({n} images)"
    rows[label] = retrieval_metrics(sims, split.num_anns)
    if folds_1k and n % 1000 == 0 and n > 1000:
        rows[f"{split.name} 1K ({n // 1000}-fold mean)"] = fold_metrics(sims, split.num_anns, folds=n // 1000)
    return rows


def mean_r1(metrics: Dict[str, float]) -> float:
    """The release's model-selection score: (i2t R@1 + t2i R@1) / 2."""
    return (metrics["i2t_r1"] + metrics["t2i_r1"]) / 2


def primary_row(rows: Dict[str, Dict[str, float]]) -> Optional[Dict[str, float]]:
    return next(iter(rows.values()), None)
