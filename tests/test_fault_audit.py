"""Fault audit: exports that would replace other files, images PIL decodes differently than a viewer shows
them (16-bit, EXIF-rotated) or refuses (decompression bombs), a disk that fills while a checkpoint is written,
a run folder's lock after a kill, SIGTERM, and files that are not checkpoints. Each case ends in one clear
line naming the file or flag, or in the right result; nothing on disk is lost (docs/failure.md)."""
import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import CHILD_PYTHONPATH, MODEL, make_images_and_csvs
from npc import data, images, loaders
from npc.csv_format import DataError


# ----------------------------------------------------------------------------- images: one decoding rule

def test_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    values = (rng.integers(120, 163, size=(24, 24)) * 257).astype(np.uint16)  # mean about 141 * 257
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
        assert np.asarray(raw.convert("RGB")).mean() > 250  # PIL's plain conversion clips to white
    rgb = np.asarray(images.open_rgb(path))
    assert rgb.shape == (24, 24, 3) and rgb.dtype == np.uint8
    assert abs(rgb.mean() - values.mean() / 257) < 0.5
    assert (rgb[..., 0] == np.round(values / 257)).all() and (rgb[..., 0] == rgb[..., 2]).all()
    # the same pixels wherever an image is decoded for the model
    assert np.array_equal(loaders.load_image(path, np.asarray), rgb)
    assert data.decode_error(path) is None


