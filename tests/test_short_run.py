"""A run shorter than the default warmup warms up over 10% of its steps (unless --warmup is given)."""
import main_CLIP
from helpers import make_images_and_csvs


def _flags(files, logs, *extra):
    return ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
            "--test_data", str(files["test"]), "--vision_model", "npc-micro", "--pretrained", "none",
            "--logs_dir", str(logs), "--batch_size", "8", "--lr", "1e-4", "--num_workers", "0", "--no_progress",
            *extra]


def _lrs(out):
    return [float(s.split(" lr ")[1].split()[0]) for s in out.splitlines() if " step " in s and " lr " in s]


def test_a_short_runs_default_warmup_is_relative_and_a_given_one_is_kept(tmp_path, capsys):
    files = make_images_and_csvs(tmp_path / "d")  # 48 pairs: 6 steps per epoch at batch 8
    logs = tmp_path / "logs"
    main_CLIP.main(_flags(files, logs, "--epochs", "5", "--experiments", "short"))
    out = capsys.readouterr().out
    line = ("--warmup 3: this run has 30 steps in all, fewer than the default warmup 500, so it warms up over 10% "
            "of them (pass --warmup to choose)")
    assert line in out and line in (logs / "short" / "log.txt").read_text()
    assert "the learning rate never reaches" not in out and "the warmup becomes 3 steps" not in out
    # the schedule follows (real data: warmup, then the release's staircase): --lr is reached at step 3
    lrs = _lrs(out)
    assert lrs[:4] == [3.333e-05, 6.667e-05, 1e-4, 1e-4] and len(lrs) == 30
    assert "optim.warmup: 3\n" in (logs / "short" / "params.txt").read_text()

    # resumed with more epochs: it keeps the warmup its checkpoint recorded
    main_CLIP.main(_flags(files, logs, "--epochs", "6", "--experiments", "short", "--resume", "latest"))
    assert "warms up over" not in capsys.readouterr().out
    assert "optim.warmup: 3\n" in (logs / "short" / "params.txt").read_text()

    # --warmup given: kept as given, and the warning says what it does
    main_CLIP.main(_flags(files, logs, "--epochs", "1", "--experiments", "given", "--warmup", "50"))
    out = capsys.readouterr().out
    assert "warning: --warmup 50 is longer than the whole run (6 steps" in out and "warms up over" not in out
    assert _lrs(out) == [2e-06, 4e-06, 6e-06, 8e-06, 1e-05, 1.2e-05]
    assert "optim.warmup: 50\n" in (logs / "given" / "params.txt").read_text()


def test_the_real_data_defaults_on_a_small_dataset_get_a_relative_warmup_and_the_lr_warning(tmp_path, capsys):
    files = make_images_and_csvs(tmp_path / "d")
    flags = [f for f in _flags(files, tmp_path / "logs", "--epochs", "1", "--experiments", "r")]
    flags[flags.index("--lr"):flags.index("--lr") + 2] = []
    main_CLIP.main(flags)
    out = capsys.readouterr().out
    assert ("warning: the real-data defaults (--lr 5e-07, --warmup 500) are the release's for MSCOCO-size data, and "
            "this run has 6 steps in all (48 pairs / --batch_size 8 x 1 epochs): the warmup becomes 1 steps (10% of "
            "the run); pass a larger --lr") in out
    assert "--warmup 1: this run has 6 steps in all" in out and _lrs(out)[0] == 5e-07
