"""A newcomer's first hour: evaluation that knows its checkpoint, checks before writes, the bank's batch,
progress in log files, defaults against the repository, the flags' spellings and help, results.json."""
import json
import shutil

import pytest

import main_CLIP
import main_NPC
from conftest import MODEL, run_args


def test_eval_takes_data_and_model_from_the_checkpoint_and_builds_nothing(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    res = main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "c",
                                  "--noise_ratio", "0.4"))
    ann = fresh_root / "annotations" / "scan_split"
    for p in ann.glob("0.4_noise*"):
        p.unlink()
    before = sorted(p.name for p in fresh_root.rglob("*"))
    empty = tmp_path / "no_base_here"
    empty.mkdir()
    ev = main_CLIP.main(["--eval", "--resume", "latest", "--experiments", "c", "--logs_dir", str(logs),
                         "--pretrained_dir", str(empty), "--num_workers", "0", "--no_progress"])
    assert ev["results"] == res["results"]
    assert sorted(p.name for p in fresh_root.rglob("*")) == before  # no noisy split, no bank
    assert list(empty.iterdir()) == []  # no demo base
    assert not (logs / "c" / "eval_results.json").exists() and not (logs / "c" / "eval_params.txt").exists()
    [own] = [d for d in logs.iterdir() if d.name.startswith("c_eval_")]
    log = (own / "log.txt").read_text()
    assert f"--vision_model {MODEL}" in log and f"--dataset_root {fresh_root}" in log
    assert json.loads((own / "eval_results.json").read_text())["results"] == res["results"]


def test_demo_eval_of_a_base_file_does_not_pretrain_the_default_base(demo_root, base_dir, tmp_path):
    [base] = base_dir.glob("*.pt")
    mine = tmp_path / "my_base.pt"
    shutil.copy(base, mine)
    empty = tmp_path / "pretrained"
    empty.mkdir()
    ev = main_CLIP.main(["--dataset", "demo", "--dataset_root", str(demo_root), "--eval", "--pretrained", str(mine),
                         "--vision_model", MODEL, "--pretrained_dir", str(empty), "--logs_dir", str(tmp_path / "logs"),
                         "--num_workers", "0", "--no_progress"])
    assert ev["results"] and list(empty.iterdir()) == []


def test_eval_flags_given_override_the_checkpoint(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "n"))
    ev = main_NPC.main(["--eval", "--resume", str(logs / "n" / "checkpoints" / "best.pt"), "--logs_dir", str(logs),
                        "--eval_splits", "dev", "--num_workers", "0", "--no_progress"])
    assert list(ev["results"]) == ["dev (16 images)"]


def test_bank_provenance_records_the_banks_batch_not_the_training_batch(demo_root):
    from npc import data
    from npc import memory_bank as mb
    from npc.params import parse_args

    split = data.load_split(demo_root, "demo", "train")
    a = parse_args(["--dataset_root", str(demo_root), "--batch_size", "16"], "npc")
    b = parse_args(["--dataset_root", str(demo_root), "--batch_size", "32"], "npc")
    pa, pb = mb.bank_provenance(a, split), mb.bank_provenance(b, split)
    assert pa == pb and pa["bank_batch_size"] == 128 and "batch_size" not in pa
    assert mb.bank_provenance(parse_args(["--dataset", "coco"], "npc"), split)["bank_batch_size"] == 256
    c = parse_args(["--dataset_root", str(demo_root), "--bank_batch_size", "64"], "npc")
    assert mb.bank_provenance(c, split)["bank_batch_size"] == 64


def test_checks_run_before_anything_is_written(fresh_root, base_dir, tmp_path, capsys):
    from npc.cli import cli

    logs = tmp_path / "logs"
    before = sorted(p.name for p in fresh_root.rglob("*"))
    for extra in (["--batch_size", "100000"], ["--eval_splits", "nosuch"]):
        assert cli(main_NPC.main, run_args(fresh_root, base_dir, logs, "--noise_ratio", "0.3", "--experiments", "x",
                                           *extra)) == 1
        assert not logs.exists() or list(logs.iterdir()) == []  # no run folder
        assert sorted(p.name for p in fresh_root.rglob("*")) == before  # no noisy split, no bank
    err = capsys.readouterr().err
    assert "error: --batch_size 100000 is larger than the 400 training pairs" in err
    assert "nosuch_caps.txt" in err


def test_setup_failure_after_the_folder_removes_it(fresh_root, base_dir, tmp_path, capsys):
    from npc.cli import cli

    logs = tmp_path / "logs"
    # the bank's files are refused after the run folder exists: the folder goes, the error is printed
    bank = fresh_root / "annotations" / "memory_bank"
    bank.mkdir(parents=True)
    (bank / "0.3_mbank_img_idx.npy").write_bytes(b"garbage")
    (bank / "0.3_mbank_txt_idx.npy").write_bytes(b"garbage")
    assert cli(main_NPC.main, run_args(fresh_root, base_dir, logs, "--noise_ratio", "0.3", "--experiments", "y",
                                       "--epochs", "1")) == 1
    assert "error:" in capsys.readouterr().err and not (logs / "y").exists()


@pytest.mark.parametrize("extra, expected", [
    (["--warmup", "1000"], "warning: --warmup 1000 is longer than the whole run (25 steps"),
])
def test_warmup_longer_than_the_run_warns(fresh_root, base_dir, tmp_path, capsys, extra, expected):
    main_CLIP.main(run_args(fresh_root, base_dir, tmp_path / "logs", "--epochs", "1", "--experiments", "w", *extra))
    out = capsys.readouterr().out
    assert sum(expected in line for line in out.splitlines()) == 1
    assert expected in (tmp_path / "logs" / "w" / "log.txt").read_text()


def test_real_data_defaults_on_a_small_csv_dataset_warn(tmp_path, capsys):
    from test_own_data import make_images_and_csvs

    files = make_images_and_csvs(tmp_path / "d")
    main_CLIP.main(["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
                    "--test_data", str(files["test"]), "--vision_model", "npc-micro", "--pretrained", "none",
                    "--batch_size", "8", "--epochs", "1", "--logs_dir", str(tmp_path / "logs"), "--num_workers", "0",
                    "--no_progress", "--experiments", "r"])
    out = capsys.readouterr().out
    assert "warning: the real-data defaults (--lr 5e-07, --warmup 500) are the release's" in out