def _rotated_jpeg(path):
    """A 40 x 20 JPEG, red on its left half, with EXIF orientation 6 (a viewer turns it 90 degrees clockwise)."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[images.ORIENTATION] = 6
    img.save(path, exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "sideways.jpg"
    _rotated_jpeg(path)
    rgb = np.asarray(images.open_rgb(path)).astype(int)
    assert rgb.shape == (40, 20, 3)  # upright: 20 wide, 40 high
    assert rgb[5, 10, 0] > 200 and rgb[35, 10, 2] > 200  # the red half is on top after the turn
    assert loaders.load_image(path, np.asarray).shape == (40, 20, 3)
    assert data.decode_error(path) is None


@pytest.fixture
def bombs(tmp_path, monkeypatch):
    """CSV data whose train and dev splits each hold two images over PIL's decompression-bomb limit (lowered
    for the test): one past the limit (PIL warns) and one past twice the limit (PIL refuses)."""
    files = make_images_and_csvs(tmp_path / "data", n_train=8, n_dev=6, n_test=3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the images are 40 x 40 = 1600 pixels
    out = {}
    for split in ("train", "dev"):
        s = data.read_csv_split(files[split], split, check_images=False)
        for i, side in enumerate([40] + [50] + [30] * (s.num_images - 2)):  # 1600, 2500, then 900 pixels
            Image.new("RGB", (side, side), (9, 9, 9)).save(s.image_paths[i], format="PNG")
        out[split] = (files[split], [0, 1])
    return out


def test_decompression_bomb_is_an_unreadable_image(bombs):
    train_csv, bad = bombs["train"]
    split = data.read_csv_split(train_csv, "train")  # the header check lets them through to be skipped
    for i in bad:
        with pytest.raises(DataError, match=f"cannot read image {split.image_paths[i]}: .*decompression-bomb"):
            images.open_rgb(split.image_paths[i])
        assert "decompression-bomb" in data.decode_error(split.image_paths[i])
    from npc.model import create_model

    _, preprocess, _ = create_model(MODEL, "none")
    tokenizer = lambda caps: torch.zeros(len(caps), 8, dtype=torch.long)  # noqa: E731
    everything = np.arange(len(split))
    with pytest.raises(DataError) as e:  # a training batch without --skip_unreadable_images
        loaders.PairBatches(split, preprocess, tokenizer)[everything]
    assert str(split.image_paths[0]) in str(e.value) and "--skip_unreadable_images" in str(e.value)
    assert "\n" not in str(e.value)
    batch = loaders.PairBatches(split, preprocess, tokenizer, skip_unreadable=True)[everything]
    assert sorted(batch["skipped_images"].tolist()) == bad
    assert not np.isin(batch["image_index"].numpy(), bad).any()
    with pytest.raises(DataError, match=str(split.image_paths[0])):  # the memory bank's (and evaluation's) encoding
        list(loaders.image_loader(split, preprocess, batch_size=4, num_workers=0))
    dev_csv, bad = bombs["dev"]
    dev = data.read_csv_split(dev_csv, "dev", check_images=False)
    with pytest.raises(DataError, match=f"cannot read image {dev.image_paths[0]}: .*--skip_unreadable_images"):
        data.readable_split(dev)
    kept, dropped = data.readable_split(dev, skip=True)
    assert dropped == bad and kept.num_images == dev.num_images - 2


# ----------------------------------------------------------------------------- export_model.py --out

@pytest.fixture
def training_checkpoint(tmp_path):
    from npc.model import create_model

    model = create_model(MODEL, "none", init_seed=0)[0]
    path = tmp_path / "latest.pt"
    torch.save({"format": "npc-reimpl/1", "epoch": 3, "vision_model": MODEL, "state_dict": model.state_dict(),
                "optimizer": {}, "args": {"vision_model": MODEL}}, path)
    return path


def test_export_never_replaces_a_file_it_did_not_write(training_checkpoint, tmp_path, capsys):
    import export_model
    from npc.cli import cli

    other = tmp_path / "run2" / "best.pt"  # another run's checkpoint
    other.parent.mkdir()
    torch.save({"format": "npc-reimpl/1", "epoch": 1, "state_dict": {}}, other)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    kept = {p: p.read_bytes() for p in (training_checkpoint, other, notes)}
    for out, why in ((other, "is not an export of export_model.py"), (notes, "is not an export of export_model.py"),
                     (training_checkpoint, "is the checkpoint being exported"), (tmp_path, "is a folder")):
        assert cli(export_model.main, [str(training_checkpoint), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {out} ") and why in err and err.count("\n") == 1
        assert "choose another --out" in err or "give the file to write" in err
    assert {p: p.read_bytes() for p in kept} == kept
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.suffix == ".json"]

    out = tmp_path / "export" / "mine.pt"
    first = export_model.main([str(training_checkpoint), "--out", str(out)])
    again = export_model.main([str(training_checkpoint), "--out", str(out)])  # an earlier export is replaced
    assert again == first and torch.load(out, weights_only=True)["epoch"] == 3
    with pytest.raises(FileExistsError, match="is the checkpoint being exported"):  # an export onto itself
        export_model.main([str(out), "--out", str(out)])
    # the demo models' config beside the export: a file of the same name holding something else is kept
    config = tmp_path / "elsewhere" / f"{MODEL}.json"
    config.parent.mkdir()
    config.write_text('{"mine": 1}\n')
    with pytest.raises(FileExistsError, match=f"{config} exists and holds another file"):
        export_model.main([str(training_checkpoint), "--out", str(config.parent / "mine.pt")])
    assert config.read_text() == '{"mine": 1}\n' and not (config.parent / "mine.pt").exists()


# ----------------------------------------------------------------------------- files that are not checkpoints

def test_a_file_that_is_not_a_checkpoint_is_one_line_naming_it(training_checkpoint, tmp_path, capsys):
    import export_model
    from npc.cli import cli
    from npc.model import read_checkpoint

    import argparse

    cases = {"random.pt": np.random.default_rng(0).bytes(5000), "empty.pt": b"",
             "cut.pt": training_checkpoint.read_bytes()[:20000]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"args": argparse.Namespace(lr=1.0)}, tmp_path / "objects.pt")  # a full pickle
    reasons = {"random.pt": "(neither a zip archive nor a pickle written by torch.save)", "empty.pt": "(empty file)",
               "cut.pt": "(a damaged or cut-short zip archive", "objects.pt": "holds Python objects"}
    for name, reason in reasons.items():
        with pytest.raises(ValueError) as e:
            read_checkpoint(tmp_path / name)
        message = str(e.value)
        assert message.startswith(str(tmp_path / name)) and reason in message, message
        assert "\n" not in message and "weights_only=False" not in message
        assert cli(export_model.main, [str(tmp_path / name), "--out", str(tmp_path / "x.pt")]) == 1
        assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "x.pt").exists()


# ----------------------------------------------------------------------------- a full disk while a checkpoint is written

def _child_env():
    return {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


# Saves a checkpoint of a 1.4 MB model under a 200 kB file-size limit (SIGXFSZ ignored: the write fails with
# EFBIG, as on a full disk), through npc.cli as a script does, with the run's log.txt as a handler.
FULL_DISK_SCRIPT = r"""
import logging, resource, signal, sys
import torch
from npc.checkpoint import save_checkpoint
from npc.cli import cli

path, log_txt = sys.argv[1], sys.argv[2]
logging.getLogger("npc").addHandler(logging.FileHandler(log_txt))
model = torch.nn.Linear(600, 600)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
sys.exit(cli(lambda argv: save_checkpoint(path, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                                          epoch=2, step=10, best={}, config={"optim": {"lr": 1.0}}, name="full",
                                          vision_model="npc-micro"), []))
