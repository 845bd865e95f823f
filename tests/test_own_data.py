"""--dataset csv: your own images and CSV files, from a folder of images to a trained, evaluated model."""
import json

import numpy as np
import pytest
from PIL import Image

import construct_noise
import main_CLIP
import main_NPC
from helpers import COLORS, SHAPES, csv_flags, make_images_and_csvs
from npc import data


def test_read_csv_groups_rows_of_an_image(tmp_path):
    files = make_images_and_csvs(tmp_path)
    split = data.read_csv_split(files["train"], "train")
    assert split.num_images == 24 and len(split) == sum(1 + i % 3 for i in range(24))
    assert split.uniform_num_anns is None and split.num_anns == 3
    assert np.all(np.diff(split.caption_image) >= 0)  # grouped by image
    for j, cap in enumerate(split.captions):
        i = int(split.image_ids[split.caption_image[j]].split("_")[1].split(".")[0])
        color, shape = [(c, s) for c in COLORS for s in SHAPES][i % 12]
        assert color in cap and shape in cap
    assert "train.csv, line" in split.describe_image(0)


@pytest.mark.parametrize("content, expected", [
    ("image\ttitle\nimages/a.png\ta cat\n", r"train.csv, line 1: no column 'filepath' .*'image', 'title'.*tab"),
    ("filepath,title\nimages/a.png,a cat\n", r"line 1: no column 'filepath'.*'filepath,title'.*tab"),
    ("filepath\ttitle\nimages/a.png\ta cat\nimages/b.png\t \n", r"train.csv, line 3: empty caption"),
    ("filepath\ttitle\nimages/a.png\ta cat\nimages/zz.png\ta dog\n", r"train.csv, line 3: image not found: .*zz.png"),
    ("filepath\ttitle\nimages/a.png\ta cat\nimages/bad.png\ta dog\n",
     r"cannot read image .*bad.png: not an image file PIL can open .*train.csv, line 3\).*--skip_unreadable_images"),
    ("filepath\ttitle\nimages/a.png\ta cat\nimages/a.png\ta dog\n", r"train.csv: the train split has 1 image"),
])
def test_bad_csv_input_is_one_line_naming_file_and_line(tmp_path, content, expected):
    (tmp_path / "images").mkdir()
    for n in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{n}.png")
    (tmp_path / "images" / "bad.png").write_bytes(b"not an image")
    (tmp_path / "train.csv").write_text(content)
    with pytest.raises(data.DataError, match=expected) as e:
        data.read_csv_split(tmp_path / "train.csv", "train")
    assert "\n" not in str(e.value)


def test_csv_noise_files_beside_the_csv_and_construct_noise(tmp_path):
    files = make_images_and_csvs(tmp_path)
    assert construct_noise.main(["--train_data", str(files["train"]), "--noise_ratio", "0.5"]) == 0
    noisy = tmp_path / "train.0.5_noise_train_caps.txt"
    assert noisy.is_file() and (tmp_path / "train.0.5_noise_train_caps_mask.npy").is_file()
    from npc.config import DataConfig
    from npc.sources import source_for

    d = DataConfig(dataset="csv", train_data=str(files["train"]), noise_ratio=0.5)
    split, mask = source_for(d).load_train(log=lambda *_: None)
    clean = data.read_csv_split(files["train"], "train")
    assert split.caps_file == noisy and mask.sum() > 0
    assert np.array_equal(mask, np.array(clean.captions) != np.array(split.captions))
    split0, mask0 = source_for(DataConfig(dataset="csv", train_data=str(files["train"]), noise_ratio=0)).load_train(
        log=lambda *_: None)
    assert mask0 is None and split0.captions == clean.captions  # real noise: not measurable


def test_dev_subset_by_captions_matches_fixed_layout(demo_root):
    dev = data.load_split(demo_root, "demo", "dev")
    for n in (1, 4, 5, 12, 10 ** 6):
        a, b = dev.subset_captions(n), dev.subset_images(max(1, n // 5))
        assert a.image_ids == b.image_ids and a.captions == b.captions


@pytest.mark.parametrize("script, noise", [(main_NPC, "0.4"), (main_CLIP, "0")])
def test_folder_of_images_and_csv_to_trained_and_evaluated_model(tmp_path, monkeypatch, script, noise):
    """docs/own_data.md's path: images + CSVs, 1 epoch, then --eval --resume best.pt with no dataset flags."""
    files = make_images_and_csvs(tmp_path / "mydata")
    logs = tmp_path / "logs"
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    res = script.main(csv_flags(files, logs, "--experiments", "mine", "--noise_ratio", noise))
    run = logs / "mine"
    best = run / "checkpoints" / "best.pt"
    assert best.is_file() and (run / "results.json").is_file()
    derived = {p.name for p in (tmp_path / "mydata").iterdir()}
    assert "train.train_caps.txt" in derived
    if script is main_NPC:
        assert {"train.0.4_noise_train_caps.txt", "train.0.4_noise_train_caps_mask.npy"} <= derived
        bank_dir = tmp_path / "mydata" / "train.memory_bank" / "npc-micro_none_a6ea3c9b"  # model, weights, their key
        assert (bank_dir / "0.4_mbank_img_idx.npy").is_file()
        bank = json.loads((bank_dir / "0.4_mbank_info.json").read_text())
        assert isinstance(bank["precision"], float)
    else:
        record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        assert "npc" not in record
    ev = main_NPC.main(["--eval", "--resume", str(best), "--logs_dir", str(logs), "--num_workers", "0",
                        "--no_progress"])
    assert ev["dataset"] == "csv" and ev["results"] == res["results"]
    eval_dirs = [d for d in logs.iterdir() if (d / "eval_results.json").is_file()]
    assert len(eval_dirs) == 1 and eval_dirs[0] != run and not (run / "eval_results.json").exists()
    log = (eval_dirs[0] / "log.txt").read_text()
    assert "--dataset csv" in log and "--vision_model npc-micro" in log and str(files["test"]) in log
    assert list(work.iterdir()) == []  # nothing generated under the current folder (no demo, no base)


def test_npc_at_real_noise_reports_auc_and_bank_quality_as_not_measurable(tmp_path):
    files = make_images_and_csvs(tmp_path / "d")
    main_NPC.main(csv_flags(files, tmp_path / "logs", "--experiments", "r", "--noise_ratio", "0"))
    npc = json.loads((tmp_path / "logs" / "r" / "metrics.jsonl").read_text().splitlines()[0])["weights"]
    assert npc["weight_auc"] is None and "mean_weight_clean" not in npc
    [info] = (tmp_path / "d" / "train.memory_bank").glob("npc-micro_none_*/0_mbank_info.json")
    bank = json.loads(info.read_text())
    assert "not measurable" in bank["precision"] and "not measurable" in bank["recall"]
    assert "AUC not measurable" in (tmp_path / "logs" / "r" / "log.txt").read_text()


def test_get_memorybank_builds_the_bank_beside_the_csv_and_training_reuses_it(tmp_path, capsys):
    import get_memorybank

    files = make_images_and_csvs(tmp_path / "d")
    flags = csv_flags(files, tmp_path / "logs", "--noise_ratio", "0.4")
    get_memorybank.main(flags)
    [bank] = (tmp_path / "d" / "train.memory_bank").iterdir()
    info = json.loads((bank / "0.4_mbank_info.json").read_text())
    assert info["noisy_split"] == "train.0.4_noise_train_caps.txt" and info["bank_batch_size"] == 256
    main_NPC.main(flags + ["--experiments", "r"])
    assert "memory bank: reusing" in (tmp_path / "logs" / "r" / "log.txt").read_text()
