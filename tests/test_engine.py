"""The real entry points on the tiny generated dataset: train, evaluate, resume, banks, checkpoints."""
import json

import numpy as np
import pytest
import torch

import get_memorybank
import main_CLIP
import main_NPC
from helpers import run_args
from npc.errors import ConfigError


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_clip_one_epoch_writes_run_and_eval_reproduces_it(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    res = main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "c"))
    run = logs / "c"
    for name in ("params.txt", "log.txt", "metrics.jsonl", "results.json", "checkpoints/latest.pt",
                 "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    # by default a run keeps two checkpoint files: the full state, and the best epoch's weights only
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "latest.pt"]
    best = torch.load(run / "checkpoints/best.pt", map_location="cpu", weights_only=True)
    assert "optimizer" not in best and "rng" not in best and best["epoch"] == 1
    assert "optimizer" in torch.load(run / "checkpoints/latest.pt", map_location="cpu", weights_only=True)
    assert any((run / "tensorboard").iterdir())
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"]) and "rsum" in record["dev"]
    trained = res["results"]
    ev = main_CLIP.main(run_args(fresh_root, base_dir, logs, "--eval", "--resume", str(run / "checkpoints/best.pt"),
                                 "--experiments", "c_eval"))
    assert ev["results"] == trained
    assert json.loads((logs / "c_eval" / "eval_results.json").read_text())["results"] == trained


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_npc_one_epoch_builds_bank_and_logs_weights(fresh_root, base_dir, tmp_path, variant):
    logs = tmp_path / "logs"
    main_NPC.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "n",
                           "--npc_variant", variant, "--noise_ratio", "0.4"))
    bank_dir = fresh_root / "annotations" / "memory_bank"
    assert (bank_dir / "0.4_mbank_img_idx.npy").is_file() and (bank_dir / "0.4_mbank_txt_idx.npy").is_file()
    record = json.loads((logs / "n" / "metrics.jsonl").read_text().splitlines()[0])
    npc = record["weights"]
    assert 0 < npc["mean_weight"] <= 1 and 0 <= npc["weight_auc"] <= 1
    assert "mean_weight_clean" in npc and "mean_weight_noisy" in npc
    ckpt = torch.load(logs / "n" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert "siamese_optimizer" in ckpt and ckpt["epoch"] == 1


def test_npc_first_order_estimator_runs_without_siamese(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    main_NPC.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "fo",
                           "--npc_estimator", "first_order", "--noise_ratio", "0.4"))
    npc = json.loads((logs / "fo" / "metrics.jsonl").read_text().splitlines()[0])["weights"]
    assert 0 < npc["mean_weight"] <= 1 and 0 < npc["frac_weight_below_1"] < 1
    ckpt = torch.load(logs / "fo" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
    assert "siamese_optimizer" not in ckpt


@pytest.mark.parametrize("prior", ["gmm_filter", "pclean_weight"])
def test_clip_baselines_on_the_banks_gmm(fresh_root, base_dir, tmp_path, prior, monkeypatch):
    from npc import memory_bank as mb

    from npc import steps

    seen = []
    real_step = steps.train_step

    def spy(model, optimizer, batch, **kw):
        out = real_step(model, optimizer, batch, **kw)
        seen.append((batch["index"].clone(), out["weights"]))
        return out

    monkeypatch.setattr(steps, "train_step", spy)
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", prior,
                            "--clean_prior", prior, "--noise_ratio", "0.4", "--clean_threshold", "0.5"))
    bank_dir = fresh_root / "annotations" / "memory_bank"
    p_clean = mb.load_pclean(bank_dir, 0.4, 400)  # written by the same build, fingerprinted in its info
    index = torch.cat([i for i, _ in seen]).numpy()
    if prior == "gmm_filter":  # only the clean set, each of its pairs at most once per epoch
        assert (p_clean[index] > 0.5).all() and len(set(index.tolist())) == len(index)
        assert all(w is None for _, w in seen)
    else:  # every pair, its loss weighted by its p(clean)
        weights = torch.cat([w for _, w in seen]).numpy()
        assert np.allclose(weights, p_clean[index])
        npc = json.loads((logs / prior / "metrics.jsonl").read_text().splitlines()[0])["weights"]
        assert 0 <= npc["weight_auc"] <= 1
    info = json.loads((bank_dir / "0.4_mbank_info.json").read_text())
    assert info["clean_threshold"] == 0.5 and "p_clean_sha256" in info


def test_torchcompile_flag_trains_with_compiled_towers(fresh_root, base_dir, tmp_path, monkeypatch):
    from npc import engine
    from npc.model import compile_towers

    compiled = []

    def eager_compile(model):  # Dynamo's tracing without code generation: quick on a CPU
        compiled.append(model)
        compile_towers(model, backend="eager")

    monkeypatch.setattr(engine, "compile_towers", eager_compile)
    logs = tmp_path / "logs"
    main_NPC.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "tc", "--torchcompile"))
    assert len(compiled) == 2 and compiled[0] is not compiled[1]  # A and its siamese
    assert all(m.visual._compiled_call_impl is not None for m in compiled)
    names = set(_weights(logs / "tc" / "checkpoints" / "latest.pt"))
    assert "visual.conv1.weight" in names and not any("_orig_mod" in n for n in names)