"""


def test_a_checkpoint_past_the_file_size_limit_is_one_line_and_keeps_the_previous_one(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    path = ckpts / "latest.pt"
    torch.save({"format": "npc-reimpl/1", "epoch": 1}, path)
    before = path.read_bytes()
    log_txt = tmp_path / "log.txt"
    done = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(path), str(log_txt)], env=_child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(f"error: cannot write checkpoint {path}: disk full") and done.stderr.count("\n") == 1, \
        done.stderr
    assert "--resume latest" in done.stderr and "Traceback" not in done.stderr
    assert log_txt.read_text().strip() == done.stderr.strip()
    assert path.read_bytes() == before and os.listdir(ckpts) == ["latest.pt"]  # no temporary file left


def test_no_space_while_writing_best_is_one_line_naming_it(tmp_path, monkeypatch):
    from npc import checkpoint
    from npc.errors import UserError

    best = tmp_path / "best.pt"
    best.write_bytes(b"the best epoch so far")

    def no_space(obj, f, *a, **kw):
        f.write(b"PK part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(UserError) as e:
        checkpoint.write_best({"epoch": 2, "state_dict": {}}, best)
    assert str(e.value).startswith(f"cannot write checkpoint {best}: disk full or file too large (No space left "
                                   f"on device); ")
    assert best.read_bytes() == b"the best epoch so far" and os.listdir(tmp_path) == ["best.pt"]


# ----------------------------------------------------------------------------- the run folder's lock after a kill

# Takes the lock, forks a child (as the DataLoader forks its workers) that only sleeps, says so, and waits.
LOCK_SCRIPT = r"""
import os, sys, time
from npc.locks import file_lock

with file_lock(sys.argv[1], "the run folder", wait=False):
    if os.fork() == 0:  # the child says its pid once it runs: past the fork hooks, as a worker would be
        print(os.getpid(), flush=True)
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
"""


def test_a_killed_runs_forked_children_do_not_hold_its_lock(tmp_path):
    import signal

    from npc.locks import LockedError, file_lock

    lock = tmp_path / "run" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(lock)], env=_child_env(), stdout=subprocess.PIPE,
                              text=True)
    child = int(holder.stdout.readline())
    try:
        with pytest.raises(LockedError, match=f"in use by pid {holder.pid} "):  # held while its holder lives
            with file_lock(lock, "the run folder", wait=False):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        os.kill(child, 0)  # the child still lives
        with file_lock(lock, "the run folder", wait=False):  # at once, not when the child ends
            os.kill(child, 0)
    finally:
        os.kill(child, signal.SIGKILL)


# Runs main_CLIP as its script does (through npc.cli), sending itself SIGTERM before its 3rd optimizer step.
SIGTERM_SCRIPT = r"""
import os, signal, sys
import main_CLIP
from helpers import before_step
from npc.cli import cli

before_step(3, lambda: os.kill(os.getpid(), signal.SIGTERM))
sys.exit(cli(main_CLIP.main, sys.argv[1:]))
"""


def test_sigterm_stops_a_run_with_one_line_in_its_log(fresh_root, base_dir, tmp_path):
    from helpers import run_args

    from npc.locks import file_lock

    logs = tmp_path / "logs"
    argv = run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "t", "--num_workers", "1")
    done = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, *argv], env=_child_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 143, done.stderr[-3000:]
    assert done.stderr.startswith("terminated (SIGTERM); ") and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert "--resume latest" in done.stderr
    assert (logs / "t" / "log.txt").read_text().rstrip().splitlines()[-1].endswith(done.stderr.strip())
    with file_lock(logs / "t" / ".lock", "the run folder", wait=False):  # released
        pass


# ----------------------------------------------------------------------------- resuming into a run folder

def _tree(folder):
    """Every file of a folder with its bytes (what a refused command must leave as it was), but log.txt, which
    only grows: its first line (in this process the refusal's line goes to the log of the run set up last)."""
    return {p.relative_to(folder): p.read_bytes().splitlines()[0] if p.name == "log.txt" else p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_only_a_runs_own_latest_state_resumes_into_its_folder(fresh_root, base_dir, tmp_path, capsys):
    import main_CLIP
    from helpers import _records, run_args
    from npc.cli import cli

    logs = tmp_path / "logs"
    args = lambda *a: run_args(fresh_root, base_dir, logs, "--noise_ratio", "0.2", *a)  # noqa: E731
    main_CLIP.main(args("--epochs", "2", "--experiments", "A"))
    main_CLIP.main(args("--epochs", "1", "--experiments", "B"))
    a, b = logs / "A", logs / "B"
    before = {run: _tree(run) for run in (a, b)}
    refused = [("A", a / "checkpoints" / "best.pt"),  # weights only, of the same run
               ("B", a / "checkpoints" / "latest.pt")]  # another run's full state
    for name, ckpt in refused:
        assert cli(main_CLIP.main, args("--epochs", "3", "--experiments", name, "--resume", str(ckpt))) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: --resume {ckpt}: {logs / name} already holds a run (its latest checkpoint "
                              f"{logs / name / 'checkpoints' / 'latest.pt'})") and err.count("\n") == 1, err
        assert "--resume latest" in err and "another --experiments" in err
    assert {run: _tree(run) for run in (a, b)} == before  # nothing of either run changed
    # the run's own latest.pt, by its path, continues it as --resume latest does
    main_CLIP.main(args("--epochs", "3", "--experiments", "A", "--resume", str(a / "checkpoints" / "latest.pt")))
    assert [r["epoch"] for r in _records(a)] == [1, 2, 3]
    # another run's checkpoint starts a new folder
    main_CLIP.main(args("--epochs", "2", "--experiments", "C", "--resume", str(b / "checkpoints" / "latest.pt")))
    assert [r["epoch"] for r in _records(logs / "C")] == [2] and _tree(b) == before[b]
    # a folder whose run died before its first checkpoint is reclaimed: the dead run's partial logs go
    (logs / "D" / "checkpoints").mkdir(parents=True)
    (logs / "D" / "params.txt").write_text("dataset: demo\n")
    (logs / "D" / "metrics.jsonl").write_text('{"epoch": 1, "dead": true}\n')
    main_CLIP.main(args("--epochs", "2", "--experiments", "D", "--resume", str(b / "checkpoints" / "latest.pt")))
    assert _records(logs / "D") == [r for r in _records(logs / "D") if "dead" not in r] and len(_records(logs / "D")) == 1


def test_fewer_epochs_than_the_run_has_are_refused(fresh_root, base_dir, tmp_path, capsys):
    import main_CLIP
    from helpers import run_args
    from npc.cli import cli

    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "3", "--experiments", "A"))
    before = _tree(logs / "A")
    argv = run_args(fresh_root, base_dir, logs, "--experiments", "A", "--resume", "latest", "--epochs", "2")
    assert cli(main_CLIP.main, argv) == 1
    err = capsys.readouterr().err
    assert err == (f"error: --epochs 2: {logs / 'A' / 'checkpoints' / 'latest.pt'} has already trained 3 epochs; pass "
                   f"--epochs 3 or more to continue it (or evaluate it with --eval --resume)\n")
    assert _tree(logs / "A") == before
    res = main_CLIP.main(argv[:-1] + ["3"])  # as many as it has: nothing trained, said so
    out = capsys.readouterr().out
    assert "the run already has its 3 epochs; nothing to train" in out and res["best_dev"]["epoch"] >= 1


