"""Retrieval metrics on small hand-computed matrices (ranks worked out in the comments)."""
import math

import numpy as np
import pytest
import torch

from npc import evaluation_metrics as em
from npc.evaluation_metrics import (METRIC_KEYS, TIE_KEYS, fold_metrics, format_metrics_table,
                                    retrieval_metrics)


def approx_dict(d, **expected):
    for k, v in expected.items():
        assert d[k] == pytest.approx(v), k


def naive_ranks(sims, num_anns, rng=None):
    """Textbook argsort ranks (SCAN style), valid when there are no ties. With ``rng``, the
    candidates are shuffled before a stable sort: one arbitrary order among equal scores, as a
    sort-based evaluation would leave them."""
    sims = np.asarray(sims, dtype=np.float64)
    n_img, n_txt = sims.shape

    def order(scores):
        perm = rng.permutation(len(scores)) if rng is not None else np.arange(len(scores))
        return list(perm[np.argsort(-scores[perm], kind="stable")])

    i2t = []
    for i in range(n_img):
        o = order(sims[i])
        i2t.append(1 + min(o.index(j) for j in range(i * num_anns, (i + 1) * num_anns)))
    t2i = [1 + order(sims[:, j]).index(j // num_anns) for j in range(n_txt)]
    return np.array(i2t), np.array(t2i)


# ---------------------------------------------------------------- num_anns = 1, 3 x 3
SIMS_3x3 = np.array([
    [0.9, 0.1, 0.5],
    [0.8, 0.3, 0.2],
    [0.1, 0.7, 0.6],
])
# i2t (row i, correct column i):
#   img0: 0.9, wrong >= 0.9: none            -> rank 1
#   img1: 0.3, wrong >= 0.3: 0.8             -> rank 2
#   img2: 0.6, wrong >= 0.6: 0.7             -> rank 2
#   ranks [1, 2, 2]: R@1 33.33, R@5 100, R@10 100, medr 2, meanr 5/3
# t2i (column j, correct row j):
#   cap0: col [.9 .8 .1], correct .9         -> rank 1
#   cap1: col [.1 .3 .7], correct .3, .7 >=  -> rank 2
#   cap2: col [.5 .2 .6], correct .6         -> rank 1
#   ranks [1, 2, 1]: R@1 66.67, R@5 100, R@10 100, medr 1, meanr 4/3
# rsum = 33.33 + 100 + 100 + 66.67 + 100 + 100 = 500


def test_num_anns_1_hand_computed():
    m = retrieval_metrics(SIMS_3x3, 1)
    approx_dict(m, i2t_r1=100 / 3, i2t_r5=100, i2t_r10=100, i2t_medr=2, i2t_meanr=5 / 3,
                t2i_r1=200 / 3, t2i_r5=100, t2i_r10=100, t2i_medr=1, t2i_meanr=4 / 3,
                rsum=500)
    assert list(m) == list(METRIC_KEYS) + list(TIE_KEYS)
    assert all(type(m[k]) is float for k in METRIC_KEYS)
    assert m["i2t_ties"] == m["t2i_ties"] == 0 and all(type(m[k]) is int for k in TIE_KEYS)


# ---------------------------------------------------------------- num_anns = 5, 2 x 10
# image 0 owns captions 0-4, image 1 owns captions 5-9
SIMS_2x10 = np.array([
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.8, 0.7, 0.6, 0.55],
    [0.3, 0.1, 0.0, 0.0, 0.0, 0.2, 0.25, 0.9, 0.1, 0.1],
])
# i2t:
#   img0: best GT = 0.5 (cap4); wrong >= 0.5: 0.9 0.8 0.7 0.6 0.55 -> rank 6
#   img1: best GT = 0.9 (cap7); wrong >= 0.9: none                 -> rank 1
#   ranks [6, 1]: R@1 50, R@5 50, R@10 100, medr 3.5, meanr 3.5
# t2i (correct image, its score vs the other image's):
#   cap0 img0 .1 vs .3 -> 2    cap5 img1 .2  vs .9  -> 2
#   cap1 img0 .2 vs .1 -> 1    cap6 img1 .25 vs .8  -> 2
#   cap2 img0 .3 vs .0 -> 1    cap7 img1 .9  vs .7  -> 1
#   cap3 img0 .4 vs .0 -> 1    cap8 img1 .1  vs .6  -> 2
#   cap4 img0 .5 vs .0 -> 1    cap9 img1 .1  vs .55 -> 2
#   ranks [2 1 1 1 1 2 2 1 2 2]: R@1 50, R@5 100, R@10 100, medr 1.5, meanr 1.5
# rsum = 50 + 50 + 100 + 50 + 100 + 100 = 450


def test_num_anns_5_hand_computed():
    m = retrieval_metrics(SIMS_2x10, 5)
    approx_dict(m, i2t_r1=50, i2t_r5=50, i2t_r10=100, i2t_medr=3.5, i2t_meanr=3.5,
                t2i_r1=50, t2i_r5=100, t2i_r10=100, t2i_medr=1.5, t2i_meanr=1.5, rsum=450)


def test_recall_at_10_boundary():
    # 12 images, num_anns=1; image i's correct caption is beaten by exactly i wrong captions,
    # so ranks are 1..12: R@1 = 1/12, R@5 = 5/12, R@10 = 10/12, medr 6.5, meanr 6.5.
    n = 12
    sims = np.zeros((n, n))
    for i in range(n):
        sims[i, i] = 1.0
        others = [j for j in range(n) if j != i][:i]
        sims[i, others] = 2.0
    m = retrieval_metrics(sims, 1)   # (the t2i side of this matrix is not the point here)
    approx_dict(m, i2t_r1=100 / 12, i2t_r5=500 / 12, i2t_r10=1000 / 12, i2t_medr=6.5,
                i2t_meanr=6.5)


# ---------------------------------------------------------------- ties
def test_all_equal_scores_rank_last():
    # Every wrong candidate ties with the correct one and is ranked ahead: all ranks = 2.
    m = retrieval_metrics(np.full((2, 2), 0.5), 1)
    approx_dict(m, i2t_r1=0, i2t_r5=100, i2t_medr=2, i2t_meanr=2,
                t2i_r1=0, t2i_r5=100, t2i_medr=2, t2i_meanr=2, rsum=400)


def test_ties_count_against_query_but_not_among_ground_truths():
    # num_anns=2: image 0 owns captions 0,1; image 1 owns captions 2,3.
    sims = np.array([
        [0.7, 0.7, 0.7, 0.1],
        [0.2, 0.2, 0.4, 0.4],
    ])
    # i2t img0: best GT 0.7 (two GTs tie, they do not compete); wrong cap2 = 0.7 ties -> rank 2
    # i2t img1: best GT 0.4 (caps 2 and 3 tie); wrong 0.2, 0.2 < 0.4                -> rank 1
    # t2i cap0: .7 vs .2 -> 1; cap1: .7 vs .2 -> 1; cap2: correct .4 vs .7 -> 2; cap3: .4 vs .1 -> 1
    m = retrieval_metrics(sims, 2)
    approx_dict(m, i2t_r1=50, i2t_medr=1.5, i2t_meanr=1.5,
                t2i_r1=75, t2i_medr=1, t2i_meanr=1.25)
    # one tied query (img0 with cap2); img1's two tied ground truths are not a tie with a wrong one
    assert (m["i2t_ties"], m["t2i_ties"]) == (1, 0)
    # optimistic: img0's best ground truth ranks before the tied cap2 -> rank 1
    approx_dict(retrieval_metrics(sims, 2, ties="optimistic"), i2t_r1=100, i2t_meanr=1, t2i_r1=75)


def test_tied_wrong_candidate_in_t2i():
    # caption 1's correct image (row 1) scores 0.6, row 0 also 0.6 -> rank 2, not 1.
    sims = np.array([[1.0, 0.6], [0.0, 0.6]])
    m = retrieval_metrics(sims, 1)
    assert m["t2i_r1"] == pytest.approx(50)
    assert m["t2i_meanr"] == pytest.approx(1.5)


# ---------------------------------------------------------------- tie rules
SIMS_TIES = np.array([
    [0.5, 0.5, 0.2],
    [0.9, 0.3, 0.3],
    [0.5, 0.4, 0.8],
])
# i2t (row i, correct column i):            pessimistic  optimistic  tied
#   img0: GT .5; wrong .5 (=) .2                  2            1       yes
#   img1: GT .3; wrong .9 (>) .3 (=)              3            2       yes
#   img2: GT .8; wrong .5 .4                      1            1       no
#   pessimistic [2,3,1]: R@1 33.3, medr 2, meanr 2; optimistic [1,2,1]: R@1 66.7, medr 1, meanr 4/3
# t2i (column j, correct row j):
#   cap0: col [.5 .9 .5], GT .5; .9 (>), .5 (=)   3            2       yes
#   cap1: col [.5 .3 .4], GT .3; .5 .4 (>)        3            3       no
#   cap2: col [.2 .3 .8], GT .8                   1            1       no
#   pessimistic [3,3,1]: R@1 33.3, medr 3, meanr 7/3; optimistic [2,3,1]: R@1 33.3, medr 2, meanr 2
# R@5 = R@10 = 100 everywhere: rsum 466.67 pessimistic, 500 optimistic. Ties: i2t 2, t2i 1.


def test_tie_rules_hand_computed():
    pes = retrieval_metrics(SIMS_TIES, 1)
    assert pes == retrieval_metrics(SIMS_TIES, 1, ties="pessimistic")   # the default
    approx_dict(pes, i2t_r1=100 / 3, i2t_r5=100, i2t_medr=2, i2t_meanr=2,
                t2i_r1=100 / 3, t2i_r5=100, t2i_medr=3, t2i_meanr=7 / 3, rsum=1400 / 3)
    opt = retrieval_metrics(SIMS_TIES, 1, ties="optimistic")
    approx_dict(opt, i2t_r1=200 / 3, i2t_r5=100, i2t_medr=1, i2t_meanr=4 / 3,
                t2i_r1=100 / 3, t2i_r5=100, t2i_medr=2, t2i_meanr=2, rsum=500)
    for m in (pes, opt):   # the count does not depend on the rule
        assert (m["i2t_ties"], m["t2i_ties"]) == (2, 1)


def test_all_equal_scores_optimistic_is_perfect():
    m = retrieval_metrics(np.full((2, 2), 0.5), 1, ties="optimistic")
    approx_dict(m, i2t_r1=100, t2i_r1=100, i2t_meanr=1, t2i_meanr=1, rsum=600)
    assert (m["i2t_ties"], m["t2i_ties"]) == (2, 2)


@pytest.mark.parametrize("num_anns", [1, 5])
def test_tie_rules_bracket_any_order_of_equal_scores(num_anns):
    # Scores on a grid of 4 values: many exact ties, in both directions.
    rng = np.random.default_rng(num_anns)
    n = 12
    sims = rng.integers(0, 4, size=(n, n * num_anns)).astype(np.float32) / 4
    i2t_pes, i2t_opt = em._i2t_ranks(torch.from_numpy(sims), num_anns)
    t2i_pes, t2i_opt = em._t2i_ranks(torch.from_numpy(sims), num_anns)
    assert (i2t_opt < i2t_pes).any() and (t2i_opt < t2i_pes).any()   # ties matter here
    for _ in range(5):
        i2t, t2i = naive_ranks(sims, num_anns, rng)
        assert (i2t_opt <= i2t).all() and (i2t <= i2t_pes).all()
        assert (t2i_opt <= t2i).all() and (t2i <= t2i_pes).all()
    pes = retrieval_metrics(sims, num_anns)
    opt = retrieval_metrics(sims, num_anns, ties="optimistic")
    for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"):
        assert opt[k] >= pes[k], k
    assert opt["rsum"] > pes["rsum"]
    for k in ("i2t_medr", "i2t_meanr", "t2i_medr", "t2i_meanr"):
        assert opt[k] <= pes[k], k
    assert pes["i2t_ties"] == opt["i2t_ties"] == int((i2t_opt < i2t_pes).sum()) > 0
    assert pes["t2i_ties"] == opt["t2i_ties"] == int((t2i_opt < t2i_pes).sum()) > 0


@pytest.mark.parametrize("num_anns", [1, 5])
def test_tie_rules_agree_without_ties(num_anns):
    rng = np.random.default_rng(10 + num_anns)
    sims = rng.standard_normal((15, 15 * num_anns))
    pes = retrieval_metrics(sims, num_anns)
    assert pes["i2t_ties"] == pes["t2i_ties"] == 0
    assert retrieval_metrics(sims, num_anns, ties="optimistic") == pes
    assert fold_metrics(sims, num_anns, folds=3, ties="optimistic") == fold_metrics(sims, num_anns, folds=3)


def test_unknown_tie_rule():
    with pytest.raises(ValueError, match="ties"):
        retrieval_metrics(SIMS_3x3, 1, ties="random")
    with pytest.raises(ValueError, match="ties"):
        fold_metrics(SIMS_3x3, 1, folds=1, ties="average")


# ---------------------------------------------------------------- agreement with naive ranks
@pytest.mark.parametrize("n_img,num_anns", [(7, 1), (20, 5), (13, 3)])
def test_matches_naive_argsort_without_ties(n_img, num_anns):
    rng = np.random.default_rng(n_img)
    sims = rng.standard_normal((n_img, n_img * num_anns))
    for i in range(n_img):
        sims[i, i * num_anns:(i + 1) * num_anns] += 1.0
    i2t, t2i = naive_ranks(sims, num_anns)
    m = retrieval_metrics(sims, num_anns)
    for k in (1, 5, 10):
        assert m[f"i2t_r{k}"] == pytest.approx(100 * np.mean(i2t <= k))
        assert m[f"t2i_r{k}"] == pytest.approx(100 * np.mean(t2i <= k))
    assert m["i2t_medr"] == pytest.approx(np.median(i2t))
    assert m["t2i_meanr"] == pytest.approx(np.mean(t2i))


def test_chunking_gives_same_result(monkeypatch):
    rng = np.random.default_rng(1)
    sims = rng.standard_normal((30, 150))
    full = retrieval_metrics(sims, 5)
    monkeypatch.setattr(em, "_CHUNK_ELEMENTS", 7 * 150)   # several row and column chunks
    assert retrieval_metrics(sims, 5) == full
    monkeypatch.setattr(em, "_CHUNK_ELEMENTS", 1)         # one row / column at a time
    assert retrieval_metrics(sims, 5) == full


# ---------------------------------------------------------------- input types
def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(2)
    sims = rng.standard_normal((10, 50)).astype(np.float32)
    a = retrieval_metrics(sims, 5)
    b = retrieval_metrics(torch.from_numpy(sims), 5)
    c = retrieval_metrics(torch.from_numpy(sims).double(), 5)
    d = retrieval_metrics(sims.tolist(), 5)
    assert a == b == c == d


def test_half_precision_tensor():
    sims = torch.tensor(SIMS_2x10, dtype=torch.float16)
    # float16 rounding keeps this matrix's ordering, so the hand-computed values still hold.
    approx_dict(retrieval_metrics(sims, 5), rsum=450)


def test_rsum_is_sum_of_six_recalls():
    rng = np.random.default_rng(3)
    m = retrieval_metrics(rng.standard_normal((8, 40)), 5)
    assert m["rsum"] == pytest.approx(sum(m[f"{d}_r{k}"] for d in ("i2t", "t2i")
                                          for k in (1, 5, 10)))


# ---------------------------------------------------------------- folds
def test_fold_metrics_mean_of_differing_folds():
    # 4 images, num_anns=1, 2 folds. Fold 0 (images/captions 0-1) is perfect: every rank 1.
    # Fold 1 (images/captions 2-3) is swapped: every rank 2. Off-diagonal blocks hold 5.0,
    # which would ruin every rank if they were (wrongly) used.
    sims = np.full((4, 4), 5.0)
    sims[0:2, 0:2] = [[1, 0], [0, 1]]
    sims[2:4, 2:4] = [[0, 1], [1, 0]]
    m = fold_metrics(sims, 1, folds=2)
    # fold 0: recalls 100, rsum 600, medr 1, meanr 1; fold 1: R@1 0, R@5/R@10 100, rsum 400, 2, 2
    approx_dict(m, i2t_r1=50, i2t_r5=100, i2t_r10=100, t2i_r1=50, t2i_r5=100, t2i_r10=100,
                i2t_medr=1.5, i2t_meanr=1.5, t2i_medr=1.5, t2i_meanr=1.5, rsum=500)
    # the full matrix is a different (much worse) result
    assert retrieval_metrics(sims, 1)["rsum"] < 500


def test_fold_metrics_equals_mean_over_blocks():
    rng = np.random.default_rng(4)
    n, a, f = 25, 5, 5
    sims = rng.standard_normal((n, n * a))
    m = fold_metrics(torch.from_numpy(sims), a, folds=f)
    s = n // f
    per = [retrieval_metrics(sims[i * s:(i + 1) * s, i * s * a:(i + 1) * s * a], a)
           for i in range(f)]
    for k in METRIC_KEYS:
        assert m[k] == pytest.approx(np.mean([p[k] for p in per])), k
    # t2i R@10 is the real one, not i2t R@10 (the reference release's COCO-1K slip)
    assert m["t2i_r10"] == pytest.approx(np.mean([p["t2i_r10"] for p in per]))


def test_fold_metrics_sums_tie_counts_over_folds():
    # 4 images, num_anns=1, 2 folds of all-equal 2x2 blocks: every query of both folds is tied
    # (2 per fold and direction). The off-diagonal 9.0 are not candidates under the 1K protocol.
    sims = np.full((4, 4), 9.0)
    sims[0:2, 0:2] = 0.5
    sims[2:4, 2:4] = 0.25
    pes = fold_metrics(sims, 1, folds=2)
    opt = fold_metrics(sims, 1, folds=2, ties="optimistic")
    assert (pes["i2t_ties"], pes["t2i_ties"]) == (opt["i2t_ties"], opt["t2i_ties"]) == (4, 4)
    approx_dict(pes, i2t_r1=0, t2i_r1=0, rsum=400)
    approx_dict(opt, i2t_r1=100, t2i_r1=100, rsum=600)


def test_fold_metrics_not_divisible():
    with pytest.raises(ValueError, match="6 images into 5"):
        fold_metrics(np.zeros((6, 30)), 5, folds=5)


# ---------------------------------------------------------------- validation
def test_shape_error_names_shapes():
    with pytest.raises(ValueError) as e:
        retrieval_metrics(np.zeros((3, 10)), 5)
    assert "(3, 10)" in str(e.value) and "(3, 15)" in str(e.value)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((0, 0)), np.zeros((2, 2, 2))])
