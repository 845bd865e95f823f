"""Every per-pair file a run writes has a CSV beside it keyed by the user's own rows."""
import csv

import numpy as np
import pytest

import find_noisy_pairs
import main_CLIP
from helpers import csv_flags, make_images_and_csvs
from npc import data
from npc.memory_bank import pclean_path
from npc.pair_weights import load_pair_weights


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_csv_runs_per_pair_files_join_to_the_users_csv_by_line_number_alone(tmp_path):
    files = make_images_and_csvs(tmp_path / "mydata")  # an image's rows are not adjacent: split order != file order
    logs = tmp_path / "logs"
    main_CLIP.main(csv_flags(files, logs, "--experiments", "mine", "--method", "gmm_filter", "--noise_ratio", "0",
                             "--epochs", "2"))
    lines = files["train"].read_text(encoding="utf-8").splitlines()
    split = data.read_csv_split(files["train"], "train")
    assert not np.array_equal(split.source_lines, np.sort(split.source_lines))  # the two orders differ

    def joined(rows):
        """Every row's image and caption are those of its line in the user's file; rows in line order."""
        assert len(rows) == len(lines) - 1 == len(split)
        numbers = [int(r["key"]) for r in rows]
        assert numbers == sorted(numbers) == list(range(2, len(lines) + 1))
        for r in [rows[k] for k in (0, 3, 7, 12, len(rows) - 1)]:
            assert lines[int(r["key"]) - 1] == f"{r['image']}\t{r['caption']}"
        return {int(r["key"]): r for r in rows}

    # pair_weights.csv: a column per epoch, the npz's values at the pair with that line
    pw = load_pair_weights(logs / "mine")
    rows = joined(read_csv(logs / "mine" / "pair_weights.csv"))
    assert list(next(iter(rows.values())))[3:] == ["weight_epoch1", "weight_epoch2"]
    for j, line in enumerate(split.source_lines.tolist()):
        for e in (0, 1):
            cell, w = rows[line][f"weight_epoch{e + 1}"], pw.weights[e, j]
            assert (cell == "") if np.isnan(w) else float(cell) == pytest.approx(float(w), rel=1e-5)

    # the memory bank's <r>_mbank_pclean.csv: p(clean) and the clean set, the npy's values at the pair with that line
    (bank_dir,) = (files["train"].parent / "train.memory_bank").iterdir()
    p_clean = np.load(pclean_path(bank_dir, 0))
    rows = joined(read_csv(pclean_path(bank_dir, 0).with_suffix(".csv")))
    for j, line in enumerate(split.source_lines.tolist()):
        assert float(rows[line]["p_clean"]) == pytest.approx(p_clean[j], rel=1e-5, abs=1e-12)
        assert rows[line]["clean"] == str(int(p_clean[j] > 0.9))

    # the noise report's pairs.csv: its line column joins the same way, and its weights are the run's
    out = tmp_path / "report"
    find_noisy_pairs.main(["--dataset", "csv", "--train_data", str(files["train"]), "--vision_model", "npc-micro",
                           "--pretrained", "none", "--num_workers", "0", "--no_progress", "--out", str(out),
                           "--run", str(logs / "mine")])
    report = read_csv(out / "pairs.csv")
    by_line = joined(sorted(report, key=lambda r: int(r["key"])))
    means = pw.mean_over_epochs()
    for j, line in enumerate(split.source_lines.tolist()):
        assert int(by_line[line]["pair"]) == j
        assert float(by_line[line]["weight_mine"]) == pytest.approx(means[j], rel=1e-5)


def test_a_demo_runs_pair_weights_csv_is_keyed_by_the_caption_files_lines(fresh_root, base_dir, tmp_path):
    from helpers import run_args

    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "d"))
    rows = read_csv(logs / "d" / "pair_weights.csv")
    caps = (fresh_root / "annotations" / "scan_split" / "0.4_noise_train_caps.txt").read_text().splitlines()
    assert [r["key"] for r in rows] == [str(k) for k in range(1, len(caps) + 1)]
    assert [r["caption"] for r in rows] == caps
    assert rows[0]["image"].startswith("images/") and rows[0]["weight_epoch1"] == "1"
