"""Fault suite: runs that are killed, misconfigured, raced or fed bad files end in the identical
result or in one clear line, and nothing on disk is lost or half-written (README "Failure behaviour")."""
import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import construct_noise
from npc import data
from npc import loaders
import get_memorybank
import main_CLIP
import main_NPC
from helpers import MODEL, run_args
from npc import checkpoint, engine
from npc import memory_bank as mb
from npc.io import atomic_open
from npc.cli import cli
from npc.locks import file_lock
from npc.params import ConfigError, parse_args
from helpers import CHILD_PYTHONPATH, KILL_SCRIPT, REPO, _records



def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _scalar_steps(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def root(demo_root, tmp_path_factory):
    """A private copy of the tiny dataset shared by this module's runs (they only add noisy splits)."""
    dst = tmp_path_factory.mktemp("faults") / "demo"
    shutil.copytree(demo_root, dst)
    return dst


# ----------------------------------------------------------------------------- real interruptions


COMMON = ("--epochs", "2", "--noise_ratio", "0.2", "--display", "5")


@pytest.fixture(scope="module")
def uninterrupted(root, base_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs_full")
    main_CLIP.main(run_args(root, base_dir, logs, *COMMON, "--experiments", "full"))
    return logs / "full"


@pytest.mark.parametrize("mode,at", [("mid_epoch", 35), ("checkpoint_write", 2), ("best_copy", 1)])
def test_sigkill_then_resume_equals_uninterrupted(root, base_dir, tmp_path, uninterrupted, mode, at):
    logs = tmp_path / "logs"
    argv = run_args(root, base_dir, logs, *COMMON, "--experiments", "k")
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, mode, str(at), str(torch.get_num_threads()), *argv],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = logs / "k"
    ckpts = run / "checkpoints"
    newest = checkpoint.latest_checkpoint(ckpts)  # died before epoch 2 ended
    assert torch.load(newest, map_location="cpu", weights_only=True)["epoch"] == 1
    if mode == "checkpoint_write":  # its epoch-2 events were flushed before the checkpoint (25 steps per epoch)
        assert max(s for s, _ in _scalar_steps(run, "train/loss")) > 25

    main_CLIP.main(run_args(root, base_dir, logs, *COMMON, "--experiments", "k", "--resume", "latest"))

    a, b = _weights(uninterrupted / "checkpoints/latest.pt"), _weights(ckpts / "latest.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the random streams continue where the checkpoint left them (fails if the RNG state is not restored)
    ra = torch.load(uninterrupted / "checkpoints/latest.pt", map_location="cpu", weights_only=True)["rng"]
    rb = torch.load(ckpts / "latest.pt", map_location="cpu", weights_only=True)["rng"]
    assert torch.equal(ra["torch"], rb["torch"]) and torch.equal(ra["numpy"][1], rb["numpy"][1])
    assert ra["python"] == rb["python"]
    # every epoch's metrics once, equal to the uninterrupted run's; TensorBoard without repeated steps
    assert _records(run) == _records(uninterrupted)
    for tag in ("train/loss", "dev/rsum"):
        steps = _scalar_steps(run, tag)
        assert len({s for s, _ in steps}) == len(steps), f"{tag} logged twice at a step"
        assert steps == _scalar_steps(uninterrupted, tag)
    assert json.loads((run / "results.json").read_text())["results"] == \
        json.loads((uninterrupted / "results.json").read_text())["results"]


def test_resume_without_rng_restore_diverges(root, base_dir, tmp_path, uninterrupted, monkeypatch):
    """The comparison above can fail: resuming without restoring the RNG changes the random streams."""
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(root, base_dir, logs, *COMMON, "--experiments", "r", "--stop_after", "1"))
    monkeypatch.setattr(engine, "set_rng_state", lambda state: None)
    main_CLIP.main(run_args(root, base_dir, logs, *COMMON, "--experiments", "r", "--resume", "latest"))
    ra = torch.load(uninterrupted / "checkpoints/latest.pt", map_location="cpu", weights_only=True)["rng"]
    rb = torch.load(logs / "r/checkpoints/latest.pt", map_location="cpu", weights_only=True)["rng"]
    assert not torch.equal(ra["torch"], rb["torch"])


# ----------------------------------------------------------------------------- resume keeps the run's configuration

def test_resume_takes_the_runs_flags_and_refuses_other_values(root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    first = ("--epochs", "2", "--noise_ratio", "0.2", "--lr", "1e-3", "--experiments", "A",
             "--keep_checkpoints", "-1")  # the run keeps its epoch files (the resumes below keep the setting)
    main_CLIP.main(run_args(root, base_dir, logs, *first, "--stop_after", "1"))
    params = (logs / "A" / "params.txt").read_text()
    with pytest.raises(ConfigError, match=r"--noise_ratio 0\.4 .*0\.2.*--lr 0\.002 .*0\.001"):
        main_CLIP.main(run_args(root, base_dir, logs, "--experiments", "A", "--resume", "latest",
                                "--noise_ratio", "0.4", "--lr", "2e-3"))
    assert (logs / "A" / "params.txt").read_text() == params  # nothing of the run changed
    # the README's command: no flag repeated (the demo's default noise would be 0.4); --epochs may extend it
    main_CLIP.main(run_args(root, base_dir, logs, "--experiments", "A", "--resume", "latest", "--epochs", "3"))
    params = dict(line.split(": ", 1) for line in (logs / "A" / "params.txt").read_text().splitlines())
    assert params["data.noise_ratio"] == "0.2" and params["optim.lr"] == "0.001" and params["optim.epochs"] == "3"
    assert [r["epoch"] for r in _records(logs / "A")] == [1, 2, 3]
    ckpt = torch.load(logs / "A/checkpoints/epoch3.pt", map_location="cpu", weights_only=True)
    assert ckpt["config"]["data"]["noise_ratio"] == 0.2 and ckpt["config"]["optim"]["lr"] == 1e-3
    # a checkpoint of this project continued under another name brings its configuration too
    main_CLIP.main(run_args(root, base_dir, logs, "--experiments", "B", "--stop_after", "1",
                            "--resume", str(logs / "A/checkpoints/epoch1.pt")))
    params = dict(line.split(": ", 1) for line in (logs / "B" / "params.txt").read_text().splitlines())
    assert params["data.noise_ratio"] == "0.2" and params["optim.lr"] == "0.001" and params["optim.epochs"] == "2"
    assert [r["epoch"] for r in _records(logs / "B")] == [2]


def test_unknown_saved_keys_and_missing_new_flags_do_not_break_resuming():
    from npc.resume_rules import resume_changes

    args = parse_args(["--epochs", "4"], "npc")
    args = args.replace_flags(**resume_changes(args, {"noise_ratio": 0.2, "flag_of_an_old_version": 1, "epochs": 2,
                                                      "method": "npc"}, "x"))
    assert args.data.noise_ratio == 0.2 and args.optim.epochs == 4
    assert "flag_of_an_old_version" not in args.flat()
    with pytest.raises(ConfigError, match="the script"):
        resume_changes(parse_args([], "clip"), {"method": "npc"}, "x")


# ----------------------------------------------------------------------------- no dead ends

def test_run_that_died_before_its_first_checkpoint_is_not_stuck(root, base_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    too_large = run_args(root, base_dir, logs, "--epochs", "1", "--batch_size", "100000")
    for name in ("d1", "d2"):
        assert cli(main_CLIP.main, too_large + ["--experiments", name]) == 1
        assert not (logs / name).exists()  # checked before anything is written
        # what a run killed before its first checkpoint leaves behind
        (logs / name / "checkpoints").mkdir(parents=True)
        (logs / name / "params.txt").write_text("dataset: demo\n")
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all("--batch_size 100000" in e for e in errors) and "Traceback" not in err
    # continue it: starts again, with a message; or run the same name again: the folder is reclaimed
    main_CLIP.main(run_args(root, base_dir, logs, "--epochs", "1", "--experiments", "d1", "--resume", "latest"))
    assert "starting it again" in capsys.readouterr().out
    main_CLIP.main(run_args(root, base_dir, logs, "--epochs", "1", "--experiments", "d2"))
    for name in ("d1", "d2"):
        assert (logs / name / "results.json").is_file() and [r["epoch"] for r in _records(logs / name)] == [1]
    with pytest.raises(FileNotFoundError, match="holds no run"):  # a typo in the name is not a new run
        main_CLIP.main(run_args(root, base_dir, logs, "--experiments", "d3", "--resume", "latest"))
    assert not (logs / "d3").exists()  # and leaves no folder behind


def test_full_disk_at_the_copy_to_latest_is_one_line_and_resumable(root, base_dir, tmp_path, monkeypatch, capsys):
    logs = tmp_path / "logs"
    # epoch files kept: latest.pt is a copy of epoch<k>.pt (by default the epoch file is renamed, no copy)
    argv = run_args(root, base_dir, logs, "--epochs", "2", "--experiments", "f", "--keep_checkpoints", "1")

    real_copy = checkpoint.atomic_copy

    def full_disk(src, dst):
        if dst.name == "latest.pt":  # the disk fills while the copy is written
            with atomic_open(dst, "wb"):
                raise OSError(errno.ENOSPC, "No space left on device")
        real_copy(src, dst)

    monkeypatch.setattr(checkpoint, "atomic_copy", full_disk)
    assert cli(main_CLIP.main, argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {logs / 'f' / 'checkpoints' / 'latest.pt'}: cannot write: No space left on device"
    ckpts = logs / "f" / "checkpoints"
    assert (ckpts / "epoch1.pt").is_file() and not (ckpts / "latest.pt").exists()
    monkeypatch.undo()
    main_CLIP.main(argv + ["--resume", "latest"])
    assert [r["epoch"] for r in _records(logs / "f")] == [1, 2]
    assert (ckpts / "latest.pt").is_file()


# ----------------------------------------------------------------------------- locks

def test_second_writer_of_a_run_is_refused_and_a_stale_lock_is_taken(root, base_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    argv = run_args(root, base_dir, logs, "--epochs", "1", "--experiments", "x")
    (logs / "x").mkdir(parents=True)
    with file_lock(logs / "x" / ".lock", "test", wait=False):  # a live process writes run x
        assert cli(main_CLIP.main, argv) == 1
    err = capsys.readouterr().err
    assert f"in use by pid {os.getpid()}" in err and "--experiments" in err
    assert not (logs / "x" / "params.txt").exists()
    # the lock file stays behind when its holder is killed; the kernel released the lock itself
    (logs / "x" / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": "earlier"}))
    main_CLIP.main(argv)
    assert (logs / "x" / "results.json").is_file()


def test_cache_builders_wait_for_each_other(root, tmp_path):
    from npc.demo import ensure_demo_data
    from npc.image_cache import ImageCache
    from npc.model import create_model
    from npc.noise import ensure_noisy_split

    ann = data.annotation_dir(root)
    _, preprocess, _ = create_model(MODEL, "none")
    images = data.load_split(root, "demo", "dev").image_paths
    cases = [(ann / ".0.1_noise_train_caps.txt.lock", lambda log: ensure_noisy_split(ann, 0.1, log=log)),
             (root.parent / f".{root.name}.lock", lambda log: ensure_demo_data(root, log=log, progress=False)),
             (tmp_path / "cache" / ".dev.lock",
              lambda log: ImageCache(tmp_path / "cache", "dev", images, preprocess, num_workers=0, progress=False,
                                     log=log))]
    for lock, build in cases:
        held = threading.Event()

        def hold():
            with file_lock(lock, "test", wait=False):
                held.set()
                time.sleep(1.0)

        t = threading.Thread(target=hold)
        t.start()
        held.wait()
        logs = []
        t0 = time.perf_counter()
        build(logs.append)
        assert time.perf_counter() - t0 > 0.5 and any("waiting" in m for m in logs), logs
        t.join()


# ----------------------------------------------------------------------------- caches: provenance and the bank seed

def test_bank_is_the_same_whichever_run_builds_it(demo_root, base_dir, tmp_path, monkeypatch):
    seeds = []
    from npc import bank_math

    real = bank_math.fit_loss_gmm

    def spy(losses, seed=0):
        seeds.append(seed)
        return real(losses, seed=seed)

    monkeypatch.setattr(bank_math, "fit_loss_gmm", spy)  # where the arithmetic calls it
    roots = [tmp_path / "a" / "demo", tmp_path / "b" / "demo"]
    for r in roots:
        shutil.copytree(demo_root, r)
    main_NPC.main(run_args(roots[0], base_dir, tmp_path / "logs", "--epochs", "1", "--seed", "0",
                           "--noise_ratio", "0.6", "--experiments", "s0"))
    get_memorybank.main(run_args(roots[1], base_dir, tmp_path / "logs", "--seed", "1", "--noise_ratio", "0.6"))
    assert seeds == [99, 99]  # the GMM's seed is --bank_seed, never the training --seed
    for name in ("0.6_mbank_img_idx.npy", "0.6_mbank_txt_idx.npy", "0.6_mbank_info.json"):
        a, b = (data.memory_bank_dir(r) / name for r in roots)
        assert a.read_bytes() == b.read_bytes(), name
    assert json.loads(a.read_text())["bank_seed"] == 99


def test_bank_provenance_rebuilds_or_refuses(root, base_dir, tmp_path, capsys):
    args = run_args(root, base_dir, tmp_path / "logs", "--noise_ratio", "0.4")
    get_memorybank.main(args)

    def reuse(*extra):
        from npc.run_setup import bank_inputs

        inputs = bank_inputs(parse_args(args + list(extra), "npc"))
        d = inputs.data
        split, _ = data.load_train_split(d.dataset_root, d.dataset, d.num_anns, d.noise_ratio,
                                         noise_seed=d.noise_seed, log=lambda *_: None)
        return mb.reusable_bank(inputs, split, mb.bank_provenance(inputs, split))

    bank = reuse()
    assert bank is not None
    assert reuse("--batch_size", "8") is not None  # the training batch is not the bank's: reused
    # a set a crash left half replaced does not match its info file: rebuilt, not reused
    txt = data.memory_bank_dir(root) / "0.4_mbank_txt_idx.npy"
    good = txt.read_bytes()
    np.save(txt, bank.text_bank[::-1].copy())
    assert reuse() is None
    txt.write_bytes(good)
    for flag, value in (("--clean_threshold", "0.5"), ("--bank_seed", "1"), ("--bank_batch_size", "32")):
        with pytest.raises(mb.BankFileError, match=rf"{flag} {value} \(the bank has .*--rebuild_bank"):
            reuse(flag, value)
    # the case through the entry point: refused before any training, the bank untouched
    info = (data.memory_bank_dir(root) / "0.4_mbank_info.json").read_bytes()
    assert cli(main_NPC.main, args + ["--clean_threshold", "0.5", "--epochs", "1", "--experiments", "ct"]) == 1
    assert "--clean_threshold 0.5 (the bank has 0.9)" in capsys.readouterr().err
    assert (data.memory_bank_dir(root) / "0.4_mbank_info.json").read_bytes() == info
    # the noisy split is rebuilt with another seed: the bank of the old split is never reused
    assert construct_noise.main(["--dataset_root", str(root), "--noise_ratio", "0.4", "--seed", "1", "--force"]) == 0
    try:
        assert reuse("--noise_seed", "1") is None
        with pytest.raises(Exception, match=r"noise seed 1, this run asks for 99"):
            reuse()
    finally:
        assert construct_noise.main(["--dataset_root", str(root), "--noise_ratio", "0.4", "--force"]) == 0


def test_bank_file_cut_short_or_not_npy_says_rebuild(root, tmp_path):
    split = data.load_split(root, "demo", "train")
    bank_dir = tmp_path / "bank"
    bank = loaders.BankIndex(np.arange(split.num_images), np.arange(len(split)))
    img, txt = mb.save_bank(bank, bank_dir, 0.4, "caption", {})
    np.testing.assert_array_equal(mb.load_bank(bank_dir, 0.4, split).text_bank, bank.text_bank)
    txt.write_bytes(txt.read_bytes()[:200])
    with pytest.raises(mb.BankFileError, match=r"truncated or corrupt.*--rebuild_bank") as e:
        mb.load_bank(bank_dir, 0.4, split)
    assert str(txt) in str(e.value) and "trust_pickle" not in str(e.value)
    txt.write_text("not an array\n")
    with pytest.raises(mb.BankFileError, match=r"not a \.npy file.*--rebuild_bank"):
        mb.load_bank(bank_dir, 0.4, split)
    # a release-style pickled dict, cut short
    np.save(txt, np.array({str(i): np.array([i]) for i in range(len(split))}, dtype=object), allow_pickle=True)
    txt.write_bytes(txt.read_bytes()[:-50])
    with pytest.raises(mb.BankFileError, match=r"truncated or corrupt.*--rebuild_bank") as e:
        mb.load_bank(bank_dir, 0.4, split)
    assert "trust_pickle" not in str(e.value)


# ----------------------------------------------------------------------------- clear I/O and data errors

def test_read_only_dataset_folder_is_one_line(root, base_dir, tmp_path, monkeypatch, capsys):
    import tempfile

    real = tempfile.mkstemp

    def read_only(*a, dir=None, **kw):
        if Path(dir) == data.annotation_dir(root):
            raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / "x.tmp"))
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert cli(main_CLIP.main, run_args(root, base_dir, tmp_path / "logs", "--noise_ratio", "0.3",
                                        "--experiments", "ro")) == 1
    target = data.annotation_dir(root) / "0.3_noise_train_caps.txt"

    def one_line_naming_the_file_and_the_remedy(err: str) -> None:
        assert err.count("\n") == 0 and err.startswith("error:"), err
        assert target.name in err and str(target.parent) in err and "read-only" in err, err
        assert "make the folder writable" in err, err

    one_line_naming_the_file_and_the_remedy(capsys.readouterr().err.strip())
    assert construct_noise.main(["--dataset_root", str(root), "--noise_ratio", "0.3"]) == 1
    one_line_naming_the_file_and_the_remedy(capsys.readouterr().err.strip())
    assert not target.exists()


def test_corrupt_image_names_file_caption_line_and_split_or_is_skipped(fresh_root, base_dir, tmp_path, capsys):
    split = data.load_split(fresh_root, "demo", "train")
    bad = split.image_paths[3]
    bad.write_bytes(b"not a JPEG")
    logs = tmp_path / "logs"
    argv = run_args(fresh_root, base_dir, logs, "--epochs", "1", "--num_workers", "1")
    assert cli(main_CLIP.main, argv + ["--experiments", "bad"]) == 1  # decoded in a loader worker
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "train split, caption lines 16-20 of" in err
    assert "--skip_unreadable_images" in err
    main_CLIP.main(argv + ["--experiments", "skip", "--skip_unreadable_images"])
    assert _records(logs / "skip")[0]["skipped_images"] == 1
    assert "1 unreadable image" in (logs / "skip" / "log.txt").read_text()


def test_short_train_caps_is_blamed_and_leaves_no_noisy_split(fresh_root, base_dir, tmp_path, capsys):
    caps = data.annotation_dir(fresh_root) / "train_caps.txt"
    caps.write_text("".join(line + "\n" for line in caps.read_text().splitlines()[:-1]))
    assert cli(main_CLIP.main, run_args(fresh_root, base_dir, tmp_path / "logs", "--noise_ratio", "0.3",
                                        "--experiments", "short")) == 1
    err = capsys.readouterr().err
    assert f"{caps} has 399 captions" in err
    assert not list(data.annotation_dir(fresh_root).glob("0.3_*"))


def test_empty_caption_line_warns_with_its_number(fresh_root, caplog):
    caps = data.annotation_dir(fresh_root) / "dev_caps.txt"
    lines = caps.read_text().splitlines()
    lines[2] = ""
    caps.write_text("".join(line + "\n" for line in lines))
    logger = logging.getLogger("npc")
    logger.addHandler(caplog.handler)
    try:
        data.load_split(fresh_root, "demo", "dev")
    finally:
        logger.removeHandler(caplog.handler)
    assert f"{caps}: 1 empty caption line(s): line 3" in caplog.text


# ----------------------------------------------------------------------------- the rest of the audit

def test_mistyped_demo_root_generates_nothing(base_dir, tmp_path, capsys):
    typo = tmp_path / "dataset" / "demoo"
    assert cli(main_NPC.main, ["--dataset_root", str(typo), "--logs_dir", str(tmp_path / "logs"),
                               "--pretrained_dir", str(base_dir), "--no_progress"]) == 1
    assert "no demo dataset there" in capsys.readouterr().err
    assert not (tmp_path / "dataset").exists()


@pytest.mark.parametrize("flag,value", [("--lr", "0"), ("--lr", "nan"), ("--seed", "-1"), ("--stop_after", "-1"),
                                        ("--bank_seed", "x")])
def test_numeric_flags_are_checked_at_parse_time(flag, value, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args([flag, value], "npc")
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_context_length_error_says_what_the_weights_allow(root, base_dir, tmp_path, capsys):
    import open_clip

    own = open_clip.get_model_config(MODEL)["text_cfg"]["context_length"]
    assert cli(main_CLIP.main, run_args(root, base_dir, tmp_path / "logs", "--eval", "--context_length",
                                        str(own + 8), "--experiments", "cl")) == 1
    err = capsys.readouterr().err
    assert f"--context_length {own + 8}: the weights" in err and f"exactly {own} tokens" in err
    assert not (tmp_path / "logs" / "cl").exists()  # a run that fails during setup leaves no folder


def test_help_is_quick_and_get_memorybank_lists_its_flags():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    probe = ("import sys, main_NPC\ntry:\n    main_NPC.main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True).stdout
    assert out.strip().endswith("no torch")
    text = subprocess.run([sys.executable, "get_memorybank.py", "--help"], cwd=REPO, env=env, capture_output=True,
                          text=True).stdout
    listed = set(re.findall(r"^\s+(--\w+)", text, re.M))
    assert {"--bank_seed", "--clean_threshold", "--noise_ratio", "--bank_batch_size"} <= listed
    assert not listed & {"--lr", "--epochs", "--warmup", "--npc_variant", "--stop_after", "--seed"}


def test_resumed_event_file_sorts_after_the_earlier_ones(tmp_path):
    """TensorBoard reads event files in name order (creation second first): a resume within the same
    second as the earlier writer must not put its file, and so its purge_step, first."""
    from torch.utils.tensorboard import SummaryWriter

    from npc.checkpoint import wait_past_event_files

    logdir = tmp_path / "tensorboard"
    first = SummaryWriter(str(logdir))
    first.add_scalar("x", 1.0, 1)
    first.close()
    (earlier,) = [f.name for f in logdir.glob("events.out.tfevents.*")]
    wait_past_event_files(logdir)
    second = SummaryWriter(str(logdir), purge_step=1)
    second.close()
    names = sorted(f.name for f in logdir.glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[0] == earlier  # the resumed run's file is read last
    assert int(names[1].split(".")[3]) > int(names[0].split(".")[3])
    wait_past_event_files(tmp_path / "missing")  # no event files: returns at once
