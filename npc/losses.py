"""Per-sample symmetric InfoNCE: the primitive every loss of NPC is built from.

For a batch of B aligned pairs with L2-normalized features, sample i's loss is
``(CE(s * img_i @ txt.T, i) + CE(s * txt_i @ img.T, i)) / 2``: the image-to-text and the
text-to-image cross-entropy of its row, negatives being the other pairs of the batch. It is
returned per sample (``reduction='none'``) and reduced at the call site, since NPC weights it.

With several processes, each holds the rows of its local pairs but the columns of the whole global
batch (``txt_all``/``img_all`` gathered with gradient), and ``offset`` is the global position of its
first local pair; the per-sample losses are then identical to those of one process on the global
batch.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def clip_loss_per_sample(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
                         img_all: Optional[torch.Tensor] = None, txt_all: Optional[torch.Tensor] = None,
                         offset: int = 0) -> torch.Tensor:
    i2t, t2i = _cross_entropies(img, txt, scale, img_all, txt_all, offset)
    return (i2t + t2i) / 2


def _cross_entropies(img, txt, scale, img_all, txt_all, offset):
    img_all = img if img_all is None else img_all
    txt_all = txt if txt_all is None else txt_all
    target = torch.arange(img.shape[0], device=img.device) + offset
    if img.dtype == torch.float16:
        # Pure fp16 weights (--precision fp16): the release's arithmetic, logits and cross-entropy in fp16
        # (its CLIP computes ``logit_scale * image_features @ text_features.t()`` in the features' dtype).
        logits_i2t = scale * img @ txt_all.t()
        # Its logits_per_text is the transpose of that matrix (here: of all images against this rank's captions).
        local = img_all is img and txt_all is txt
        logits_t2i = logits_i2t.t() if local else (scale * img_all @ txt.t()).t()
    else:
        # Logits in fp32: under bf16 autocast the cross-entropy of a 256-way softmax loses precision.
        logits_i2t = scale.float() * img.float() @ txt_all.float().t()
        logits_t2i = scale.float() * txt.float() @ img_all.float().t()
    return (F.cross_entropy(logits_i2t, target, reduction="none"),
            F.cross_entropy(logits_t2i, target, reduction="none"))
