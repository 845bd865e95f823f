"""How well a per-pair score separates noisy from clean training pairs.

Two metrics, both "higher score = more likely clean":

* :func:`weight_auc`: ROC-AUC with the clean pairs as the positive class (0.5 is chance, 1 is a
  score that ranks every clean pair above every noisy one).
* :func:`mean_noise_rank`: the metric of OSA's Table 9 (Li et al., "One-step Noisy Label
  Mitigation", arXiv 2410.01944): draw ``n`` (2,000 there) training pairs at random without
  replacement, sort them by score descending, number them 1..n, and report the mean rank of the
  noisy ones. Noisy pairs ranked last is best. Random scores give ``(n + 1) / 2``; the optimum,
  all ``k`` noisy pairs in the last ``k`` places, is the mean of ``n-k+1 .. n`` = ``n - (k - 1) / 2``
  (OSA's 1,815.5 for 370 noisy of 2,000; 1,524.0 for 953 noisy).

Ties: pairs with equal scores share the average of the ranks they span (``scipy.stats.rankdata``
``method="average"``), so a constant score gives exactly the random value. OSA does not say how it
breaks ties (its weights are continuous; ties there are the pairs clipped to weight 0).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

METRIC_KEYS = ("mean_noise_rank", "mean_noise_rank_optimal", "mean_noise_rank_random")


def _as_arrays(scores, noisy_mask):
    s = np.asarray(scores, dtype=np.float64).ravel()
    m = np.asarray(noisy_mask, dtype=bool).ravel()
    if s.shape != m.shape:
        raise ValueError(f"scores and noisy_mask differ in length: {s.shape[0]} vs {m.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s, m


def weight_auc(scores, noisy_mask) -> float:
    """ROC-AUC of ``scores`` against the ground truth, clean pairs positive (nan if one class is absent)."""
    from sklearn.metrics import roc_auc_score

    s, m = _as_arrays(scores, noisy_mask)
    if m.all() or not m.any():
        return float("nan")
    return float(roc_auc_score(~m, s))


def mean_noise_rank(scores, noisy_mask, n: int = 2000, seed: int = 0) -> Dict[str, float]:
    """OSA Table 9's mean noise rank of ``scores`` on ``n`` pairs drawn with ``seed``.

    ``n`` pairs are drawn without replacement by ``np.random.default_rng(seed).choice`` (all pairs,
    in a random order, when there are at most ``n``), sorted by score descending and ranked 1..n
    (ties: average rank). Returns ``mean_noise_rank`` (mean rank of the noisy pairs drawn; nan if
    none), ``mean_noise_rank_optimal`` (``n - (k - 1) / 2`` for ``k`` noisy pairs drawn),
    ``mean_noise_rank_random`` (``(n + 1) / 2``), and ``n`` and ``n_noisy``.
    """
    from scipy.stats import rankdata

    s, m = _as_arrays(scores, noisy_mask)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    n = min(int(n), len(s))
    idx = np.random.default_rng(seed).choice(len(s), size=n, replace=False)
    s, m = s[idx], m[idx]
    ranks = rankdata(-s, method="average")  # rank 1 = the highest score
    k = int(m.sum())
    return {"mean_noise_rank": float(ranks[m].mean()) if k else float("nan"),
            "mean_noise_rank_optimal": float(n - (k - 1) / 2) if k else float("nan"),
            "mean_noise_rank_random": float((n + 1) / 2),
            "n": n, "n_noisy": k}


def weight_stats(weights: np.ndarray, indices: np.ndarray, noise_mask: Optional[np.ndarray]) -> Dict[str, float]:
    """How well NPC's weights separate clean from noisy pairs (needs the ground-truth mask)."""
    stats = {"mean_weight": float(weights.mean()), "frac_weight_below_1": float((weights < 1).mean())}
    if noise_mask is None:  # real noise (--noise_ratio 0 on real data): no ground truth to score against
        stats["weight_auc"] = None
        return stats
    noisy = noise_mask[indices]
    if noisy.any():
        stats["mean_weight_noisy"] = float(weights[noisy].mean())
    if (~noisy).any():
        stats["mean_weight_clean"] = float(weights[~noisy].mean())
    if noisy.any() and (~noisy).any():
        stats["weight_auc"] = weight_auc(weights, noisy)
    return stats
