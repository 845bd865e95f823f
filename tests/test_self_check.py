"""A model that cannot see the pairs says so: the self-check (npc/self_check.py) in the noise report and at
the memory bank's build."""
import json

import numpy as np
import pytest
import torch

import find_noisy_pairs
import main_CLIP
from helpers import MODEL, csv_flags, make_images_and_csvs
from npc.self_check import min_own_auc, separability

RANDOM_WORDS = ["stone", "river", "glass", "orange", "quiet", "seven", "paper", "window", "lamp", "cloud", "green",
                "metal", "small", "old", "dog", "tree", "bread", "north", "soft", "bridge"]


def _features(n_img, caps_per_image, d, match, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n_img, d, generator=g), dim=1)
    ci = np.repeat(np.arange(n_img), caps_per_image)
    noise = torch.randn(len(ci), d, generator=g)
    txt = torch.nn.functional.normalize(match * img[torch.as_tensor(ci)] + noise, dim=1)
    return img, txt, ci


def test_features_that_match_pass_and_unrelated_ones_fire():
    img, txt, ci = _features(300, 2, 32, match=3.0)
    seen = separability(img, txt, ci, p_clean=np.full(len(ci), 0.99))
    assert seen["can_see"] and seen["own_caption_auc"] > 0.8 and seen["message"].startswith("self-check:")
    assert seen["images"] == 300 and seen["captions"] == 600 and seen["chance"] == pytest.approx(1 / 300)
    assert seen["undecided_fraction"] == 0.0

    img, txt, ci = _features(300, 2, 32, match=0.0)
    blind = separability(img, txt, ci, p_clean=np.full(len(ci), 0.5), gmm={"means": [0.4, 0.6],
                                                                            "variances": [0.01, 0.01]})
    assert not blind["can_see"] and abs(blind["own_caption_auc"] - 0.5) < 0.05
    assert blind["undecided_fraction"] == 1.0 and blind["component_gap"] == pytest.approx(1.0)
    assert blind["message"].startswith("warning: scores near chance") and "--pretrained openai" in blind["message"]
    assert "i2t R@1" in blind["message"] and "chance 0.3%" in blind["message"]


def test_the_subset_is_capped_and_a_small_split_needs_more_than_luck():
    img, txt, ci = _features(500, 3, 16, match=3.0)
    r = separability(img, txt, ci, max_images=100)
    assert r["images"] == 100 and r["captions"] == 300 and r["can_see"]
    assert min_own_auc(10_000) == 0.55 and min_own_auc(25) == pytest.approx(0.5 + 3 * 0.289 / 5)


@pytest.fixture(scope="module")
def seeing_base(demo_root, tmp_path_factory):
    """A tiny demo base pretrained long enough to see the demo's scenes (the shared one, 1 epoch, cannot:
    bench/results/self_check/calibration.json)."""
    from npc.demo import ensure_demo_base

    d = tmp_path_factory.mktemp("seeing_base")
    ensure_demo_base(demo_root, MODEL, d, progress=False, log=lambda *_: None,
                     recipe=dict(epochs=30, batch_size=32, warmup=2))
    return d


def textures_csv(folder, n=120, seed=0):
    """Images of random noise, each with a caption of random words: nothing for any model to see."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / "images" / f"t{i}.png")
        rows.append(f"images/t{i}.png\t" + " ".join(rng.choice(RANDOM_WORDS, size=5)))
    path = folder / "train.csv"
    path.write_text("filepath\ttitle\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_the_report_trusts_a_model_that_sees_and_warns_on_textures_it_cannot(fresh_root, seeing_base, tmp_path,
                                                                             capsys):
    common = ["--vision_model", MODEL, "--pretrained_dir", str(seeing_base), "--eval_batch_size", "64",
              "--num_workers", "0", "--no_progress"]
    demo = find_noisy_pairs.main(["--dataset", "demo", "--dataset_root", str(fresh_root), "--out",
                                  str(tmp_path / "demo_report"), *common])
    check = demo["self_check"]
    assert check["can_see"] and check["own_caption_auc"] >= check["min_own_caption_auc"]
    assert demo["detectors"]["p_clean"]["auc"] > 0.6  # the model sees: its p(clean) finds the noise
    assert json.loads((tmp_path / "demo_report" / "report.json").read_text())["self_check"] == check
    assert 'id="self-check"' not in (tmp_path / "demo_report" / "index.html").read_text(encoding="utf-8")
    assert "self-check: the model tells these pairs apart" in capsys.readouterr().out

    tex = find_noisy_pairs.main(["--dataset", "csv", "--train_data", str(textures_csv(tmp_path / "tex")),
                                 "--pretrained", "demo-base", "--out", str(tmp_path / "tex_report"), *common])
    check = tex["self_check"]
    assert not check["can_see"] and check["own_caption_auc"] < check["min_own_caption_auc"]
    assert check["images"] == 120 and check["captions"] == 120
    out = capsys.readouterr().out
    assert "warning: scores near chance" in out
    page = (tmp_path / "tex_report" / "index.html").read_text(encoding="utf-8")
    assert page.index('id="self-check"') < page.index("<h2")  # at the top, before anything else
    assert "--pretrained openai" in page


def test_a_run_whose_model_cannot_see_warns_at_the_banks_build_and_records_the_numbers(tmp_path, capsys):
    files = make_images_and_csvs(tmp_path / "mydata")
    logs = tmp_path / "logs"
    main_CLIP.main(csv_flags(files, logs, "--experiments", "blind", "--method", "gmm_filter", "--noise_ratio", "0.3"))
    info_files = list((tmp_path / "mydata").glob("train.memory_bank/*/*_mbank_info.json"))
    assert len(info_files) == 1
    check = json.loads(info_files[0].read_text())["self_check"]
    assert not check["can_see"] and 0 <= check["undecided_fraction"] <= 1  # random weights see nothing
    log = (logs / "blind" / "log.txt").read_text()
    assert "memory bank: warning: scores near chance" in log

    # A second run reusing the bank says it again
    main_CLIP.main(csv_flags(files, logs, "--experiments", "again", "--method", "gmm_filter", "--noise_ratio", "0.3"))
    again = (logs / "again" / "log.txt").read_text()
    assert "memory bank: reusing" in again and "scores near chance" in again


def test_a_run_that_builds_no_bank_checks_its_initial_model_on_the_dev_split(tmp_path):
    files = make_images_and_csvs(tmp_path / "mydata")
    logs = tmp_path / "logs"
    main_CLIP.main(csv_flags(files, logs, "--experiments", "plain", "--method", "clip"))  # random weights: blind
    log = (logs / "plain" / "log.txt").read_text()
    assert "the initial model: warning: scores near chance" in log and "dev split" in log
    assert "memory bank" not in log
    # the check draws nothing from the run's random state: the same run with the check's encoding skipped
    # trains to the same weights (the dev split holds 6 images: it cannot change what training draws)
    first = (logs / "plain" / "metrics.jsonl").read_text().splitlines()[0]
    import npc.engine as engine

    real, engine.check_initial_model = engine.check_initial_model, lambda *a, **k: None
    try:
        main_CLIP.main(csv_flags(files, logs, "--experiments", "unchecked", "--method", "clip"))
    finally:
        engine.check_initial_model = real
    again = (logs / "unchecked" / "metrics.jsonl").read_text().splitlines()[0]
    drop = lambda line: {k: v for k, v in json.loads(line).items() if k != "pairs_per_s"}  # noqa: E731
    assert drop(first) == drop(again)