def test_the_random_state_is_the_same_whether_the_bank_was_built_or_reused(fresh_root, base_dir, tmp_path):
    import main_NPC
    from helpers import run_args

    logs = tmp_path / "logs"
    states = []
    for name in ("built", "reused"):
        main_NPC.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--noise_ratio", "0.2", "--experiments", name))
        states.append(torch.load(logs / name / "checkpoints" / "latest.pt", weights_only=False)["rng"])
    log = (logs / "built" / "log.txt").read_text() + (logs / "reused" / "log.txt").read_text()
    assert "memory bank: encoding" in log and "memory bank: reusing" in log
    assert torch.equal(states[0]["torch"], states[1]["torch"])
    assert states[0]["python"] == states[1]["python"] and torch.equal(states[0]["numpy"][1], states[1]["numpy"][1])


# ----------------------------------------------------------------------------- the memory bank is published as one unit

# Runs get_memorybank.py and SIGKILLs itself as it starts writing the bank's file whose name ends with argv[1]
# (leaving that write's temporary file half written, as a kill does).
BANK_KILL_SCRIPT = r"""
import os, signal, sys
from pathlib import Path
import get_memorybank
from npc import bank_files as mb  # where the bank's files are written

target = sys.argv[1]

def killing(real):
    def write(path, *a, **kw):
        path = Path(path)
        if path.name.endswith(target):
            path.with_name(f".{path.name}.half.tmp").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *a, **kw)
    return write

mb.atomic_save_npy, mb.atomic_write_json = killing(mb.atomic_save_npy), killing(mb.atomic_write_json)
get_memorybank.main(sys.argv[2:])
"""


def _bank_lines(run_dir):
    """What a run's log says about its memory bank, without the time stamps."""
    return [line.split(" | ", 1)[1] for line in (run_dir / "log.txt").read_text().splitlines()
            if " | memory bank" in line]


