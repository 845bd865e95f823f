"""NPC's training step: negative pre-awareness with a siamese model (docs/method.md section 4).

Step 1 copies the base model A into a siamese A', lets A' take one AdamW step on the batch's mean
contrastive loss, and compares each pair's memory-bank losses before and after: if learning the
batch made a pair's clean neighbours *harder* (ratio of before/after losses < 1), the pair is
likely noisy and is down-weighted, ``w = tanh(ratio)``. Step 2 updates A with the weighted loss
plus the contrastive loss on the memory-bank pairs.

Two variants (``--npc_variant``):

``paper``    per-sample weights ``mean_i(w_i l_i)`` and a memory-bank loss that trains A.
``release``  what the authors' code computes (docs/method.md section 5): ``mean(w) * mean(l)`` (no
             per-sample weighting), the bank loss without gradient (it trains nothing), and the
             siamese gradient doubled (their loss is back-propagated twice; here it is scaled by 2,
             which is the same update without the second backward).

Two implementations with the same results (``--npc_impl``):

``naive``      the straightforward sequence: bank forwards of A', forward/backward of A' on the
               batch, bank forwards of A' again, then forward/backward of A on batch and banks.
``efficient``  since A' equals A before its step, A's forward serves for the bank losses "before"
               and its gradient of the unweighted mean loss is A''s gradient: one forward of the
               distinct images/captions of batch + banks (the pairs' rows in calls of their own,
               so A''s gradient back-propagates through those rows only), a second backward
               pass for A's loss, and one no-grad forward of the bank items under the stepped A'.
               In the release variant A's gradient is ``mean(w)`` times A''s, so there is no
               second backward pass at all.

Work of the efficient paper step, in encoder passes over rows (B pairs, e bank-only rows, k
distinct bank rows): forward B + e, backward B (A') and B + e (A), no-grad forward k. A CLIP step
is forward B, backward B. With every bank entry the pair itself (e = 0, k = B) that is 2x the CLIP
step (a backward pass costs about two forwards); bank entries that are other pairs add to it.

A' is a persistent module whose parameters are overwritten from A with one fused copy each step;
it keeps its own AdamW state across steps, as the release does.
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from typing import Dict, List, Optional, Sequence

import torch

from npc.distributed import DistInfo, all_reduce_grads_, gather_no_grad, gather_with_grad
from npc.losses import clip_loss_per_sample
from npc.model import encode, encode_text_parts, logit_scale

GROUPS = ("pair", "bankI", "bankT")
_phase_times: Optional[Dict[str, List[float]]] = None


@contextmanager
def _phase(name: str):
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
                                       gather_no_grad(txt, info), offset=info.rank * img.shape[0]))
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
                                      offset=info.rank * img.shape[0])
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


def _global_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return x.mean()
    return gather_no_grad(x.detach(), info).mean()


def finish_step(model, optimizer, loss: torch.Tensor, info: DistInfo, grad_clip: float) -> float:
    """Backward, average over ranks, clip, step. Returns the pre-clip gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = trainable(model)
    all_reduce_grads_(params, info)
    return _clip_and_step(params, optimizer, grad_clip)


def _clip_and_step(params: Sequence[torch.Tensor], optimizer, grad_clip: float) -> float:
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    return float(norm)


def _siamese_step(siamese, siamese_opt, grads: Sequence[torch.Tensor], scale: float) -> None:
    params = trainable(siamese)
    for p, g in zip(params, grads):
        g = g.detach()
        if scale != 1:
            g.mul_(scale)  # in place: ``grads`` are fresh tensors of this step
        p.grad = g
    siamese_opt.step()
    for p in params:  # the tensors may serve A's step next (release variant): no aliasing
        p.grad = None


