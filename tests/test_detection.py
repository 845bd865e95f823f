"""npc.detection against hand-computed cases (ROC-AUC, OSA Table 9's mean noise rank); the bank's
p(clean) AUC is the same ROC-AUC."""
import math

import numpy as np
import pytest

from npc.detection import mean_noise_rank, weight_auc


def test_weight_auc_hand_cases():
    # clean {3, 1} vs noisy {0, 2}: of the 4 clean-noisy pairs, 3 are ordered right -> 0.75
    assert weight_auc([3, 1, 0, 2], [False, False, True, True]) == pytest.approx(0.75)
    assert weight_auc([0.9, 0.8, 0.1, 0.5], [False, False, True, False]) == 1.0
    assert weight_auc([0.1, 0.9], [False, True]) == 0.0
    assert weight_auc([1.0, 1.0], [False, True]) == 0.5          # a tie counts one half
    assert math.isnan(weight_auc([1.0, 2.0], [False, False]))     # one class only


def test_weight_auc_is_the_area_over_every_clean_noisy_pair():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(np.float32)          # many ties
    noisy = rng.random(60) < 0.4
    clean_s, noisy_s = scores[~noisy][:, None], scores[noisy][None, :]
    by_pairs = ((clean_s > noisy_s).sum() + 0.5 * (clean_s == noisy_s).sum()) / (clean_s.size * noisy_s.size)
    assert weight_auc(scores, noisy) == pytest.approx(by_pairs)
    assert weight_auc(-scores, noisy) == pytest.approx(1 - by_pairs)     # orientation: higher = clean
    with pytest.raises(ValueError):
        weight_auc([0.5, float("nan")], [False, True])


def test_bank_quality_scores_p_clean_with_weight_auc():
    from npc.memory_bank import bank_quality

    p_clean = np.array([0.9, 0.2, 0.7, 0.75, 0.1, 0.8])   # one of the 9 clean-noisy pairs misordered
    noisy = np.array([False, True, False, True, True, False])
    info = bank_quality(p_clean, 0.5, noisy)
    assert info["p_clean_auc"] == weight_auc(p_clean, noisy) == pytest.approx(8 / 9)
    assert "p_clean_auc" not in bank_quality(p_clean, 0.5, np.zeros(6, dtype=bool))   # one class: not scored


def test_mean_noise_rank_perfect_and_worst():
    # descending: 0.9 -> 1, 0.8 -> 2, 0.5 -> 3, 0.1 -> 4; the noisy pair is last
    r = mean_noise_rank([0.9, 0.8, 0.1, 0.5], [False, False, True, False])
    assert r["mean_noise_rank"] == 4.0
    assert r["mean_noise_rank_optimal"] == 4.0
    assert r["mean_noise_rank_random"] == 2.5
    assert (r["n"], r["n_noisy"]) == (4, 1)
    # the two noisy pairs hold the top scores: ranks 1 and 2
    r = mean_noise_rank([0.1, 0.2, 0.9, 0.8, 0.3], [False, False, True, True, False])
    assert r["mean_noise_rank"] == 1.5
    assert r["mean_noise_rank_optimal"] == 4.5   # mean of ranks 4 and 5
    assert r["mean_noise_rank_random"] == 3.0


def test_mean_noise_rank_ties_take_the_average_rank():
    # 1, 1 share ranks 1-2 -> 1.5; 0, 0 share 3-4 -> 3.5; noisy: (1.5 + 3.5) / 2
    r = mean_noise_rank([1, 1, 0, 0], [True, False, True, False])
    assert r["mean_noise_rank"] == 2.5
    # a constant score is exactly random
    r = mean_noise_rank(np.zeros(7), [True, False, False, True, False, False, True])
    assert r["mean_noise_rank"] == r["mean_noise_rank_random"] == 4.0


def test_mean_noise_rank_osa_optima():
    # OSA Table 9: optimal 1,815.5 for 370 noisy of 2,000 and 1,524.0 for 953
    for k, best in ((370, 1815.5), (953, 1524.0)):
        mask = np.zeros(2000, dtype=bool)
        mask[:k] = True
        r = mean_noise_rank(np.where(mask, 0.0, 1.0) + np.linspace(0, 1e-3, 2000), mask, n=2000)
        assert r["mean_noise_rank"] == r["mean_noise_rank_optimal"] == best
        assert r["mean_noise_rank_random"] == 1000.5


def test_mean_noise_rank_samples_n_pairs_with_the_seed():
    scores = np.arange(10.0)          # pair i has score i
    mask = scores < 3                  # the three lowest scores are noisy
    idx = np.random.default_rng(5).choice(10, size=4, replace=False)
    r = mean_noise_rank(scores, mask, n=4, seed=5)
    sub = scores[idx]
    ranks = {v: 1 + int((sub > v).sum()) for v in sub}   # no ties: rank = 1 + number above
    noisy = [ranks[v] for v in sub if v < 3]
    assert r["n"] == 4 and r["n_noisy"] == len(noisy)
    if noisy:
        assert r["mean_noise_rank"] == pytest.approx(np.mean(noisy))
    assert r == mean_noise_rank(scores, mask, n=4, seed=5)             # reproducible
    assert mean_noise_rank(scores, mask, n=50)["n"] == 10              # at most all pairs


def test_mean_noise_rank_no_noisy_pair_is_nan():
    r = mean_noise_rank([1.0, 2.0], [False, False])
    assert math.isnan(r["mean_noise_rank"]) and r["n_noisy"] == 0