@pytest.mark.parametrize("script", [main_CLIP, main_NPC])
def test_resume_equals_uninterrupted(fresh_root, base_dir, tmp_path, script):
    logs = tmp_path / "logs"
    common = ["--epochs", "2", "--noise_ratio", "0.2"]
    script.main(run_args(fresh_root, base_dir, logs, *common, "--experiments", "full"))
    script.main(run_args(fresh_root, base_dir, logs, *common, "--experiments", "cut", "--stop_after", "1"))
    assert torch.load(logs / "cut" / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)["epoch"] == 1
    script.main(run_args(fresh_root, base_dir, logs, *common, "--experiments", "cut", "--resume", "latest"))
    a = _weights(logs / "full" / "checkpoints" / "latest.pt")
    b = _weights(logs / "cut" / "checkpoints" / "latest.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_keep_checkpoints_keeps_the_last_k_epoch_files(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    ckpts = logs / "k" / "checkpoints"

    def kept():
        return sorted(p.name for p in ckpts.iterdir())

    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "3", "--experiments", "k",
                            "--keep_checkpoints", "2"))
    assert kept() == ["best.pt", "epoch2.pt", "epoch3.pt", "latest.pt"]
    assert (ckpts / "epoch3.pt").read_bytes() == (ckpts / "latest.pt").read_bytes()
    # a resumed run keeps the run's setting unless the command changes it (it does not change results)
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--experiments", "k", "--resume", "latest", "--epochs", "4"))
    assert kept() == ["best.pt", "epoch3.pt", "epoch4.pt", "latest.pt"]
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--experiments", "k", "--resume", "latest", "--epochs", "5",
                            "--keep_checkpoints", "-1"))
    assert kept() == ["best.pt", "epoch3.pt", "epoch4.pt", "epoch5.pt", "latest.pt"]
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--experiments", "k", "--resume", "latest", "--epochs", "6",
                            "--keep_checkpoints", "0"))
    assert kept() == ["best.pt", "latest.pt"]
    assert torch.load(ckpts / "latest.pt", map_location="cpu", weights_only=True)["epoch"] == 6


def test_existing_run_is_not_overwritten(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "x"))
    with pytest.raises(ConfigError, match="already holds a run"):
        main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "x"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(fresh_root, base_dir, tmp_path, monkeypatch):
    import npc.engine as engine

    logs = tmp_path / "logs"
    args = run_args(fresh_root, base_dir, logs, "--epochs", "3", "--experiments", "nan")
    main_CLIP.main(args + ["--stop_after", "1"])
    good = _weights(logs / "nan" / "checkpoints" / "latest.pt")
    from npc import steps

    real_step = steps.train_step

    def exploding(*a, **kw):
        out = real_step(*a, **kw)
        out["loss"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(steps, "train_step", exploding)
    with pytest.raises(engine.NonFiniteLoss, match="non-finite loss"):
        main_CLIP.main(args + ["--resume", "latest"])
    kept = _weights(logs / "nan" / "checkpoints" / "latest.pt")
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_get_memorybank_standalone(fresh_root, base_dir, tmp_path, capsys):
    from npc import memory_bank as mb

    args = run_args(fresh_root, base_dir, tmp_path / "logs", "--noise_ratio", "0.4")
    out = get_memorybank.main(args)
    printed = capsys.readouterr().out
    assert "precision" in printed and "recall" in printed
    bank_dir = fresh_root / "annotations" / "memory_bank"
    img = np.load(bank_dir / "0.4_mbank_img_idx.npy", allow_pickle=False)
    txt = np.load(bank_dir / "0.4_mbank_txt_idx.npy", allow_pickle=False)
    assert img.dtype == np.int64 and txt.dtype == np.int64
    np.testing.assert_array_equal(img, out["image_bank"])
    info = json.loads((bank_dir / "0.4_mbank_info.json").read_text())
    assert 0 < info["n_clean"] <= info["n_pairs"] == len(txt)
    # every bank entry is a pair the GMM called clean: entries come from a set of size n_clean
    assert len(np.unique(np.concatenate([img, txt]))) <= info["n_clean"]
    # the loaded bank round-trips
    from npc import data

    split = data.load_split(fresh_root, "demo", "train",
                            caps_file=fresh_root / "annotations/scan_split/0.4_noise_train_caps.txt")
    bank = mb.load_bank(bank_dir, 0.4, split)
    np.testing.assert_array_equal(bank.text_bank, txt)


def test_bad_flags_exit_with_the_flag_name(capsys):
    with pytest.raises(SystemExit) as e:
        main_NPC.main(["--noise_ratio", "1.5"])
    assert e.value.code == 2
    assert "--noise_ratio" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main_NPC.main(["--dataset", "mscoco"])


def test_real_dataset_root_without_dataset_flag_is_a_clear_error(tmp_path, base_dir, capsys):
    from npc.engine import cli

    (tmp_path / "MSCOCO" / "annotations" / "scan_split").mkdir(parents=True)
    code = cli(main_NPC.main, ["--dataset_root", str(tmp_path / "MSCOCO"), "--logs_dir", str(tmp_path / "logs"),
                               "--pretrained_dir", str(base_dir), "--no_progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--dataset coco" in err and "MSCOCO" in err
    assert not (tmp_path / "MSCOCO" / "images").exists()  # nothing generated over it
