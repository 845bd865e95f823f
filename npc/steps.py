"""One training step of any method: a shared forward, an estimator's per-pair weights, an objective.

``train_step`` runs the model (A) once on the batch's pairs and, when the method uses it, on the
memory-bank pairs; hands what it computed (:class:`StepState`) to the method's weight estimator
(:mod:`npc.estimators`); and lets the objective turn the weighted per-pair losses into A's update.
The estimator receives the step's own forward, so NPC's siamese can reuse A's graph for its
gradient (see :mod:`npc.negative_impact`), and an objective may reuse a gradient the estimator
already took (the release's objective needs no second backward pass).

Objectives (docs/method.md sections 4 and 5):

``clip``     ``mean_i(w_i l_i)`` (``mean_i l_i`` without weights): plain CLIP fine-tuning and the
             baselines that weight or filter its pairs.
``paper``    ``mean_i(w_i l_i) + L_bank``: NPC as published; the bank loss trains A.
``release``  ``mean(w) * mean_i(l_i) + L_bank`` with the bank loss detached: what the authors' code
             computes (its weights scale the batch mean; its bank loss trains nothing).

``L_bank`` is the image-side bank pairs' contrastive loss plus the text-side ones' (the authors'
code sums the two sides). ``paper`` weighs it by its option ``bank_weight`` (``--method_opt
bank_weight=W``; default 1, the authors' sum; 0.5 is the mean of the two sides, this project's loss
before it followed their code).

Objectives register like estimators (:func:`register_objective`, the :class:`npc.registry.Registry`
``OBJECTIVES``); their options are declared like an estimator's (:class:`npc.options.Option`) and set by
the same ``--method_opt NAME=VALUE``; the method keeps both in one mapping (names are unique across the two).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ClassVar, Dict, Optional, Sequence, Tuple

import torch

from npc.distributed import DistInfo, all_reduce_grads_, gather_no_grad
from npc.options import Option, resolve_declared
from npc.negative_impact import GROUPS, encode_groups, phase, trainable
from npc.registry import Registry
from npc.step_state import StepState, rank_share


def _global_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return x.mean()
    return gather_no_grad(x.detach(), info).mean()


def clip_and_step(params: Sequence[torch.Tensor], optimizer, grad_clip: float) -> float:
    """Clip the gradient norm (0: no clip), step; returns the pre-clip norm."""
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimizer.step()
    return float(norm)


def finish_step(model, optimizer, loss: torch.Tensor, info: DistInfo, grad_clip: float, share: float = 1.0) -> float:
    """Backward, average over ranks, clip, step. ``share``: see :func:`rank_share`. Returns the pre-clip
    gradient norm."""
    optimizer.zero_grad(set_to_none=True)
    (loss * share if share != 1.0 else loss).backward()
    params = trainable(model)
    all_reduce_grads_(params, info)
    return clip_and_step(params, optimizer, grad_clip)


# ----------------------------------------------------------------------------- objectives

class Objective:
    """How per-pair weights and losses become A's loss, and A's update from it."""

    name = ""
    uses_bank = False
    options: ClassVar[Tuple[Option, ...]] = ()  # what --method_opt may set; the constructor takes them by name
    reuses_estimator_grads = False  # True: an estimator that took mean_i l_i's gradient need not keep A's graph

    def loss(self, state: StepState, weights: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def update(self, state: StepState, loss: torch.Tensor, weights: Optional[torch.Tensor], optimizer,
               grad_clip: float) -> float:
        return finish_step(state.model, optimizer, loss, state.info, grad_clip, share=rank_share(state))


OBJECTIVES = Registry("objective", prepare=lambda cls, given: resolve_declared(cls.options, given,
                                                                              f"the {cls.name} objective"))
register_objective = OBJECTIVES.register  # class decorator: make the objective available to methods under its name


@register_objective
class ClipObjective(Objective):
    name = "clip"

    def loss(self, state, weights):
        pair = state.losses["pair"]
        if weights is None:
            return pair.mean()
        return (weights.to(pair.dtype) * pair).mean()


def bank_loss(state: StepState) -> torch.Tensor:
    """``L_MB``: the contrastive loss of the image-side bank pairs plus that of the text-side bank pairs
    (``mean_i(lI_i + lT_i)``, as the authors' code computes it; docs/method.md section 4)."""
    return state.losses["bankI"].mean() + state.losses["bankT"].mean()


@register_objective
class PaperObjective(Objective):
    name = "paper"
    uses_bank = True
    options = (Option("bank_weight", float, 1.0, "the memory-bank loss's weight in A's loss (1: the sum of its "
                                                 "two sides, as the authors' code; 0.5: their mean)", minimum=0.0),)

    def __init__(self, bank_weight: float = 1.0):
        self.bank_weight = bank_weight

    def loss(self, state, weights):
        pair = state.losses["pair"]
        w = torch.ones_like(pair) if weights is None else weights.to(pair.dtype)
        return (w * pair).mean() + self.bank_weight * bank_loss(state)  # x 1.0 is exact: the default is unchanged


@register_objective
class ReleaseObjective(Objective):
    """The release multiplies the batch-mean loss by the batch-mean weight and adds a bank loss computed
    without gradient: its value is logged, it contributes no gradient."""

    name = "release"
    uses_bank = True
    reuses_estimator_grads = True

    def loss(self, state, weights):
        pair = state.losses["pair"]
        mean_w = torch.ones((), device=pair.device) if weights is None else _global_mean(weights, state.info)
        state.extras["mean_w"] = mean_w
        return mean_w * pair.mean() + bank_loss(state).detach()

    def update(self, state, loss, weights, optimizer, grad_clip):
        if state.grads is None:
            return finish_step(state.model, optimizer, loss, state.info, grad_clip, share=rank_share(state))
        # d/dA [mean(w) * mean(l)] = mean(w) * the gradient of mean(l) the estimator took: no second
        # backward pass.
        # The estimator's gradients stay its own (under torchrun they are the siamese's .grad): scaled into
        # new tensors, each dropped from the list as it is used.
        optimizer.zero_grad(set_to_none=True)
        factor = state.extras["mean_w"]
        grads, state.grads = list(state.grads), None
        for i, p in enumerate(state.params):
            g, grads[i] = grads[i], None
            p.grad = g * factor.to(g.dtype)
        return clip_and_step(state.params, optimizer, grad_clip)


def build_objective(name: str, **options) -> Objective:
    """The objective ``name`` with its ``options`` (typed; the others at their defaults)."""
    return OBJECTIVES.create(name, **options)


# ----------------------------------------------------------------------------- the step

def train_step(model, optimizer, batch: Dict[str, torch.Tensor], estimator, objective, *,
               info: Optional[DistInfo] = None, autocast=None, grad_clip: float = 10.0,
               reweight: bool = True) -> Dict[str, torch.Tensor]:
    """One update of ``model``: forward, ``estimator``'s weights, ``objective``'s loss and update.

    ``estimator`` is a :class:`npc.estimators.WeightEstimator` (:class:`npc.estimators.NoWeights`: every
    weight 1, nothing estimated). ``reweight=False`` is an ablation: the weights are computed and
    returned, the loss uses none.
    """
    objective = build_objective(objective) if isinstance(objective, str) else objective
    uses_bank = objective.uses_bank or estimator.uses_bank
    clip = objective.name == "clip"  # the phases' names, as the profiles know them
    state = forward(model, batch, estimator, uses_bank=uses_bank, info=info, autocast=autocast,
                    keep_graph=not objective.reuses_estimator_grads,
                    phase_name="clip.forward" if clip else "npc.forward_A")
    weights = estimator.weights(state)
    used = weights if reweight else None
    loss = objective.loss(state, used)
    with phase("clip.update" if clip else "npc.update_A"):
        grad_norm = objective.update(state, loss, used, optimizer, grad_clip)
    out = {"loss": loss.detach(), "pair_loss": state.losses["pair"].detach(), "weights": weights,
           "grad_norm": torch.tensor(grad_norm)}
    if uses_bank:
        out["bank_loss"] = bank_loss(state).detach()
    out.update(state.extras)
    out.pop("mean_w", None)
    return out


def estimate(model, batch: Dict[str, torch.Tensor], estimator, *, info: Optional[DistInfo] = None,
             autocast=None) -> Dict[str, torch.Tensor]:
    """An estimator's weights of ``batch`` under ``model``, which is not updated (for studies of the
    estimators): the step's forward, then ``estimator.weights``. Returns the weights, the pairs'
    losses and the estimator's extras (e.g. NPC's ratio and bank losses)."""
    state = forward(model, batch, estimator, uses_bank=estimator.uses_bank, info=info, autocast=autocast,
                    keep_graph=False, phase_name="estimate.forward")
    weights = estimator.weights(state)
    return {"weights": weights, "pair_loss": state.losses["pair"].detach(), **state.extras}


def forward(model, batch: Dict[str, torch.Tensor], estimator, *, uses_bank: bool, info: Optional[DistInfo],
            autocast, keep_graph: bool, phase_name: str) -> StepState:
    """The step's shared forward: A's per-pair losses of the pairs (and of the bank pairs when
    ``uses_bank``), run as the estimator's ``forward_plan`` asks."""
    info = info or DistInfo()
    autocast = autocast or nullcontext
    plan = dict(estimator.forward_plan)
    features = {} if plan.pop("features", False) and plan.get("dedup", True) else None
    with phase(phase_name), autocast():
        losses = encode_groups(model, batch, GROUPS if uses_bank else ("pair",), info, features=features, **plan)
    return StepState(model=model, batch=batch, info=info, autocast=autocast, params=trainable(model), losses=losses,
                     features=features or {}, keep_graph=keep_graph)
