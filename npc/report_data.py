"""What a noise report shows (:class:`ReportData`), computed beforehand: the data the report's files and its page
(npc/report_page.py, npc/report_html.py, npc/report_figures.py) are written from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

DETECTORS = {"p_clean": "GMM p(clean) (the memory bank's)", "cosine": "cosine of the pair",
             "osa_score": "OSA's debiased score"}


def ranks_of(order: np.ndarray) -> np.ndarray:
    """``rank[pair]`` (1-based) of a permutation ``order`` (``order[0]`` gets rank 1)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def _num(v, spec: str) -> str:
    return "&ndash;" if v is None else format(v, spec)


@dataclass
class ReportData:
    """Everything :func:`write_report` writes, computed beforehand."""

    split: object                                # npc.data.Split (the training split, noisy if made so)
    scores: object                               # npc.noise_report.PairScores
    clean_threshold: float
    order: np.ndarray                            # pair indices, most suspicious first
    lines: np.ndarray                            # (n,) the user's line of every pair
    images: List[str]                            # (n_images,) the image as the user names it
    noise_mask: Optional[np.ndarray] = None
    clean_captions: Optional[List[str]] = None   # the captions before the noise (benchmark splits)
    runs: Dict[str, object] = field(default_factory=dict)   # column name -> npc.pair_weights.PairWeights
    candidates: Optional[Tuple[np.ndarray, np.ndarray]] = None  # for order[:top]: (indices, cosines)
    top: int = 50
    trusted: int = 8
    meta: Dict = field(default_factory=dict)     # dataset, model, command, versions, timing
    keys: Optional[List[str]] = None             # (n,) each pair's key as its data source defines it (Split.keys)

    def __post_init__(self):
        if self.keys is None:
            self.keys = list(self.split.keys)

    @property
    def n(self) -> int:
        return len(self.split.captions)

    def shown(self) -> List[Tuple[str, int]]:
        """The pairs the page shows, in its order: (section, pair), the suspicious ones then the trusted ones."""
        return ([("suspicious", int(j)) for j in self.order[:self.top]]
                + [("trusted", int(j)) for j in self.order[::-1][:self.trusted]])

    def run_means(self) -> Dict[str, np.ndarray]:
        return {name: pw.mean_over_epochs() for name, pw in self.runs.items()}
