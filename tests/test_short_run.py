"""A run shorter than the default warmup warms up over 10% of its steps (unless --warmup is given): the
warmup's and the schedule's functions and the pre-run warnings tested on their own, and one short run
that shows the relative warmup applied, logged, recorded, and kept when the run resumes."""
import math

import pytest

import main_CLIP
from helpers import make_images_and_csvs
from npc.distributed import DistInfo
from npc.params import parse_args
from npc.run_setup import preflight, relative_warmup
from npc.train_utils import lr_at


def _flags(files, logs, *extra):
    return ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
            "--test_data", str(files["test"]), "--vision_model", "npc-micro", "--pretrained", "none",
            "--logs_dir", str(logs), "--batch_size", "8", "--lr", "1e-4", "--num_workers", "0", "--no_progress",
            *extra]


def _lrs(out):
    return [float(s.split(" lr ")[1].split()[0]) for s in out.splitlines() if " step " in s and " lr " in s]


def test_the_relative_warmup_is_a_tenth_of_the_steps_and_at_least_one():
    assert [relative_warmup(s) for s in (30, 36, 60, 6, 9, 1)] == [3, 3, 6, 1, 1, 1]


def test_the_lr_warms_up_linearly_then_follows_its_schedule():
    lr = lambda step, epoch, **kw: lr_at(step, epoch, base_lr=1e-4, **{"warmup": 3, "total_steps": 30,  # noqa: E731
                                                                          "epochs": 5, **kw})
    assert [lr(s, 0) for s in range(3)] == pytest.approx([1e-4 / 3, 2e-4 / 3, 1e-4])  # --lr reached at step 3
    # staircase (the release's): once per epoch, the cosine of the epoch
    assert lr(3, 0, schedule="staircase") == 1e-4 and lr(29, 4, schedule="staircase") == pytest.approx(
        1e-4 * 0.5 * (1 + math.cos(math.pi * 4 / 5)))
    # cosine per iteration after the warmup, from --lr down to 0 at the last step
    assert lr(3, 0) == 1e-4 and lr(30, 4) == pytest.approx(0)
    assert lr(16, 2) == pytest.approx(0.5e-4 * (1 + math.cos(math.pi * 13 / 27)))  # 13 of the 27 steps after it
    # a warmup longer than the run: --lr is never reached
    assert [lr(s, 0, warmup=50, total_steps=6, epochs=1) for s in range(6)] == pytest.approx(
        [2e-6, 4e-6, 6e-6, 8e-6, 1e-5, 1.2e-5])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_images_and_csvs(tmp_path_factory.mktemp("d"))  # 48 pairs: 6 steps per epoch at batch 8


def _preflight(files, tmp_path, *flags):
    cfg = parse_args(_flags(files, tmp_path / "logs", *flags), "clip")
    return preflight(cfg.data, cfg.optim, False, cfg.explicit, DistInfo())


def test_the_warnings_before_a_short_run_name_the_flag_to_pass(files, tmp_path):
    # --lr given, the default warmup: no warning (the warmup becomes relative when the run is set up)
    assert _preflight(files, tmp_path, "--epochs", "5") == ([], 30)
    # --warmup given longer than the run: kept, and the warning says the lr never reaches --lr
    (warning,), steps = _preflight(files, tmp_path, "--epochs", "1", "--warmup", "50")
    assert steps == 6 and "--warmup 50" in warning and "6 steps" in warning and "never reaches --lr" in warning
    # the real-data defaults (no --lr, no --warmup) on a small dataset: pass a larger --lr
    flags = _flags(files, tmp_path / "logs", "--epochs", "1")
    del flags[flags.index("--lr"):flags.index("--lr") + 2]
    cfg = parse_args(flags, "clip")
    (warning,), steps = preflight(cfg.data, cfg.optim, False, cfg.explicit, DistInfo())
    assert steps == 6 and "6 steps" in warning and "pass a larger --lr" in warning and "docs/own_data.md" in warning


def test_a_short_run_warms_up_over_a_tenth_of_its_steps_and_keeps_that_warmup_when_resumed(files, tmp_path, capsys):
    logs = tmp_path / "logs"
    main_CLIP.main(_flags(files, logs, "--epochs", "5", "--stop_after", "1", "--experiments", "short"))
    out = capsys.readouterr().out
    note = "--warmup 3: this run has 30 steps in all"
    assert note in out and note in (logs / "short" / "log.txt").read_text() and "pass --warmup" in out
    assert _lrs(out) == pytest.approx([1e-4 / 3, 2e-4 / 3, 1e-4, 1e-4, 1e-4, 1e-4], rel=1e-3)  # staircase, epoch 0
    assert "optim.warmup: 3\n" in (logs / "short" / "params.txt").read_text()
    # resumed with more epochs (60 steps: a fresh run would warm up over 6): the warmup its checkpoint recorded
    main_CLIP.main(_flags(files, logs, "--epochs", "10", "--stop_after", "1", "--experiments", "short",
                          "--resume", "latest"))
    assert "warms up over" not in capsys.readouterr().out
    assert "optim.warmup: 3\n" in (logs / "short" / "params.txt").read_text()