def test_a_bank_cut_short_anywhere_is_rebuilt_and_the_releases_files_still_load(fresh_root, base_dir, tmp_path):
    import main_NPC
    from helpers import run_args
    from npc import memory_bank as mb

    logs = tmp_path / "logs"
    args = run_args(fresh_root, base_dir, logs, "--noise_ratio", "0.4")
    bank_dir = data.memory_bank_dir(fresh_root)
    names = {k: bank_dir / f"0.4_mbank_{k}" for k in ("img_idx.npy", "txt_idx.npy", "pclean.npy", "info.json")}
    for k, target in enumerate(("txt_idx.npy", "pclean.npy", "info.json")):
        shutil.rmtree(bank_dir, ignore_errors=True)  # the first build of the bank is cut short
        done = subprocess.run([sys.executable, "-c", BANK_KILL_SCRIPT, target, *args], env=_child_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == -9, done.stderr[-2000:]
        assert not names["info.json"].exists() and list(bank_dir.glob("*.tmp"))  # what the kill left
        main_NPC.main(args + ["--epochs", "1", "--experiments", f"r{k}"])
        said = _bank_lines(logs / f"r{k}")
        assert said[0].startswith(f"memory bank: {bank_dir}/0.4_mbank_* is incomplete (") and \
            said[0].endswith("an interrupted build): rebuilding the bank"), said
        assert sum("incomplete" in m for m in said) == 1 and any("memory bank: encoding" in m for m in said)
        info = json.loads(names["info.json"].read_text())
        assert mb.bank_files_match(bank_dir, 0.4, "caption", info) and "p_clean_sha256" in info
        assert not list(bank_dir.glob("*.tmp")) and not list(bank_dir.glob(".*partial"))
    # the release's files (its two arrays, no p(clean), no info file) are reused as they are, with a warning
    for k in ("pclean.npy", "info.json"):
        names[k].unlink()
    kept = {p: p.read_bytes() for p in bank_dir.iterdir()}
    main_NPC.main(args + ["--epochs", "1", "--experiments", "release"])
    said = _bank_lines(logs / "release")
    assert any("has no record of what it was built from" in m for m in said) and any("reusing" in m for m in said)
    assert not any("encoding" in m for m in said) and {p: p.read_bytes() for p in bank_dir.iterdir()} == kept


def test_get_memorybank_says_what_it_replaces(fresh_root, base_dir, tmp_path, capsys):
    import get_memorybank
    from helpers import run_args

    args = run_args(fresh_root, base_dir, tmp_path / "logs", "--noise_ratio", "0.4")
    get_memorybank.main(args)
    assert "replacing" not in capsys.readouterr().out  # nothing there yet
    get_memorybank.main(args + ["--clean_threshold", "0.5", "--bank_seed", "3"])
    lines = [line.split(" | ", 1)[1] for line in capsys.readouterr().out.splitlines() if "replacing" in line]
    bank = data.memory_bank_dir(fresh_root)
    assert lines == [f"memory bank: replacing {bank}/0.4_mbank_*, built with other settings: --clean_threshold 0.5 "
                     f"(the bank has 0.9); --bank_seed 3 (the bank has 99)"]
    get_memorybank.main(args + ["--clean_threshold", "0.5", "--bank_seed", "3"])
    assert f"memory bank: replacing {bank}/0.4_mbank_*, built with the same settings" in capsys.readouterr().out


# ----------------------------------------------------------------------------- files derived from a CSV, per reading options

# Loads the noisy training split of argv[1] read with caption column argv[2], argv[3] times; prints how many
# loads did not give that column's captions (as a multiset: the noise shuffles them) with a mask of their length.
CAPTION_KEY_SCRIPT = r"""
import csv, sys
from collections import Counter
from npc.config import DataConfig
from npc.sources import source_for

path, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, encoding="utf-8", newline="") as f:
    own = Counter(row[key] for row in csv.DictReader(f, delimiter="\t"))
data = DataConfig(dataset="csv", train_data=path, csv_caption_key=key, noise_ratio=0.2)
wrong = 0
for _ in range(n):
    split, mask = source_for(data).load_train(log=lambda *_: None, check_images=False)
    wrong += Counter(split.captions) != own or len(mask) != len(split.captions)
print(wrong, split.caps_file.name)
"""


def test_two_caption_columns_of_one_csv_never_read_each_others_captions(tmp_path):
    files = make_images_and_csvs(tmp_path / "data", n_train=12, n_dev=2, n_test=2)
    train = files["train"]
    lines = train.read_text(encoding="utf-8").splitlines()
    train.write_text("filepath\ttitle\talt\n" + "".join(f"{line}\tALT {line.split(chr(9))[1]}\n" for line in lines[1:]),
                     encoding="utf-8")
    procs = [subprocess.Popen([sys.executable, "-c", CAPTION_KEY_SCRIPT, str(train), key, "1000"], env=_child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for key in ("title", "alt")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    (wrong_title, title_file), (wrong_alt, alt_file) = (o[0].split() for o in outs)
    assert wrong_title == wrong_alt == "0"
    # the default options keep the default names (existing files stay valid); another column has its own
    assert title_file == "train.0.2_noise_train_caps.txt" and (train.parent / "train.train_caps.txt").is_file()
    assert alt_file.startswith("train.alt-") and alt_file.endswith(".0.2_noise_train_caps.txt")
    assert (train.parent / alt_file.replace("0.2_noise_", "")).read_text(encoding="utf-8").startswith("ALT ")
    assert not (train.parent / "train.train_caps.txt").read_text(encoding="utf-8").startswith("ALT ")


# ----------------------------------------------------------------------------- remedies that work

def test_a_noise_seed_mismatch_on_csv_data_names_the_command_that_rebuilds_it(tmp_path):
    import shlex

    import construct_noise
    from npc.config import DataConfig
    from npc.noise import NoisySplitError
    from npc.sources import source_for

    files = make_images_and_csvs(tmp_path / "data", n_train=12, n_dev=2, n_test=2, sep=",")
    train = files["train"]
    assert construct_noise.main(["--train_data", str(train), "--csv_separator", "comma", "--noise_ratio", "0.2",
                                 "--seed", "1"]) == 0
    d = DataConfig(dataset="csv", train_data=str(train), csv_separator=",", noise_ratio=0.2)
    with pytest.raises(NoisySplitError) as e:
        source_for(d).load_train(log=lambda *_: None)
    message = str(e.value)
    assert "was built with noise seed 1, this run asks for 99" in message and "--dataset_root" not in message
    command = message.split("rebuild it with ", 1)[1].split(" (its memory bank")[0]
    assert command == (f"python construct_noise.py --train_data {train} --csv_separator comma --noise_ratio 0.2 "
                       f"--noise_mode caption --seed 99 --force")
    assert construct_noise.main(shlex.split(command)[2:]) == 0  # the remedy, as given
    assert source_for(d).load_train(log=lambda *_: None)[1].sum() > 0


@pytest.mark.parametrize("script", ["construct_noise", "export_model"])
def test_a_prefix_of_a_flag_is_not_taken_for_the_flag(script, capsys):
    import importlib

    parser = importlib.import_module(script).build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--train", "x.csv", "--noise_ratio", "0.2"] if script == "construct_noise"
                          else ["x.pt", "--out", "y.pt", "--vision", "npc-micro"])
    assert "unrecognized arguments: --" in capsys.readouterr().err


def test_a_bare_state_dict_without_vision_model_says_to_pass_it(fresh_root, base_dir, tmp_path, capsys):
    import main_CLIP
    from helpers import run_args
    from npc.cli import cli
    from npc.model import create_model

    bare = tmp_path / "weights.pt"
    torch.save(create_model(MODEL, "none", init_seed=0)[0].state_dict(), bare)
    argv = run_args(fresh_root, base_dir, tmp_path / "logs", "--eval", "--resume", str(bare), "--experiments", "e")
    i = argv.index("--vision_model")
    assert cli(main_CLIP.main, argv[:i] + argv[i + 2:]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: --resume {bare} holds weights only, without the name of their model: pass --vision_model "
                   f"(the architecture they were trained as, e.g. --vision_model ViT-B/32 or npc-tiny)\n")
    assert main_CLIP.main(argv)["results"]  # the remedy: the same command with --vision_model


def test_a_full_disk_at_a_lock_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    from npc import locks
    from npc.cli import cli

    def no_space(*a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks.os, "pwrite", no_space)
    lock = tmp_path / "bank" / ".0.2_mbank_img_idx.npy.lock"

    def take(argv):
        with locks.file_lock(lock, "the memory bank", wait=True):
            pass

    assert cli(take, []) == 1
    assert capsys.readouterr().err == (f"error: cannot write the lock file {lock} of the memory bank: disk full or "
                                       f"file too large (No space left on device); free some space (or raise the "
                                       f"file-size limit, ulimit -f) and run it again\n")
    monkeypatch.undo()
    with locks.file_lock(lock, "the memory bank", wait=False):  # nothing held it
        pass


@pytest.mark.parametrize("encoding,named", [("utf-16-le", "UTF-16-LE"), ("utf-16-be", "UTF-16-BE")])
def test_a_utf16_csv_is_named_utf16(tmp_path, encoding, named):
    text = "filepath\ttitle\nimages/a.png\ta caf\u00e9\nimages/b.png\ta dog\n"
    path = tmp_path / "train.csv"
    path.write_bytes(text.encode(encoding))  # no byte-order mark
    with pytest.raises(DataError) as e:
        data.read_csv_split(path, "train", check_images=False)
    assert str(e.value) == (f"{path}, line 1: the file is {named} text without a byte-order mark (NUL bytes between "
                            f"its characters), not utf-8: save this file as UTF-8 (or as UTF-16 with its byte-order "
                            f"mark); --csv_encoding {encoding} would read every split's file as {named}")
    split = data.read_csv_split(path, "train", encoding=encoding, check_images=False)  # the flag reads it
    assert sorted(split.captions) == ["a caf\u00e9", "a dog"]
    path.write_bytes(text.encode("utf-16"))  # with its byte-order mark: read as UTF-16 without a flag
    assert sorted(data.read_csv_split(path, "train", check_images=False).captions) == ["a caf\u00e9", "a dog"]


# ----------------------------------------------------------------------------- --device

@pytest.mark.parametrize("device", ["foo", "cuda", "cuda:7", "mps"])
def test_a_device_this_machine_lacks_is_one_line_naming_device(device, fresh_root, base_dir, tmp_path, capsys):
    import main_CLIP
    from helpers import run_args
    from npc.cli import cli
    from npc.train_utils import available_devices

    if device in available_devices():
        pytest.skip(f"this machine has {device}")
    logs = tmp_path / "logs"
    assert cli(main_CLIP.main, run_args(fresh_root, base_dir, logs, "--device", device, "--experiments", "d")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --device {device}: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"it has {', '.join(available_devices())}" in err or f"this machine has {', '.join(available_devices())}" in err
    assert not (logs / "d").exists()


# ----------------------------------------------------------------------------- Ctrl-C as a process forks

# Ctrl-C arrives while the process forks (as a data loader starts its workers): a fork handler registered before
# npc.cli's sends it. The script must stop (exit code 130, one line), not print "Exception ignored" and go on.
FORK_SIGINT_SCRIPT = r"""
import os, signal, sys, time
os.register_at_fork(before=lambda: os.kill(os.getpid(), signal.SIGINT))
from npc.cli import cli

def main(argv):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    time.sleep(0.5)
    print("went on", flush=True)

sys.exit(cli(main, []))
"""


def test_ctrl_c_while_the_process_forks_stops_it():
    done = subprocess.run([sys.executable, "-c", FORK_SIGINT_SCRIPT], env=_child_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 130 and "went on" not in done.stdout, done.stderr
    assert done.stderr.startswith("interrupted (Ctrl-C); ") and done.stderr.count("\n") == 1, done.stderr


# ----------------------------------------------------------------------------- messages that are true

def test_a_non_finite_loss_says_what_is_kept_and_what_to_try(fresh_root, base_dir, tmp_path, monkeypatch, capsys):
    import main_CLIP
    from helpers import run_args
    from npc import steps
    from npc.cli import cli

    logs = tmp_path / "logs"
    assert cli(main_CLIP.main, run_args(fresh_root, base_dir, logs, "--epochs", "1", "--lr", "1e6",
                                        "--experiments", "a")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: non-finite loss nan at epoch 1, step ") and err.count("\n") == 1, err
    assert err.endswith("No checkpoint was written (none before epoch 1 ended): run it again under the same "
                        "--experiments with a lower --lr than 1e+06\n")  # fp32 already: no --precision fp32
    assert not (logs / "a" / "checkpoints" / "latest.pt").exists()
    real, done = steps.train_step, [0]

    def nan_at_step_30(*a, **kw):  # 25 steps per epoch: in epoch 2
        out = real(*a, **kw)
        done[0] += 1
        return {**out, "loss": out["loss"] * float("nan")} if done[0] == 30 else out

    monkeypatch.setattr(steps, "train_step", nan_at_step_30)
    assert cli(main_CLIP.main, run_args(fresh_root, base_dir, logs, "--epochs", "2", "--experiments", "b")) == 1
    err = capsys.readouterr().err
    latest = logs / "b" / "checkpoints" / "latest.pt"
    assert err.endswith(f"Its last checkpoint (epoch 1, {latest}) is kept; a resumed run keeps its --lr: start a new "
                        f"run (another --experiments) with a lower --lr than 0.0002\n"), err
    assert torch.load(latest, weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "ABSOLUTE"])
def test_experiments_is_a_plain_name_inside_logs_dir(name, fresh_root, base_dir, tmp_path, capsys):
    import main_CLIP
    from helpers import run_args
    from npc.cli import cli

    name = str(tmp_path / "elsewhere") if name == "ABSOLUTE" else name
    logs = tmp_path / "box" / "logs"
    assert cli(main_CLIP.main, run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", name)) == 1
    assert capsys.readouterr().err == (f"error: --experiments {name}: a run's name is a plain folder name inside "
                                       f"--logs_dir {logs} (no / or ..); to write elsewhere, pass --logs_dir\n")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "box" / "x").exists()
    assert not logs.exists() or not any(logs.iterdir())


# ----------------------------------------------------------------------------- CSV data: unreadable and repeated images

def _csv_flags(files, logs, *extra):
    return ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
            "--test_data", str(files["test"]), "--vision_model", MODEL, "--pretrained", "none", "--logs_dir", str(logs),
            "--batch_size", "8", "--eval_batch_size", "64", "--lr", "1e-4", "--warmup", "2", "--num_workers", "0",
            "--no_progress", "--epochs", "1", *extra]


@pytest.fixture
def damaged_csv(tmp_path):
    """CSV data whose training split has a truncated PNG image (its header reads, its pixels do not) and one
    image twice under two names; returns the files, the split and the indices of the truncated image and of
    the copy and its original."""
    files = make_images_and_csvs(tmp_path / "data", n_train=12, n_dev=4, n_test=4)  # 12 different pictures
    train = data.read_csv_split(files["train"], "train", check_images=False)
    bad, copy, original = [i for i, p in enumerate(train.image_paths) if p.suffix == ".png"][:3]
    raw = train.image_paths[bad].read_bytes()
    train.image_paths[bad].write_bytes(raw[:len(raw) // 2])
    shutil.copyfile(train.image_paths[original], train.image_paths[copy])
    return files, train, bad, min(copy, original), max(copy, original)


def test_the_image_cache_skips_or_names_an_unreadable_training_image(damaged_csv, tmp_path, capsys):
    import main_CLIP
    from npc.cli import cli

    files, train, bad, _, _ = damaged_csv
    logs, cache = tmp_path / "logs", tmp_path / "cache"
    assert cli(main_CLIP.main, _csv_flags(files, logs, "--image_cache", str(cache), "--experiments", "a")) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read image {train.image_paths[bad]}") and err.count("\n") == 1, err
    assert f"(train split, {files['train']}, line " in err and "--skip_unreadable_images" in err
    res = main_CLIP.main(_csv_flags(files, logs, "--image_cache", str(cache), "--skip_unreadable_images",
                                    "--experiments", "b"))
    assert res["results"]
    records = [json.loads(line) for line in (logs / "b" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["skipped_images"] == 1
    assert "image cache: reusing" in (logs / "b" / "log.txt").read_text()  # the cache records the image, once


def test_an_image_listed_twice_in_a_split_is_one_warning_with_a_count(damaged_csv, tmp_path):
    import main_CLIP

    files, train, _, first, again = damaged_csv
    logs = tmp_path / "logs"
    main_CLIP.main(_csv_flags(files, logs, "--skip_unreadable_images", "--experiments", "a"))
    warnings = [line for line in (logs / "a" / "log.txt").read_text().splitlines() if "image(s) of --train_data" in line]
    assert len(warnings) == 1, warnings
    assert all(w in warnings[0] for w in (f"1 image(s) of --train_data {files['train']}", str(train.image_paths[again]),
                                          str(train.image_paths[first]), "list the captions under one name"))


def test_the_memory_bank_leaves_out_unreadable_training_images(damaged_csv, tmp_path, capsys):
    import main_NPC
    from npc import memory_bank as mb
    from npc.cli import cli
    from npc.params import parse_args

    files, train, bad, _, _ = damaged_csv
    logs = tmp_path / "logs"
    argv = _csv_flags(files, logs, "--noise_ratio", "0.2", "--batch_size", "4")
    assert cli(main_NPC.main, argv + ["--experiments", "a"]) == 1  # without the flag: one line naming it
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read image {train.image_paths[bad]}") and err.count("\n") == 1, err
    res = main_NPC.main(argv + ["--skip_unreadable_images", "--experiments", "b"])
    assert res["results"]
    said = [line for line in (logs / "b" / "log.txt").read_text().splitlines() if "unreadable training image" in line]
    assert len(said) == 1 and "memory bank: left out 1 unreadable training image(s)" in said[0]
    assert str(train.image_paths[bad]) in said[0] and "not clean" in said[0]
    cfg = parse_args(argv, "npc")
    bank_dir = mb.bank_dir_for(cfg.data, cfg.model)
    info = json.loads(mb.bank_paths(bank_dir, 0.2)[2].read_text())
    split = data.read_csv_split(files["train"], "train", check_images=False)
    pairs = np.nonzero(split.caption_image == bad)[0]
    assert info["unreadable_images"] == 1 and info["unreadable_pairs"] == len(pairs) and info["n_pairs"] == len(split)
    bank = mb.load_bank(bank_dir, 0.2, split)
    p_clean = mb.load_pclean(bank_dir, 0.2, len(split))
    assert (bank.text_bank[pairs] == pairs).all() and split.caption_image[bank.image_bank[bad]] == bad  # themselves
    assert (p_clean[pairs] == 0).all()
    others = np.setdiff1d(np.arange(len(split)), pairs)
    assert not np.isin(bank.text_bank[others], pairs).any()  # no readable pair's entry needs the unreadable image
    assert not np.isin(split.caption_image[bank.image_bank[np.setdiff1d(np.arange(split.num_images), [bad])]], [bad]).any()


# After a fork, parent and child have the signal mask they had before it (SIGINT let through, others as set).
FORK_MASK_SCRIPT = r"""
import os, signal
import npc.cli  # noqa: F401
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
blocked = lambda: signal.pthread_sigmask(signal.SIG_BLOCK, set())  # noqa: E731
pid = os.fork()
if pid == 0:
    os._exit(0 if signal.SIGUSR1 in blocked() and signal.SIGINT not in blocked() else 3)
print(signal.SIGUSR1 in blocked(), signal.SIGINT in blocked(), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_fork_keeps_the_signal_mask():
    done = subprocess.run([sys.executable, "-c", FORK_MASK_SCRIPT], env=_child_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["True", "False", "0"], done.stderr
