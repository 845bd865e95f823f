"""OSA's zero-shot noise estimator as pure functions: its shift, debiased score and weights (the ``osa`` method's).

OSA: Hao Li, Jiayang Gu, Jingkuan Song, An Zhang, Lianli Gao, "One-step Noisy Label Mitigation",
arXiv 2410.01944 (code: github.com/leolee99/OSA, ``main_clip.py``, read at commit d64645b).

What the authors' code does, and what is reproduced here:

1. A frozen copy of the initial model is the *estimator* (:func:`frozen_copy`).
2. A *shift* is estimated once, before training: ``batch_size`` random images (``torch.rand``,
   uniform in [0, 1), fed to the model as they are, without the preprocessing's normalization) and
   ``batch_size`` random token sequences (``(torch.rand(B, 77) * 100).long()``: ids 0..99 at every
   position, no start/end tokens) go through the estimator; the shift is the mean of all B x B
   logits (``(logits_per_image.mean() + logits_per_text.mean()) / 2``; both means are equal, one
   matrix being the other's transpose). Logits are CLIP's, ``logit_scale * cos``
   (:func:`random_shift`). Here the sequence length is the model's context length (77 for CLIP).
3. Per training batch, from the estimator's logits: ``x = diag - shift``, negative values set to
   0, divided by the batch's maximum of ``x``; weight ``-x^2 (x - 1)(x + 1) = x^2 (1 - x^2)``
   (``weight_function``; :func:`osa_weights`). The weight is not monotonic in ``x``: it is 0 at
   ``x = 0`` *and* at ``x = 1`` (the batch's most confident pair), largest (1/4) at ``x = 2^-1/2``.
4. Loss: per direction, ``-diag(log_softmax(logits, -1)) * weight``, averaged over the batch (not
   divided by the weights' sum), and the two directions averaged (``CrossEn``; :func:`osa_loss`).

The brief of this module asked for separate i2t / t2i weights from each image's / caption's row.
In the authors' code the weight of each direction is ``weight_function`` of ``logits_per_image``
and of ``logits_per_text`` respectively, which read only the diagonal (shared by the matrix and
its transpose) and its batch maximum: the two are always identical. :func:`osa_weights` returns
both, computed the authors' way, and they are equal.

Deviations (none changes a value the authors' code can produce):

* A batch whose every ``x`` is 0 would give 0/0 = nan weights in the authors' code; here 0.
* :func:`debiased_score` (``diag - shift``, before clipping and normalization) is exposed for
  detection metrics: it is the monotonic quantity OSA's Table 10 thresholds at 0 (noisy pairs
  "caught" are those with ``diag - shift <= 0``, i.e. weight 0); :func:`table10_rates` gives
  the two fractions.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["frozen_copy", "random_shift", "batch_logits", "debiased_score", "osa_weight_function", "weight_of_score",
           "osa_weights", "per_direction_ce", "osa_loss", "table10_rates"]


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The estimator: a deep copy of the initial model, in eval mode, with no parameter trainable."""
    est = copy.deepcopy(model)
    for p in est.parameters():
        p.requires_grad_(False)
    return est.eval()


def batch_logits(model, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """CLIP's ``logits_per_image`` (B x B): ``logit_scale.exp() * img_feat @ txt_feat.T`` (fp32).

    Uses ``npc.model.encode`` (normalized features) and the clamped scale of ``npc.model.logit_scale``
    (identical to ``exp`` for every scale up to CLIP's cap of 100).
    """
    from npc.model import encode, logit_scale

    img, txt = encode(model, images, texts)
    return logit_scale(model).float() * img.float() @ txt.float().t()


@torch.no_grad()
def random_shift(model, batch_size: int, image_size: Optional[int] = None, context_length: Optional[int] = None,
                 vocab: int = 100, generator: Optional[torch.Generator] = None, device="cpu") -> float:
    """Mean logit of random images against random token sequences under the frozen estimator.

    Images: ``torch.rand(B, 3, S, S)`` as they are; texts: ``(torch.rand(B, L) * vocab).long()``;
    ``S``/``L`` default to the model's image size and context length. Returns the mean of the
    B x B logits (OSA's ``thr``).
    """
    model_was_training = model.training
    model.eval()
    if image_size is None:
        size = model.visual.image_size
        image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
    if context_length is None:
        context_length = int(model.context_length)
    rand_img = torch.rand(batch_size, 3, image_size, image_size, generator=generator).to(device)
    rand_txt = (torch.rand(batch_size, context_length, generator=generator) * vocab).long().to(device)
    logits = batch_logits(model, rand_img, rand_txt)
    model.train(model_was_training)
    return float((logits.mean() + logits.t().mean()) / 2)


def debiased_score(logits: torch.Tensor, shift: float) -> torch.Tensor:
    """``diag(logits) - shift``: the pair's logit above the random-pair level (monotonic score)."""
    return logits.diagonal().float() - shift


def osa_weight_function(logits: torch.Tensor, shift: float) -> torch.Tensor:
    """The authors' ``weight_function``: ``x = relu(diag - shift) / max``; ``x^2 (1 - x^2)``."""
    return weight_of_score(debiased_score(logits, shift))


def weight_of_score(score: torch.Tensor, top: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x = relu(score) / top``, ``x^2 (1 - x^2)``; ``top`` defaults to the batch's maximum of
    ``relu(score)`` (several processes pass the global batch's)."""
    x = score.clamp_min(0)
    top = x.max() if top is None else top
    x = x / top if top > 0 else torch.zeros_like(x)
    return -x.pow(2) * (x - 1) * (x + 1)


def osa_weights(logits_per_image: torch.Tensor, shift: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(w_i2t, w_t2i)``: the weight function of ``logits_per_image`` and of its transpose.

    As in the authors' code, where the two are always equal (see the module docstring).
    """
    return osa_weight_function(logits_per_image, shift), osa_weight_function(logits_per_image.t(), shift)


def per_direction_ce(logits_per_image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropies ``-diag(log_softmax(logits, -1))`` of both directions (i2t, t2i)."""
    ce_i2t = -F.log_softmax(logits_per_image.float(), dim=-1).diagonal()
    ce_t2i = -F.log_softmax(logits_per_image.float().t(), dim=-1).diagonal()
    return ce_i2t, ce_t2i


def osa_loss(ce_i2t: torch.Tensor, ce_t2i: torch.Tensor, w_i2t: torch.Tensor, w_t2i: torch.Tensor) -> torch.Tensor:
    """``(mean(w_i2t * ce_i2t) + mean(w_t2i * ce_t2i)) / 2``: weighted, NOT renormalized by sum(w)."""
    return ((w_i2t.detach() * ce_i2t).mean() + (w_t2i.detach() * ce_t2i).mean()) / 2


def table10_rates(score, noisy_mask) -> Dict[str, float]:
    """OSA Table 10's two numbers at threshold 0 of the debiased score.

    ``noisy_caught``: fraction of noisy pairs with ``score <= 0`` (weight 0: excluded);
    ``clean_kept``: fraction of clean pairs with ``score > 0``.
    """
    s = np.asarray(score, dtype=np.float64)
    m = np.asarray(noisy_mask, dtype=bool)
    return {"noisy_caught": float((s[m] <= 0).mean()) if m.any() else float("nan"),
            "clean_kept": float((s[~m] > 0).mean()) if (~m).any() else float("nan")}