def test_bad_dimensions(bad):
    with pytest.raises(ValueError):
        retrieval_metrics(bad, 1)


def test_bad_num_anns_and_nan():
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 2)), 0)
    sims = np.eye(2)
    sims[0, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(sims, 1)


# ---------------------------------------------------------------- table
def test_format_metrics_table():
    rows = {"test 5K": retrieval_metrics(SIMS_3x3, 1),
            "test 1K (5-fold)": retrieval_metrics(SIMS_2x10, 5),
            "ties": retrieval_metrics(SIMS_TIES, 1),
            "old": {k: v for k, v in retrieval_metrics(SIMS_3x3, 1).items() if k not in TIE_KEYS}}
    table = format_metrics_table(rows)
    lines = table.splitlines()
    assert any(line.startswith("test 5K ") for line in lines)
    assert any(line.startswith("test 1K (5-fold) ") for line in lines)
    row = next(line for line in lines if line.startswith("test 5K "))
    assert "33.3" in row and "66.7" in row and "500.0" in row and row.endswith(" 0/0")
    assert next(line for line in lines if line.startswith("ties ")).endswith(" 2/1")
    assert next(line for line in lines if line.startswith("old ")).endswith(" -")   # no counts
    assert "ties" in lines[0] and lines[1].endswith("i2t/t2i")
    assert "R@10" in table and "rsum" in table and "i2t" in table and "t2i" in table
    # fixed width: the header, rule and data lines have the same length
    assert len({len(line) for line in lines[1:]}) == 1


# ----------------------------------------------------------------------------- any number of captions per image

def test_variable_captions_per_image_hand_computed():
    """3 images with 2, 1 and 3 captions, not in consecutive order; ranks worked out by hand."""
    caption_image = np.array([0, 1, 2, 0, 2, 2])
    sims = np.array([
        # caption: 0     1     2     3     4     5
        [0.30, 0.90, 0.10, 0.50, 0.20, 0.00],   # image 0: own 0.30, 0.50 -> best 0.50; 0.90 above -> rank 2
        [0.80, 0.40, 0.70, 0.60, 0.10, 0.20],   # image 1: own 0.40; 0.80 0.70 0.60 above -> rank 4
        [0.10, 0.00, 0.20, 0.30, 0.90, 0.50],   # image 2: own 0.20 0.90 0.50 -> best 0.90 -> rank 1
    ])
    # t2i: caption 0 -> image 0 (0.30 vs 0.80 0.10): rank 2; caption 1 -> image 1 (0.40 vs 0.90): 2;
    # caption 2 -> image 2 (0.20 vs 0.10 0.70): 2; caption 3 -> image 0 (0.50 vs 0.60 0.30): 2;
    # caption 4 -> image 2 (0.90): 1; caption 5 -> image 2 (0.50 vs 0.00 0.20): 1.
    m = retrieval_metrics(sims, caption_image=caption_image)
    assert m["i2t_r1"] == pytest.approx(100 / 3) and m["i2t_r5"] == 100
    assert m["i2t_medr"] == 2 and m["i2t_meanr"] == pytest.approx(7 / 3)
    assert m["t2i_r1"] == pytest.approx(100 * 2 / 6) and m["t2i_r5"] == 100
    assert m["t2i_medr"] == 2 and m["t2i_meanr"] == pytest.approx(10 / 6)
    assert m["i2t_ties"] == 0 and m["t2i_ties"] == 0


def test_variable_captions_ties_and_errors():
    caption_image = np.array([0, 0, 1])
    sims = np.array([[0.5, 0.5, 0.5], [0.1, 0.2, 0.3]])
    pess = retrieval_metrics(sims, caption_image=caption_image)
    opt = retrieval_metrics(sims, caption_image=caption_image, ties="optimistic")
    assert pess["i2t_ties"] == 1 and pess["i2t_r1"] == 50 and opt["i2t_r1"] == 100  # own GTs are no competitors
    with pytest.raises(ValueError, match="without a caption"):
        retrieval_metrics(np.zeros((3, 3)), caption_image=np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="expected"):
        retrieval_metrics(np.zeros((2, 4)), caption_image=np.array([0, 0, 1]))


@pytest.mark.parametrize("num_anns", [1, 2, 5])
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_caption_image_with_k_per_image_equals_num_anns_bit_for_bit(num_anns, ties, monkeypatch):
    rng = np.random.default_rng(num_anns)
    n = 40
    sims = rng.integers(0, 6, size=(n, n * num_anns)).astype(np.float32)  # many ties
    ci = np.repeat(np.arange(n), num_anns)
    monkeypatch.setattr(em, "_CHUNK_ELEMENTS", 97)  # several chunks in both paths
    fixed = retrieval_metrics(sims, num_anns, ties)
    general = retrieval_metrics(sims, ties=ties, caption_image=ci)
    assert fixed == general and [type(v) for v in fixed.values()] == [type(v) for v in general.values()]
    for direction in ("i2t", "t2i"):
        a = getattr(em, f"_{direction}_ranks")(torch.as_tensor(sims), num_anns)
        b = getattr(em, f"_{direction}_ranks_any")(torch.as_tensor(sims), torch.as_tensor(ci))
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
