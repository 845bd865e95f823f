"""NPC's training step: negative pre-awareness with a siamese model (NPC_SPEC.md section 4).

Step 1 copies the base model A into a siamese A', lets A' take one AdamW step on the batch's mean
contrastive loss, and compares each pair's memory-bank losses before and after: if learning the
batch made a pair's clean neighbours *harder* (ratio of before/after losses < 1), the pair is
likely noisy and is down-weighted, ``w = tanh(ratio)``. Step 2 updates A with the weighted loss
plus the contrastive loss on the memory-bank pairs.

Two variants (``--npc_variant``):

``paper``    per-sample weights ``mean_i(w_i l_i)`` and a memory-bank loss that trains A.
``release``  what the authors' code computes (NPC_SPEC.md section 5): ``mean(w) * mean(l)`` (no
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

from npc.distributed import DistInfo, all_reduce_grads_, gather_with_grad
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
                  first: Sequence[str] = ()):
    """Per-sample losses of ``groups`` under ``model``.

    ``dedup`` encodes only the distinct images/captions the groups use, once each; otherwise every
    group is encoded on its own, the way the reference feeds three image batches per step. The rows
    of the ``first`` groups are encoded in a forward call of their own, so that a gradient of their
    losses alone back-propagates through their rows only.
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
    from npc.distributed import gather_no_grad

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
             reweight: bool = True) -> Dict[str, torch.Tensor]:
    """One NPC update of ``model`` (A); returns per-sample weights, ratios, losses and the total loss.

    ``reweight=False`` is an ablation: the weights are computed and returned but the loss uses 1
    for every pair, leaving the memory-bank loss as the only difference from plain CLIP training.
    """
    if variant not in ("paper", "release"):
        raise ValueError(f"--npc_variant must be paper or release, got {variant!r}")
    info = info or DistInfo()
    autocast = autocast or nullcontext
    siamese_scale = 2.0 if variant == "release" else 1.0
    with _phase("npc.sync_siamese"):
        sync_siamese_(siamese, model)

    params = trainable(model)
    if impl == "efficient":
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

    with _phase("npc.forward_siamese"), torch.no_grad(), autocast():
        after = encode_groups(siamese, batch, ("bankI", "bankT"), info, dedup=impl == "efficient")
    weights, ratio = npc_weights(before_I.float(), after["bankI"].float(), before_T.float(), after["bankT"].float())

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
        if variant == "release" and impl == "efficient":
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
            "weights": weights, "ratio": ratio, "grad_norm": torch.tensor(grad_norm)}


def clip_step(model, optimizer, batch: Dict[str, torch.Tensor], *, info: Optional[DistInfo] = None, autocast=None,
              grad_clip: float = 10.0) -> Dict[str, torch.Tensor]:
    """One plain CLIP fine-tuning update (the baseline): mean symmetric InfoNCE of the batch."""
    info = info or DistInfo()
    autocast = autocast or nullcontext
    with _phase("clip.forward"), autocast():
        pair = encode_groups(model, batch, ("pair",), info)["pair"]
    loss = pair.mean()
    with _phase("clip.update"):
        grad_norm = finish_step(model, optimizer, loss, info, grad_clip)
    return {"loss": loss.detach(), "pair_loss": pair.detach(), "grad_norm": torch.tensor(grad_norm)}