def npc_step(model, siamese, optimizer, siamese_opt, batch: Dict[str, torch.Tensor], *, variant: str = "paper",
             impl: str = "efficient", info: Optional[DistInfo] = None, autocast=None, grad_clip: float = 10.0,
             reweight: bool = True, estimator: str = "siamese", siamese_state: str = "persistent"
             ) -> Dict[str, torch.Tensor]:
    """One NPC update of ``model`` (A); returns per-sample weights, ratios, losses and the total loss.

    ``reweight=False`` is an ablation: the weights are computed and returned but the loss uses 1
    for every pair, leaving the memory-bank loss as the only difference from plain CLIP training.

    ``estimator`` says how each pair's bank losses "after" are obtained. ``siamese`` (the paper):
    A' takes one optimizer step on the batch; ``siamese_state`` ``persistent`` keeps A''s optimizer
    state across steps (the release), ``fresh`` starts it empty every step. ``first_order``: no
    siamese; the bank losses "after" are :func:`first_order_after` of the first-order change of each
    bank pair's loss when its pair is learnt (:func:`first_order_impact`). Both go through
    :func:`npc_weights`.
    """
    if variant not in ("paper", "release"):
        raise ValueError(f"--npc_variant must be paper or release, got {variant!r}")
    if estimator not in ("siamese", "first_order"):
        raise ValueError(f"--npc_estimator must be siamese or first_order, got {estimator!r}")
    if siamese_state not in ("persistent", "fresh"):
        raise ValueError(f"--siamese_state must be persistent or fresh, got {siamese_state!r}")
    info = info or DistInfo()
    autocast = autocast or nullcontext
    siamese_scale = 2.0 if variant == "release" else 1.0
    if estimator == "siamese":
        with _phase("npc.sync_siamese"):
            sync_siamese_(siamese, model)
        if siamese_state == "fresh":
            siamese_opt.state.clear()

    params = trainable(model)
    if estimator == "first_order":
        feats = {}
        with _phase("npc.forward_A"), autocast():
            losses = encode_groups(model, batch, GROUPS, info, features=feats)
        pair = losses["pair"]
        before_I, before_T = losses["bankI"].detach().float(), losses["bankT"].detach().float()
        with _phase("npc.first_order"):
            scale = logit_scale(model)
            after_I, after_T = first_order_after(
                before_I, first_order_impact(*feats["pair"], *feats["bankI"], scale, 1.0, info),
                before_T, first_order_impact(*feats["pair"], *feats["bankT"], scale, 1.0, info), info)
    elif impl == "efficient":
        with _phase("npc.forward_A"), autocast():
            losses = encode_groups(model, batch, GROUPS, info, first=("pair",))
        pair = losses["pair"]
        before_I, before_T = losses["bankI"].detach(), losses["bankT"].detach()
        with _phase("npc.backward_siamese"):
            # The release variant reuses these gradients for A's own step: the graph is not needed again.
            grads = torch.autograd.grad(pair.mean(), params, retain_graph=variant == "paper", allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
            if info.enabled:
                holders = trainable(siamese)
                for p, g in zip(holders, grads):
                    p.grad = g
                all_reduce_grads_(holders, info)
                grads = [p.grad for p in holders]
        with _phase("npc.step_siamese"):
            _siamese_step(siamese, siamese_opt, grads, siamese_scale)
    elif impl == "naive":
        with torch.no_grad(), autocast():
            before = encode_groups(siamese, batch, ("bankI", "bankT"), info, dedup=False)
        before_I, before_T = before["bankI"], before["bankT"]
        with autocast():
            siamese_loss = encode_groups(siamese, batch, ("pair",), info, dedup=False)["pair"].mean()
        siamese_opt.zero_grad(set_to_none=True)
        (siamese_loss * siamese_scale).backward()
        all_reduce_grads_(trainable(siamese), info)
        siamese_opt.step()
        with autocast():
            losses = encode_groups(model, batch, GROUPS, info, dedup=False)
        pair = losses["pair"]
    else:
        raise ValueError(f"--npc_impl must be efficient or naive, got {impl!r}")

    if estimator == "siamese":
        with _phase("npc.forward_siamese"), torch.no_grad(), autocast():
            after = encode_groups(siamese, batch, ("bankI", "bankT"), info, dedup=impl == "efficient")
        after_I, after_T = after["bankI"].float(), after["bankT"].float()
    before_I, before_T = before_I.float(), before_T.float()
    weights, ratio = npc_weights(before_I, after_I, before_T, after_T)

    bank_loss = (losses["bankI"].mean() + losses["bankT"].mean()) / 2
    used = weights if reweight else torch.ones_like(weights)
    if variant == "paper":
        loss = (used * pair).mean() + bank_loss
    else:
        # The release multiplies the batch-mean loss by the batch-mean weight and adds a bank loss
        # computed without gradient: its value is logged, it contributes no gradient.
        mean_w = _global_mean(used, info)
        loss = mean_w * pair.mean() + bank_loss.detach()
    with _phase("npc.update_A"):
        if variant == "release" and impl == "efficient" and estimator == "siamese":
            # d/dA [mean(w) * mean(l)] = mean(w) * the gradient A' stepped with (before its doubling,
            # undone exactly: scaling by a power of two is exact): no second backward pass.
            optimizer.zero_grad(set_to_none=True)
            factor = mean_w / siamese_scale
            for p, g in zip(params, grads):
                p.grad = g.mul_(factor.to(g.dtype))
            grad_norm = _clip_and_step(params, optimizer, grad_clip)
        else:
            grad_norm = finish_step(model, optimizer, loss, info, grad_clip)
    return {"loss": loss.detach(), "pair_loss": pair.detach(), "bank_loss": bank_loss.detach(),
            "weights": weights, "ratio": ratio, "grad_norm": torch.tensor(grad_norm),
            "bank_losses": torch.stack([before_I, after_I, before_T, after_T])}


def clip_step(model, optimizer, batch: Dict[str, torch.Tensor], *, info: Optional[DistInfo] = None, autocast=None,
              grad_clip: float = 10.0, weights: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """One plain CLIP fine-tuning update (the baseline): mean symmetric InfoNCE of the batch.

    ``weights`` (one per pair, e.g. the GMM's p(clean)) give ``mean_i(w_i l_i)`` instead.
    """
    info = info or DistInfo()
    autocast = autocast or nullcontext
    with _phase("clip.forward"), autocast():
        pair = encode_groups(model, batch, ("pair",), info)["pair"]
    loss = pair.mean() if weights is None else (weights.to(pair.dtype) * pair).mean()
    with _phase("clip.update"):
        grad_norm = finish_step(model, optimizer, loss, info, grad_clip)
    return {"loss": loss.detach(), "pair_loss": pair.detach(), "grad_norm": torch.tensor(grad_norm)}
