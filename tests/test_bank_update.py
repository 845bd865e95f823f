"""--bank_update: a memory bank rebuilt from the current model during training, against its written-out
definition, recorded in metrics.jsonl, and exact across a SIGKILL and --resume latest."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import main_CLIP
import main_NPC
from helpers import CHILD_PYTHONPATH, KILL_SCRIPT, MODEL, REPO, _records, run_args
from npc import data
from npc import memory_bank as mb
from npc.evaluation import encode_split
from npc.model import create_model, load_checkpoint_weights, logit_scale

COMMON = ("--epochs", "3", "--noise_ratio", "0.4", "--method", "pclean_weight_bank_update")


@pytest.fixture(scope="module")
def root(demo_root, tmp_path_factory):
    dst = tmp_path_factory.mktemp("bank_update") / "demo"
    shutil.copytree(demo_root, dst)
    return dst


def test_the_rebuilt_bank_is_the_bank_of_the_current_model(root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    main_NPC.main(run_args(root, base_dir, logs, "--epochs", "3", "--noise_ratio", "0.4", "--experiments", "u",
                           "--method", "npc_paper_bank_update", "--stop_after", "1"))
    run = logs / "u"
    latest = torch.load(run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert latest["bank_in_force"] == "banks/epoch1" and latest["epoch"] == 1
    # written out: the model after epoch 1 encodes the training split; GMM and neighbours as for the first bank
    model, preprocess, tokenizer = create_model(MODEL, "none")
    load_checkpoint_weights(model, run / "checkpoints" / "latest.pt")
    split, mask = data.load_train_split(root, "demo", 5, 0.4, log=lambda *_: None)
    img, txt = encode_split(model, split, preprocess, tokenizer, batch_size=64, num_workers=0, progress=False)
    bank, info, p_clean = mb.build_memory_bank(img, txt, split, logit_scale(model).item(), batch_size=128,
                                               clean_threshold=0.9, noise_mask=mask, seed=99)  # the demo's --bank_batch_size
    built = mb.load_bank(run / "banks" / "epoch1", 0.4, split)
    assert np.array_equal(built.image_bank, bank.image_bank) and np.array_equal(built.text_bank, bank.text_bank)
    assert np.allclose(mb.load_pclean(run / "banks" / "epoch1", 0.4, len(split)), p_clean)
    # its quality goes to metrics.jsonl; the dataset's own bank (the initial model's) is left as it was
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["bank"]
    assert record["precision"] == pytest.approx(info["precision"]) and 0 <= record["p_clean_auc"] <= 1
    first = json.loads((root / "annotations/memory_bank/0.4_mbank_info.json").read_text())
    assert first["weights"] is None and first["noisy_split_sha256"] == \
        json.loads((run / "banks/epoch1/0.4_mbank_info.json").read_text())["noisy_split_sha256"]


def test_sigkill_after_a_rebuild_then_resume_equals_uninterrupted(root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(root, base_dir, logs, *COMMON, "--experiments", "full"))
    argv = run_args(root, base_dir, logs, *COMMON, "--experiments", "k")
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "HF_HUB_OFFLINE": "1"}
    # 400 pairs / 16 = 25 steps an epoch: killed in epoch 2, after the bank of epoch 1 was rebuilt
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, "mid_epoch", "35", str(torch.get_num_threads()),
                           *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (logs / "k" / "banks" / "epoch1").is_dir() and not (logs / "k" / "banks" / "epoch2").exists()
    main_CLIP.main(run_args(root, base_dir, logs, *COMMON, "--experiments", "k", "--resume", "latest"))
    a, b = (torch.load(logs / r / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
            for r in ("full", "k"))
    assert a["epoch"] == b["epoch"] == 3 and a["bank_in_force"] == b["bank_in_force"] == "banks/epoch2"
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert _records(logs / "k") == _records(logs / "full")
    assert "bank" in _records(logs / "full")[1] and "bank" not in _records(logs / "full")[2]  # not after the last
