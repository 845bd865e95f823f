"""--eval --resume reproduces the table a run printed: the checkpoint's evaluation settings are taken."""
import json

import main_CLIP
from helpers import MODEL


def _args(root, base_dir, logs, *extra):
    """The tiny demo's flags without an --eval_batch_size (each command below says its own, or none)."""
    return ["--dataset", "demo", "--dataset_root", str(root), "--pretrained_dir", str(base_dir), "--vision_model",
            MODEL, "--logs_dir", str(logs), "--batch_size", "16", "--num_workers", "0", "--no_progress", "--warmup",
            "2", *extra]


def test_eval_resume_with_no_eval_flags_reproduces_the_runs_table_and_ties(fresh_root, base_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    trained = main_CLIP.main(_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "run",
                                   "--eval_batch_size", "8", "--ties", "optimistic"))
    printed = capsys.readouterr().out
    table = printed[printed.index("CLIP after 1 epochs"):].split("\n", 1)[1].split("\n2026", 1)[0]
    ckpt = logs / "run" / "checkpoints" / "best.pt"
    evaluated = main_CLIP.main(_args(fresh_root, base_dir, logs, "--eval", "--resume", str(ckpt),
                                     "--experiments", "ev"))
    out = capsys.readouterr().out
    assert "--eval_batch_size 8" in out and "--ties optimistic" in out  # taken from the checkpoint, said so
    run = json.loads((logs / "run" / "results.json").read_text())
    ev = json.loads(next((logs).glob("ev*/eval_results.json")).read_text())
    for k in ("eval_batch_size", "ties", "eval_precision"):
        assert run[k] == ev[k] == evaluated[k] == trained[k]
    assert ev["eval_batch_size"] == 8 and ev["ties"] == "optimistic"
    assert ev["results"] == run["results"] == trained["results"] == evaluated["results"]
    assert {"i2t_ties", "t2i_ties"} <= set(ev["results"]["test"])  # the tie counts are part of the table
    assert table.strip() and table.strip().splitlines()[-1] in out  # the printed row, exactly

    # A flag given wins over the checkpoint's
    main_CLIP.main(_args(fresh_root, base_dir, logs, "--eval", "--resume", str(ckpt), "--experiments", "ev64",
                         "--eval_batch_size", "64"))
    assert json.loads(next(logs.glob("ev64*/eval_results.json")).read_text())["eval_batch_size"] == 64
