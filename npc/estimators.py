"""Weight estimators: how much each training pair counts in a step (docs/methods.md).

An estimator gets the step's shared forward (:class:`npc.step_state.StepState`: A's per-pair losses
with their graph, and the memory-bank pairs' losses when it ``uses_bank``) and returns one weight
per pair, or None for "every pair counts 1". A method without an estimator has :class:`NoWeights`,
whose weights are always None. It is built once per run from its options and bound by
:meth:`WeightEstimator.bind` to what the run has (the model, an optimizer factory, the memory bank's
p(clean), the ground-truth noise mask of a benchmark split); :meth:`WeightEstimator.on_epoch` is
called before every epoch, and whatever state it keeps across steps goes into the run's checkpoints
through ``state_dict``.

A new estimator is a subclass with a ``name`` and its ``options`` (each an :class:`Option`: name,
type, default, help), registered with :func:`register_estimator` (the :class:`npc.registry.Registry`
``ESTIMATORS``); a method that uses it is one line
in :mod:`npc.methods`, and ``--method_opt NAME=VALUE`` sets its options from the command line.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from npc.distributed import DistInfo, all_reduce_grads_
from npc.model import logit_scale
from npc.negative_impact import (encode_groups, first_order_after, first_order_impact, npc_weights, phase,
                                 siamese_step, sync_siamese_, trainable)
from npc.step_state import rank_share
from npc.errors import ConfigError
from npc.options import Option, resolve_declared
from npc.registry import Registry


@dataclass
class RunInputs:
    """What a run offers its estimator when it is built."""

    model: torch.nn.Module
    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]
    info: DistInfo
    batch_size: int = 0                       # the global training batch
    seed: int = 0                             # the run's --seed
    p_clean: Optional[np.ndarray] = None      # the memory bank's GMM p(clean) of every training pair
    noise_mask: Optional[np.ndarray] = None   # True where a training caption is wrong (benchmark splits only)
    epochs: int = 1                           # the run's --epochs


class WeightEstimator:
    """Per-pair weights of a step; see the module docstring."""

    name: ClassVar[str] = ""
    options: ClassVar[Tuple[Option, ...]] = ()  # what --method_opt may set; the constructor takes them by name
    uses_bank: ClassVar[bool] = False        # the batch must carry the memory-bank pairs
    needs: ClassVar[frozenset] = frozenset()  # RunInputs fields it needs: "p_clean", "noise_mask"
    forward_plan: ClassVar[Dict] = {}          # keyword arguments of the step's forward (npc.negative_impact.encode_groups)

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> Dict[str, Any]:
        """Every option, typed: those ``given`` (values or their text), the others at their defaults."""
        return resolve_declared(cls.options, given, f"the {cls.name} estimator")

    def bind(self, run: RunInputs) -> None:
        """Called once per run, before the first step."""

    def on_epoch(self, epoch: int, epochs: int) -> None:
        """Called before every epoch (0-based ``epoch`` of ``epochs``), also when a run resumes."""

    @property
    def optimizers(self) -> List[torch.optim.Optimizer]:
        """Optimizers of the estimator's own (their lr follows the run's schedule)."""
        return []

    @property
    def trained_models(self) -> List[torch.nn.Module]:
        """Models of the estimator's own that its optimizers train (``--torchcompile`` compiles them with A)."""
        return []

    def weights(self, state) -> Optional[torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> Dict:
        """What a checkpoint keeps of the estimator (entries of the checkpoint dict)."""
        return {}

    def load_state_dict(self, ckpt: Dict) -> None:
        """Restore from a checkpoint dict (entries missing from older checkpoints are left as they are)."""

    def bank_changed(self, p_clean: np.ndarray) -> None:
        """The run's memory bank was rebuilt (``--bank_update``); ``p_clean`` is its GMM's p(clean)."""


class NoWeights(WeightEstimator):
    """The estimator of a method that has none: every pair counts 1 (its weights are None), nothing is bound,
    kept or stepped. Not registered: a method names it by ``estimator=None``."""

    def weights(self, state) -> None:
        return None


ESTIMATORS = Registry("estimator", prepare=lambda cls, given: cls.resolve_options(given))
register_estimator = ESTIMATORS.register  # class decorator: make the class available to methods under its name


def estimator_class(name: Optional[str]) -> type:
    """The class registered as ``name`` (None: :class:`NoWeights`); an unknown name is a ConfigError naming the choices."""
    return NoWeights if name is None else ESTIMATORS.get(name)


def build_estimator(name: Optional[str], **options) -> WeightEstimator:
    """The estimator ``name`` with ``options`` (checked and typed; the others at their defaults); None: NoWeights."""
    return NoWeights() if name is None else ESTIMATORS.create(name, **options)


# ----------------------------------------------------------------------------- NPC's negative impact

@register_estimator
class Siamese(WeightEstimator):
    """NPC's step 1 (docs/method.md section 4): a siamese copy A' of A takes one optimizer step on the
    batch; each pair's memory-bank losses before and after give ``w = tanh(ratio)`` if ratio < 1.

    ``impl``: ``efficient`` reuses A's forward for the bank losses before the step and for A''s
    gradient (A' equals A then); ``naive`` runs A' on its own (same results). ``state``:
    ``persistent`` keeps A''s AdamW state across steps (the release), ``fresh`` empties it every step.
    ``grad_scale``: A' steps on this multiple of the mean pair loss's gradient; 4 is the release's
    (its siamese loss is twice the mean pair loss, back-propagated twice).
    """

    name = "siamese"
    uses_bank = True
    options = (Option("impl", str, "efficient", "efficient or naive: the same weights, efficient reuses A's forward",
                      ("efficient", "naive")),
               Option("state", str, "persistent", "A''s optimizer state: persistent across steps or fresh each step",
                      ("persistent", "fresh")),
               Option("grad_scale", float, 1.0, "A' steps on this multiple of the mean pair loss's gradient "
                                                "(4: the release's; 0: A' never moves)", minimum=0.0))

    def __init__(self, impl: str = "efficient", state: str = "persistent", grad_scale: float = 1.0):
        self.impl, self.state, self.grad_scale = impl, state, grad_scale
        self.forward_plan = {"first": ("pair",)} if impl == "efficient" else {"dedup": False}
        self.siamese = self.optimizer = None

    def bind(self, run: RunInputs) -> None:
        siamese = copy.deepcopy(run.model)
        self.attach_siamese(siamese, run.make_optimizer(siamese))

    def attach_siamese(self, siamese, optimizer) -> None:
        self.siamese, self.optimizer = siamese, optimizer

    @property
    def optimizers(self):
        return [self.optimizer]

    @property
    def trained_models(self):
        return [self.siamese]

    def state_dict(self):
        return {"siamese_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, ckpt):
        if "siamese_optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["siamese_optimizer"])

    def weights(self, s):
        siamese, opt = self.siamese, self.optimizer
        with phase("npc.sync_siamese"):
            sync_siamese_(siamese, s.model)
        if self.state == "fresh":
            opt.state.clear()
        if self.impl == "efficient":
            before_I, before_T = s.losses["bankI"].detach(), s.losses["bankT"].detach()
            with phase("npc.backward_siamese"):
                grads = torch.autograd.grad(s.losses["pair"].mean() * rank_share(s),
                                            s.params, retain_graph=s.keep_graph, allow_unused=True)
                grads = [torch.zeros_like(p) if g is None else g for p, g in zip(s.params, grads)]
                if s.info.enabled:
                    holders = trainable(siamese)
                    for p, g in zip(holders, grads):
                        p.grad = g
                    all_reduce_grads_(holders, s.info)
                    grads = [p.grad for p in holders]
            with phase("npc.step_siamese"):
                siamese_step(siamese, opt, grads, self.grad_scale)
            s.grads = grads  # the gradient of the mean pair loss: an objective may reuse it (release)
        else:
            with torch.no_grad(), s.autocast():
                before = encode_groups(siamese, s.batch, ("bankI", "bankT"), s.info, dedup=False)
            before_I, before_T = before["bankI"], before["bankT"]
            with s.autocast():
                siamese_loss = encode_groups(siamese, s.batch, ("pair",), s.info, dedup=False)["pair"].mean()
            opt.zero_grad(set_to_none=True)
            (siamese_loss * self.grad_scale * rank_share(s)).backward()
            all_reduce_grads_(trainable(siamese), s.info)
            opt.step()
        with phase("npc.forward_siamese"), torch.no_grad(), s.autocast():
            after = encode_groups(siamese, s.batch, ("bankI", "bankT"), s.info, dedup=self.impl == "efficient")
        return _npc_weights(s, before_I, after["bankI"], before_T, after["bankT"])


def _npc_weights(s, before_I, after_I, before_T, after_T) -> torch.Tensor:
    # In the losses' dtype: fp32, or fp16 under pure fp16 weights, where the release's ratios round to the
    # fp16 grid (a ratio within half an fp16 step of 1 is 1, and its pair's weight 1).
    weights, ratio = npc_weights(before_I, after_I, before_T, after_T)
    weights, ratio = weights.float(), ratio.float()
    before_I, after_I, before_T, after_T = before_I.float(), after_I.float(), before_T.float(), after_T.float()
    s.extras["ratio"] = ratio
    s.extras["bank_losses"] = torch.stack([before_I, after_I, before_T, after_T])
    return weights


@register_estimator
class FirstOrder(WeightEstimator):
    """NPC's weights from the first-order change of each pair's bank losses when the pair alone is
    learnt, in closed form through feature gradients, centred on the batch median; no siamese
    (:func:`npc.negative_impact.first_order_impact`, :func:`npc.negative_impact.first_order_after`)."""

    name = "first_order"
    uses_bank = True
    forward_plan = {"features": True}

    def weights(self, s):
        before_I, before_T = s.losses["bankI"].detach().float(), s.losses["bankT"].detach().float()
        with phase("npc.first_order"):
            scale = logit_scale(s.model)
            f = s.features
            after_I, after_T = first_order_after(
                before_I, first_order_impact(*f["pair"], *f["bankI"], scale, 1.0, s.info),
                before_T, first_order_impact(*f["pair"], *f["bankT"], scale, 1.0, s.info), s.info)
        return _npc_weights(s, before_I, after_I, before_T, after_T)


# ----------------------------------------------------------------------------- one number per pair, known in advance

class PerPair(WeightEstimator):
    """A weight per training pair fixed before training, looked up by the batch's pair indices."""

    values: Optional[np.ndarray] = None

    def weights(self, s):
        index = s.batch["index"].cpu().numpy()
        return torch.as_tensor(self.values[index], dtype=torch.float32, device=s.batch["index"].device)


@register_estimator
class PClean(PerPair):
    """The memory bank's GMM p(clean) of each pair (the field's standard clean-probability signal)."""

    name = "pclean"
    needs = frozenset({"p_clean"})

    def bind(self, run):
        self.values = run.p_clean

    def bank_changed(self, p_clean):
        self.values = p_clean


@register_estimator
class Oracle(PerPair):
    """Benchmark only: 1 for a truly clean pair, 0 for a noisy one (the ground-truth noise mask)."""

    name = "oracle"
    needs = frozenset({"noise_mask"})

    def bind(self, run):
        self.values = (~run.noise_mask).astype(np.float32)


@register_estimator
class OSA(WeightEstimator):
    """OSA's zero-shot estimator (Li et al., "One-step Noisy Label Mitigation", arXiv 2410.01944;
    :mod:`npc.osa` has its formulas and how they follow the authors' code): a frozen copy of the
    initial model scores each pair by its logit above the mean logit of random images and random
    token ids (the shift, estimated once); ``x = relu(diag - shift) / max over the batch``,
    ``w = x^2 (1 - x^2)``. With the ``clip`` objective the loss is ``mean_i(w_i l_i)``, not
    renormalized, which is OSA's loss (its weights of both directions are equal).

    Deviations: the shift's random inputs come from a generator seeded with the run's ``--seed``
    (the authors' code draws them from the global generator after seeding), so a resumed run finds
    the same shift, which the checkpoints also keep; under several processes the batch maximum is
    the global batch's, so the weights equal one process's.
    """

    name = "osa"

    def bind(self, run):
        from npc.osa import frozen_copy, random_shift

        self.frozen = frozen_copy(run.model)
        device = next(run.model.parameters()).device
        gen = torch.Generator().manual_seed(run.seed)
        self.shift = random_shift(self.frozen, max(1, run.batch_size), generator=gen, device=device)

    def state_dict(self):
        return {"osa_shift": self.shift}

    def load_state_dict(self, ckpt):
        self.shift = ckpt.get("osa_shift", self.shift)

    @torch.no_grad()
    def weights(self, s):
        from npc.distributed import gather_no_grad
        from npc.model import encode
        from npc.osa import debiased_score, weight_of_score

        b = s.batch
        with s.autocast():
            img, txt = encode(self.frozen, b["images"][b["pair_img"]], b["texts"][b["pair_txt"]])
        # The diagonal of the pairs' logit matrix, computed as OSA's CLIP computes its logits.
        score = debiased_score((logit_scale(self.frozen) * img) @ txt.t(), self.shift)
        top = gather_no_grad(score, s.info).clamp_min(0).max() if s.info.enabled else None
        return weight_of_score(score, top)


# ----------------------------------------------------------------------------- learning with noisy labels

@register_estimator
class SmallLoss(WeightEstimator):
    """Small-loss selection, Co-teaching's rule with one network (Han et al., NeurIPS 2018): each step,
    the ``ceil(R n)`` pairs of the global batch of n with the smallest loss are kept, the others weigh 0;
    ``R = 1 - tau * min(epoch / ramp_epochs, 1)`` falls from 1 to ``1 - tau`` over the first epochs
    (Co-teaching's T_k) and stays there. A kept pair weighs ``n / kept``, so that the CLIP objective's
    ``mean_i(w_i l_i)`` is the kept pairs' mean loss, the loss Co-teaching trains on. Ties at the cut
    are broken by position in the batch. Under several processes the cut is the global batch's.
    """

    name = "small_loss"
    options = (Option("tau", float, 0.5, "the fraction of each batch left out once the ramp is over"),
               Option("ramp_epochs", int, 2, "epochs over which the left-out fraction rises from 0 to tau"))

    def __init__(self, tau: float = 0.5, ramp_epochs: int = 2):
        if not 0 <= tau < 1:
            raise ConfigError(f"--method_opt tau={tau}: must be in [0, 1)")
        if ramp_epochs < 0:
            raise ConfigError(f"--method_opt ramp_epochs={ramp_epochs}: must be >= 0")
        self.tau, self.ramp_epochs = tau, ramp_epochs
        self.keep = 1.0

    def on_epoch(self, epoch: int, epochs: int) -> None:
        ramp = min(epoch / self.ramp_epochs, 1.0) if self.ramp_epochs else 1.0
        self.keep = 1.0 - self.tau * ramp

    @torch.no_grad()
    def weights(self, s):
        from npc.distributed import gather_no_grad, row_offset

        loss = s.losses["pair"].detach().float()
        everyone = gather_no_grad(loss, s.info)
        n = everyone.shape[0]
        kept = max(1, math.ceil(self.keep * n - 1e-9))
        order = torch.argsort(everyone, stable=True)
        w = torch.zeros(n, device=loss.device)
        w[order[:kept]] = n / kept
        start = row_offset(loss, s.info)
        return w[start:start + loss.shape[0]]
