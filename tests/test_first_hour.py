"""A newcomer's first hour: evaluation that knows its checkpoint, checks before writes, the bank's batch,
progress in log files, defaults against the repository, the flags' spellings and help, results.json."""
import json
import shutil

import pytest

import main_CLIP
import main_NPC
from helpers import MODEL, make_images_and_csvs, run_args


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
    assert list(ev["results"]) == ["dev"] and ev["results"]["dev"]["images"] == 16


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
    files = make_images_and_csvs(tmp_path / "d")
    main_CLIP.main(["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
                    "--test_data", str(files["test"]), "--vision_model", "npc-micro", "--pretrained", "none",
                    "--batch_size", "8", "--epochs", "1", "--logs_dir", str(tmp_path / "logs"), "--num_workers", "0",
                    "--no_progress", "--experiments", "r"])
    out = capsys.readouterr().out
    warning = next(line for line in out.splitlines() if "warning:" in line and "--warmup 500" in line)
    assert "--lr 5e-07" in warning and "pass a larger --lr" in warning


def test_defaults_are_the_repositorys_wherever_the_command_runs(tmp_path, monkeypatch):
    from npc.params import REPO_ROOT, parse_args

    monkeypatch.chdir(tmp_path)
    a = parse_args([], "npc")
    assert a.data.dataset_root == str(REPO_ROOT / "dataset" / "demo")
    assert a.model.pretrained_dir == str(REPO_ROOT / "pre-trained_models")
    assert parse_args(["--dataset", "coco"], "clip").data.dataset_root == str(REPO_ROOT / "dataset" / "MSCOCO")
    assert parse_args(["--dataset_root", "here"], "npc").data.dataset_root == "here"  # a path given is the user's


def test_a_missing_dataset_root_is_named_as_a_missing_folder(tmp_path, capsys):
    from npc.cli import cli

    missing = tmp_path / "nowhere" / "MSCOCO"
    assert cli(main_NPC.main, ["--dataset", "coco", "--dataset_root", str(missing), "--logs_dir",
                               str(tmp_path / "logs"), "--experiments", "m", "--no_progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --dataset_root {missing}: no coco dataset found there: expected the reference release's "
                   f"layout ({missing}/annotations/scan_split/) or Karpathy's split file {missing}/dataset_coco.json "
                   f"(docs/data.md)")
    assert not (tmp_path / "logs" / "m").exists()


def test_open_clips_hyphenated_spellings_are_aliases():
    from npc.params import parse_args

    a = parse_args(["--noise-ratio", "0.2", "--batch-size", "8", "--dataset-root", "r", "--eval-batch-size", "4",
                    "--no-progress", "--logs-dir", "L", "--train-data", "t.csv", "--dataset", "csv"][6:], "npc")
    assert a.evaluation.eval_batch_size == 4 and a.run.no_progress and a.run.logs == "L"
    b = parse_args(["--noise-ratio", "0.2", "--batch-size", "8", "--num-workers", "0"], "npc")
    assert b.data.noise_ratio == 0.2 and b.optim.batch_size == 8 and b.data.num_workers == 0
    assert {"noise_ratio", "batch_size", "num_workers"} <= b.explicit
    c = parse_args(["--dataset", "csv", "--train-data", "t.csv", "--csv-separator", ","], "npc")
    assert c.data.train_data.endswith("t.csv") and c.data.csv_separator == ","


@pytest.mark.parametrize("method", ["npc", "clip", "bank"])
def test_help_shows_each_default_once(method, capsys):
    from npc.params import build_parser

    text = " ".join(build_parser(method).format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--noise-ratio" not in text  # the aliases are accepted, not listed
    for help_text in ("1 for cc)", "0.4 demo)", "npc-tiny demo)"):
        if help_text in text:
            assert f"{help_text} (default" not in text
    assert "(default: 99)" in text  # a plain default is still shown


def test_progress_lines_reach_the_log_file(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    main_NPC.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "p", "--noise_ratio", "0.4",
                           "--display", "1000"))
    text = (logs / "p" / "log.txt").read_text()
    assert "epoch 1 step 2 (2/25 of the epoch)" in text and "(25/25 of the epoch)" in text
    assert "bank: encoded 80/80 images of the train split (100%)" in text
    assert "bank: encoded 400/400 captions of the train split (100%)" in text


def test_base_pretraining_logs_its_progress(demo_root, tmp_path):
    from npc.demo import ensure_demo_base

    lines = []
    ensure_demo_base(demo_root, "npc-micro", tmp_path, progress=False, log=lines.append,
                     recipe=dict(epochs=1, batch_size=32, warmup=2))
    steps = [line for line in lines if line.startswith("demo base model: step ")]
    total = int(steps[-1].split()[4].split("/")[1])
    assert len(steps) >= min(total, 20) and steps[-1].startswith(f"demo base model: step {total}/{total} (100%)")


def test_results_json_is_keyed_by_split_with_rounded_recalls_and_the_table_is_unchanged(fresh_root, base_dir,
                                                                                         tmp_path, capsys):
    from npc.evaluation import _rounded, results_by_split
    from npc.evaluation_metrics import format_metrics_table

    logs = tmp_path / "logs"
    res = main_CLIP.main(run_args(fresh_root, base_dir, logs, "--eval", "--experiments", "e",
                                  "--eval_splits", "dev,test"))
    saved = json.loads((logs / "e" / "eval_results.json").read_text())
    assert saved["results"] == res["results"] and list(res["results"]) == ["dev", "test"]
    assert res["results"]["dev"]["images"] == 16 and res["results"]["test"]["images"] == 20
    for row in res["results"].values():
        for k in ("i2t_r1", "i2t_r5", "t2i_r1", "rsum", "i2t_meanr"):
            assert row[k] == round(row[k], 10)
    out = capsys.readouterr().out
    table = format_metrics_table({"dev (16 images)": res["results"]["dev"], "test (20 images)": res["results"]["test"]})
    assert table in out
    assert _rounded({"r": 100 * 17 / 35, "n": 3}) == {"r": 48.5714285714, "n": 3}
    assert _rounded({"r": 48.559999999999995})["r"] == 48.56

    class S:  # the MSCOCO 5K test: the 5K row and the 1K fold mean
        name, num_images = "test", 5000
    rows = {"test 5K": {"rsum": 1.0000000000000002}, "test 1K (5-fold mean)": {"rsum": 2.0}}
    assert results_by_split(rows, [S]) == {"test": {"images": 5000, "rsum": 1.0},
                                           "test_1k": {"images": 1000, "folds": 5, "rsum": 2.0}}
