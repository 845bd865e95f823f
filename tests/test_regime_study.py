"""Helpers of bench/regime_study.py that compute something (fast: no model is trained)."""
import math

import numpy as np
import pytest


from studylib.harshness import caption_truth, parse_caption, split_harshness, summarize
from npc import synthetic as syn

RED_CIRCLE = syn.SceneObject("circle", "red", "small", 0.2, 0.5, 0.1, 0.0, (220, 40, 40))
BLUE_SQUARE = syn.SceneObject("square", "blue", "large", 0.8, 0.5, 0.17, 0.0, (40, 80, 220))
SCENE = syn.Scene("grey", "striped", 0, (128, 128, 128), (RED_CIRCLE, BLUE_SQUARE))


def test_parse_reads_objects_background_and_both_relation_orders():
    p = parse_caption("A small red disc to the left of a big blue box.")
    assert p["objects"] == [("small", "red", "circle"), ("large", "blue", "square")]
    assert p["relations"] == [(0, "left", 1)]
    p = parse_caption("Above a red circle is a green star shape")   # fronted: the star is above the circle
    assert p["objects"] == [(None, "red", "circle"), (None, "green", "star")]
    assert p["relations"] == [(1, "above", 0)]
    p = parse_caption("On a striped gray background, a violet shape")
    assert p["background"] == [("grey", "striped")] and p["objects"] == [(None, "purple", None)]


def test_caption_truth_on_a_hand_made_scene():
    t = caption_truth("A red circle left of a blue square.", SCENE)
    assert (t["n_mentions"], t["frac_true"], t["all_true"]) == (3, 1.0, 1.0)
    # colours swapped: no object and no relation holds, though every colour and shape word does
    t = caption_truth("A blue circle left of a red square", SCENE)
    assert (t["objects_true"], t["bindings_true"], t["relations_true"], t["frac_true"]) == (0, 0, 0, 0.0)
    assert (t["colour_words_true"], t["shape_words_true"]) == (2, 2)
    # both objects exist, the relation is reversed: 2 of 3 mentions
    t = caption_truth("A blue square to the left of a red circle", SCENE)
    assert t["frac_true"] == pytest.approx(2 / 3) and t["relations_true"] == 0
    # fronted: the green star does not exist, so neither does its relation: 1 of 3
    t = caption_truth("Above a red circle is a green star", SCENE)
    assert t["frac_true"] == pytest.approx(1 / 3) and t["all_true"] == 0.0
    # wrong size and wrong texture
    t = caption_truth("A large red circle on a dotted grey background", SCENE)
    assert (t["objects_true"], t["background_true"], t["frac_true"]) == (0, 0, 0.0)
    assert caption_truth("A red circle on a grey background", SCENE)["frac_true"] == 1.0
    t = caption_truth("A picture in the middle", SCENE)   # nothing this reader checks
    assert t["n_mentions"] == 0 and math.isnan(t["frac_true"])


def test_generated_clean_captions_are_all_true():
    for rec in syn.split_records("train", 40):
        for cap in rec.captions:
            t = caption_truth(cap, rec.scene)
            assert t["n_mentions"] == 0 or t["all_true"] == 1.0, cap


def test_split_harshness_separates_clean_and_noisy():
    captions = ["A red circle left of a blue square", "A green star above a black cross", "A blue square"]
    out = split_harshness(captions, np.array([0, 0, 0]), np.array([False, True, False]), [SCENE])
    assert out["clean"]["n_captions"] == 2 and out["clean"]["frac_all_true"] == 1.0
    assert out["noisy"]["mean_frac_true"] == 0.0 and out["noisy"]["frac_no_mention_true"] == 1.0
    s = summarize([caption_truth(c, SCENE) for c in captions[:2]])
    assert s["objects_true"] == pytest.approx(2 / 4) and s["relations_true"] == pytest.approx(1 / 2)


def test_osa_train_weights_follow_the_batches():
    import torch

    from bench.regime_study import osa_train_weights
    from npc.osa import osa_weight_function

    class FakeSplit:
        caption_image = np.array([0, 0, 1, 1, 2])

        def __len__(self):
            return 5

    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 4, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=-1)
    f = {"split": FakeSplit(), "img": img, "txt": txt, "scale": 10.0}
    w = osa_train_weights(f, shift=0.5, batch=5)      # one batch holds every pair (in a shuffled order)
    ci = torch.as_tensor(FakeSplit.caption_image)
    expect = osa_weight_function(10.0 * img[ci] @ txt.t(), 0.5).numpy()   # the weight reads only the diagonal and its max
    assert np.allclose(w, expect, atol=1e-6)


def test_merge_replaces_rows_of_the_same_key(tmp_path):
    from bench.regime_study import _merge

    out = tmp_path / "r.json"
    record = {"rows": [{"part": "detection", "base": "b", "noise_ratio": 0.4, "estimator": "cosine", "auc": 0.1},
                       {"part": "detection", "base": "b", "noise_ratio": 0.2, "estimator": "cosine", "auc": 0.2}]}
    _merge(record, [{"part": "detection", "base": "b", "noise_ratio": 0.4, "estimator": "cosine", "auc": 0.9}],
           {"command": "python bench/regime_study.py"}, out)
    aucs = sorted((r["noise_ratio"], r["auc"]) for r in record["rows"])
    assert aucs == [(0.2, 0.2), (0.4, 0.9)]
    assert out.is_file()


def test_render_writes_the_tables_from_a_record(tmp_path):
    from bench.regime_study import render

    det = {"part": "detection", "base": "tiny-e6", "noise_ratio": 0.4, "auc": 0.9, "mean_noise_rank": 1500.0,
           "mean_noise_rank_optimal": 1601.5, "mean_noise_rank_random": 1000.5, "command": "python bench/regime_study.py",
           "git_commit": "abc", "device": "cpu"}
    rows = [{**det, "estimator": "cosine"}, {**det, "estimator": "osa_debiased", "noisy_caught": 0.25, "clean_kept": 1.0},
            {"part": "npc", "base": "tiny-e6", "noise_ratio": 0.4, "estimator": "npc_shipped", "regime": "shipped",
             "variant": "paper", "precision": "fp32", "lr": 2e-4, "batch": 128, "n_pairs": 256, "auc": 0.51,
             "mean_noise_rank": 1010.0, "mean_noise_rank_optimal": 200.0, "mean_noise_rank_random": 128.5,
             "mean_w_clean": 0.8, "mean_w_noisy": 0.79, "frac_w_one": 0.4, "siamese_changed_fraction": 1.0,
             "ratio_std": 0.08, "auc_cosine_same_pairs": 0.94, "seconds_per_step": 1.0}]
    record = {"rows": rows, "bases": {"tiny-e6": {"test_rsum": 182.5}}, "verdict": "No."}
    text = render(record, tmp_path / "r.md", tmp_path / "r.png")
    assert "| tiny-e6 | 182.5 | 0.900 |" in text
    assert "0.250 | 1.000 | 0.510 / 1010.0" in text
    assert "## Verdict" in text and "`python bench/regime_study.py` (abc; cpu)" in text
    assert (tmp_path / "r.md").read_text() == text


def test_oracle_control_masks_the_share_of_pairs_it_names():
    import numpy as np

    from bench.oracle_data_control import random_mask

    for n, fraction in [(10000, 0.6), (10000, 0.4), (7, 0.5)]:
        mask = random_mask(n, fraction, 99)
        assert mask.dtype == bool and mask.sum() == round(fraction * n)
        assert np.array_equal(mask, random_mask(n, fraction, 99)) and not np.array_equal(mask, random_mask(n, fraction, 1))
