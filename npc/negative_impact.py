"""NPC's negative pre-awareness (docs/method.md section 4): the pieces its estimators and every step share.

Here: NPC's weights from a pair's memory-bank losses before and after (:func:`npc_weights`); the grouped
forward every step runs (:func:`encode_groups`: per-pair losses of the batch's pairs and of their
image-side and text-side bank pairs); the siamese copy's update (:func:`sync_siamese_`,
:func:`siamese_step`); the closed-form first-order impact (:func:`first_order_impact`,
:func:`first_order_after`); and the named phases of a step (:func:`phase`, :func:`phase_timings`).
The step itself is :func:`npc.steps.train_step`; the estimators that use these are
:class:`npc.estimators.Siamese` and :class:`npc.estimators.FirstOrder`; the methods that compose them
(``npc_paper``, ``npc_release``, ``npc_first_order``, ...) are in :mod:`npc.methods`.

NPC's step 1 copies the base model A into a siamese A', lets A' take one AdamW step on the batch's mean
contrastive loss, and compares each pair's memory-bank losses before and after: if learning the
batch made a pair's clean neighbours *harder* (ratio of before/after losses < 1), the pair is
likely noisy and is down-weighted, ``w = tanh(ratio)``. Step 2 updates A with the method's objective
(:mod:`npc.steps`: ``paper``, the weighted loss plus the memory-bank loss; ``release``, what the authors'
code computes).

The siamese estimator's options (``--method_opt``): ``impl=naive`` runs A' on its own: bank forwards
of A', forward/backward of A' on the batch, bank forwards of A' again (``encode_groups(dedup=False)``,
the way the reference feeds three image batches per step). ``impl=efficient`` (the default, the same
results) uses that A' equals A before its step: A's forward serves for the bank losses "before" and
its gradient of the unweighted mean loss is A''s gradient: one forward of the distinct images/captions
of batch + banks (the pairs' rows in calls of their own, ``first=("pair",)``, so A''s gradient
back-propagates through those rows only), a second backward pass for A's loss, and one no-grad forward
of the bank items under the stepped A'. Under the ``release`` objective A's gradient is ``mean(w)``
times A''s, so there is no second backward pass at all. ``grad_scale`` scales A''s gradient (4: the
release's), ``state`` keeps A''s AdamW state across steps (``persistent``, as the release does) or
empties it every step (``fresh``).

Work of the efficient paper step, in encoder passes over rows (B pairs, e bank-only rows, k
distinct bank rows): forward B + e, backward B (A') and B + e (A), no-grad forward k. A CLIP step
is forward B, backward B. With every bank entry the pair itself (e = 0, k = B) that is 2x the CLIP
step (a backward pass costs about two forwards); bank entries that are other pairs add to it.

A' is a persistent module whose parameters are overwritten from A with one fused copy each step.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import torch

from npc.distributed import DistInfo, gather_no_grad, gather_with_grad, row_offset
from npc.losses import clip_loss_per_sample
from npc.model import encode, encode_text_parts, logit_scale

GROUPS = ("pair", "bankI", "bankT")
_phase_times: Optional[Dict[str, List[float]]] = None


@contextmanager
def phase(name: str):
    """A named phase of a step: a range in torch.profiler traces, timed inside ``phase_timings()``."""
    with torch.profiler.record_function(name):
        if _phase_times is None:
            yield
            return
        sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
        sync()
        t0 = time.perf_counter()
        yield
        sync()
        _phase_times.setdefault(name, []).append(time.perf_counter() - t0)


@contextmanager
def phase_timings():
    """Collect the wall-clock seconds of each phase of the steps run inside (``{name: [seconds]}``).

    CUDA is synchronized at each phase boundary, which costs a little throughput: for profiling only.
    """
    global _phase_times
    _phase_times, previous = {}, _phase_times
    try:
        yield _phase_times
    finally:
        _phase_times = previous


def npc_weights(bank_img_before: torch.Tensor, bank_img_after: torch.Tensor,
                bank_txt_before: torch.Tensor, bank_txt_after: torch.Tensor, eps: float = 1e-12):
    """``ratio = (lI_before/lI_after + lT_before/lT_after) / 2``; ``w = tanh(ratio)`` if ratio < 1 else 1."""
    ratio = (bank_img_before / bank_img_after.clamp_min(eps) + bank_txt_before / bank_txt_after.clamp_min(eps)) / 2
    weights = torch.where(ratio < 1, torch.tanh(ratio), torch.ones_like(ratio))
    return weights, ratio


def own_row_grads(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor,
                  img_all: Optional[torch.Tensor] = None, txt_all: Optional[torch.Tensor] = None,
                  offset: int = 0):
    """Gradient of each pair's own loss ``l_i`` w.r.t. its own image and text features, in closed form.

    With ``p = softmax_j(s u_i.v_j)`` (image-to-text rows) and ``q = softmax_j(s v_i.u_j)``
    (text-to-image rows) of ``clip_loss_per_sample``'s logits,
    ``dl_i/du_i = s/2 (sum_j p_ij v_j - (2 - q_ii) v_i)`` and
    ``dl_i/dv_i = s/2 (sum_j q_ij u_j - (2 - p_ii) u_i)``: only ``l_i``, not the other pairs' losses
    in which ``u_i``/``v_i`` are negatives. Features are taken as given (the normalized ones).
    """
    img_all = img if img_all is None else img_all
    txt_all = txt if txt_all is None else txt_all
    s = scale.float()
    img, txt, img_all, txt_all = img.float(), txt.float(), img_all.float(), txt_all.float()
    rows = torch.arange(img.shape[0], device=img.device)
    p = torch.softmax(s * img @ txt_all.t(), dim=1)
    q = torch.softmax(s * txt @ img_all.t(), dim=1)
    p_own, q_own = p[rows, rows + offset], q[rows, rows + offset]
    g_img = s / 2 * (p @ txt_all - (2 - q_own)[:, None] * txt)
    g_txt = s / 2 * (q @ img_all - (2 - p_own)[:, None] * img)
    return g_img, g_txt


def first_order_impact(pair_img: torch.Tensor, pair_txt: torch.Tensor, bank_img: torch.Tensor,
                       bank_txt: torch.Tensor, scale: torch.Tensor, lr: float, info: Optional[DistInfo] = None
                       ) -> torch.Tensor:
    """First-order change of each pair's bank-entry loss after a step of size ``lr`` on the pair's own loss.

    A gradient step ``-lr grad l_i`` changes ``l_b`` by about ``-lr <grad l_b, grad l_i>``. With
    gradients w.r.t. the features only, per tower, the parameter inner product is approximated by a
    kernel times the inner product of feature gradients (for a final linear map ``u = W h`` it is
    exactly ``<dl_b/du_b, dl_i/du_i> <h_b, h_i>``); the kernel here is the cosine similarity of the
    two features. Row ``i`` of the ``pair_*`` and ``bank_*`` features is pair ``i`` and its bank
    pair, each scored within its own batch (negatives: the other rows, all ranks). Positive values
    say harm: learning the pair raises its clean neighbour's loss. No gradient flows.
    """
    info = info or DistInfo()
    with torch.no_grad():
        grads = []
        for img, txt in ((pair_img, pair_txt), (bank_img, bank_txt)):
            img, txt = img.detach().float(), txt.detach().float()
            grads.append(own_row_grads(img, txt, scale.detach(), gather_no_grad(img, info),
                                       gather_no_grad(txt, info), offset=row_offset(img, info)))
        (gi_img, gi_txt), (gb_img, gb_txt) = grads
        k_img = (pair_img.float() * bank_img.float()).sum(-1)
        k_txt = (pair_txt.float() * bank_txt.float()).sum(-1)
        return -lr * ((gi_img * gb_img).sum(-1) * k_img + (gi_txt * gb_txt).sum(-1) * k_txt)


def first_order_after(before_I: torch.Tensor, delta_I: torch.Tensor, before_T: torch.Tensor, delta_T: torch.Tensor,
                      info: Optional[DistInfo] = None):
    """Estimated bank losses after learning each pair, from first-order changes ``delta`` (any step size).

    The relative changes ``c = delta / before`` of both sides are centred on their batch medians
    (learning any pair moves every bank loss a little the same way: features share a direction
    per modality, so most noisy pairs also "help" in absolute terms; what tells them apart is that
    they help less than the batch's typical pair), then scaled by ``eta`` so that the batch median
    of ``|c_I + c_T|`` is 1 (the step size drops out): ``after = before * (1 + eta * c)``. With
    :func:`npc_weights` a pair that harms its bank entries more than the batch's median pair gets
    ``w = tanh(ratio) < 1``, the others 1. Medians over the global batch (all ranks).
    """
    info = info or DistInfo()
    c_I, c_T = delta_I / before_I.clamp_min(1e-12), delta_T / before_T.clamp_min(1e-12)
    c_I = c_I - gather_no_grad(c_I, info).median()
    c_T = c_T - gather_no_grad(c_T, info).median()
    eta = 1.0 / gather_no_grad((c_I + c_T).abs(), info).median().clamp_min(1e-12)
    return before_I * (1 + eta * c_I), before_T * (1 + eta * c_T)


def group_losses(img_feats: torch.Tensor, txt_feats: torch.Tensor, batch: Dict[str, torch.Tensor],
                 groups: Sequence[str], scale: torch.Tensor, info: DistInfo) -> Dict[str, torch.Tensor]:
    """Per-sample InfoNCE of each group of pairs; rows index the encoded unique images/captions."""
    out = {}
    for g in groups:
        img = img_feats[batch[f"{g}_img"]]
        txt = txt_feats[batch[f"{g}_txt"]]
        out[g] = clip_loss_per_sample(img, txt, scale, gather_with_grad(img, info), gather_with_grad(txt, info),
                                      offset=row_offset(img, info))
    return out


def _distinct(batch, groups, kind: str, first: Sequence[str]):
    """Distinct rows used by ``groups``: those of the ``first`` groups, then the others."""
    used = torch.unique(torch.cat([batch[f"{g}_{kind}"] for g in groups]))
    if not first:
        return [used]
    head = torch.unique(torch.cat([batch[f"{g}_{kind}"] for g in first]))
    return [head, used[~torch.isin(used, head)]]


def encode_groups(model, batch, groups: Sequence[str], info: DistInfo, dedup: bool = True,
                  first: Sequence[str] = (), features: Optional[Dict] = None):
    """Per-sample losses of ``groups`` under ``model``.

    ``dedup`` encodes only the distinct images/captions the groups use, once each; otherwise every
    group is encoded on its own, the way the reference feeds three image batches per step. The rows
    of the ``first`` groups are encoded in a forward call of their own, so that a gradient of their
    losses alone back-propagates through their rows only. A ``features`` dict receives each group's
    row-aligned ``(image, text)`` features (with ``dedup``).
    """
    if dedup:
        maps, heads, feats = [], [], []
        for kind, key in (("img", "images"), ("txt", "texts")):
            parts = [p for p in _distinct(batch, groups, kind, first) if len(p)]
            rows = torch.cat(parts)
            # Re-point each group's positions at the rows about to be encoded.
            m = torch.empty(batch[key].shape[0], dtype=torch.long, device=rows.device)
            m[rows] = torch.arange(len(rows), device=rows.device)
            maps.append(m)
            if kind == "img":
                f = [encode(model, images=batch[key][p])[0] for p in parts]
            else:
                f = encode_text_parts(model, batch[key], parts)
            heads.append(f[0])
            feats.append(torch.cat(f) if len(f) > 1 else f[0])
        local = {f"{g}_{k}": m[batch[f"{g}_{k}"]] for g in groups for k, m in zip(("img", "txt"), maps)}
        scale = logit_scale(model)
        # The ``first`` groups' rows lead, so their positions index the first part directly; their
        # losses must not depend on the concatenation, or a backward pass of them alone would also
        # run (with zero gradients) through every other part's graph.
        out = group_losses(heads[0], heads[1], local, [g for g in groups if g in first], scale, info)
        out.update(group_losses(feats[0], feats[1], local, [g for g in groups if g not in first], scale, info))
        if features is not None:
            features.update({g: (feats[0][local[f"{g}_img"]], feats[1][local[f"{g}_txt"]]) for g in groups})
        return out
    out = {}
    for g in groups:
        img_f, txt_f = encode(model, batch["images"][batch[f"{g}_img"]], batch["texts"][batch[f"{g}_txt"]])
        n = img_f.shape[0]
        idx = {f"{g}_img": torch.arange(n, device=img_f.device), f"{g}_txt": torch.arange(n, device=img_f.device)}
        out.update(group_losses(img_f, txt_f, idx, (g,), logit_scale(model), info))
    return out


def trainable(model) -> List[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def sync_siamese_(siamese, model) -> None:
    """A' := A with one fused copy over all parameters (no state_dict round trip)."""
    torch._foreach_copy_(trainable(siamese), trainable(model))


def siamese_step(siamese, siamese_opt, grads: Sequence[torch.Tensor], scale: float) -> None:
    """A' steps on ``scale`` times ``grads``; ``grads`` are left as they are (an objective may reuse them)."""
    params = trainable(siamese)
    for p, g in zip(params, grads):
        p.grad = g.detach() * scale if scale != 1 else g.detach()
    siamese_opt.step()
    for p in params:  # the tensors may serve A's step next (release variant): no aliasing
        p.grad = None
