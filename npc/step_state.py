"""What a training step has computed when its weight estimator is asked for weights (:class:`StepState`).

Shared by the step (:mod:`npc.steps`) and the estimators (:mod:`npc.estimators`), which import it
and not each other.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from npc.distributed import DistInfo, share_of_mean


@dataclass
class StepState:
    """What the step has computed when the estimator is asked for weights."""

    model: torch.nn.Module
    batch: Dict[str, torch.Tensor]
    info: DistInfo
    autocast: object
    params: List[torch.nn.Parameter]
    losses: Dict[str, torch.Tensor]                 # per-pair losses of each group, with A's graph
    features: Dict[str, tuple] = field(default_factory=dict)  # row-aligned (image, text) features per group
    keep_graph: bool = True                         # A's graph is needed after the estimator (a backward of A)
    grads: Optional[List[torch.Tensor]] = None      # gradient of mean_i l_i w.r.t. params, if an estimator took it
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)  # estimator outputs worth returning


def rank_share(state: StepState) -> float:
    """The factor on this rank's loss (a mean over its pairs) before its backward pass: 1 unless ranks hold
    uneven shares of the global batch (``--skip_unreadable_images``; :func:`npc.distributed.share_of_mean`)."""
    pair = state.losses["pair"]
    return share_of_mean(pair.shape[0], state.info, pair.device)
