"""The third fault audit's cases besides the benchmark runner's (tests/test_bench.py), on real files and real
processes: a caption with a line break in every format, read-only folders (a read-only bind mount in a mount
namespace: as root, chmod cannot make a folder read-only), shard indexes edited, shards cut short or holding a
member twice, a shard rewritten with its old modification time, the memory bank's record of its images,
Karpathy's splits sharing an image, the self-check's ties, --method_opt grad_scale's minimum, Flickr30K's image
folder, and one CSV file in UTF-16 (docs/failure.md)."""
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from helpers import CHILD_PYTHONPATH, REPO, make_images_and_csvs
from npc.config import DataConfig
from npc.errors import ConfigError, DataError
from npc.sources import source_for
from npc.sources import webdataset_shards as W
from npc.sources.base import forget_parsed
from npc.synthetic.karpathy import write_karpathy_dataset
from npc.synthetic.shards import demo_as_shards

F30K = {"train": 12, "val": 3, "test": 3}
TINY_MODEL = ["--vision_model", "npc-micro", "--pretrained", "none"]


def _fresh():
    """What this process kept of parsed splits and shard indexes: the next read reads the files."""
    forget_parsed()
    W._INDEXES.clear()


@pytest.fixture
def f30k(tmp_path):
    root = tmp_path / "f30k"
    return root, write_karpathy_dataset(root, "f30k", F30K, seed=2)


@pytest.fixture
def shards(demo_root, tmp_path):
    return demo_as_shards(demo_root, tmp_path / "shards", train_shards=3, csv=False)


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data["images"])
    path.write_text(json.dumps(data))
    forget_parsed()


def _run(*argv, cwd=REPO, prefix=()):
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*prefix, sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


# ----------------------------------------------------------------------------- a caption with a line break

def test_a_karpathy_sentence_with_a_line_break_is_one_caption_on_one_line(f30k, caplog, tmp_path):
    root, json_path = f30k

    def breaks(images):
        train = next(e for e in images if e["split"] == "train")
        train["sentences"][0]["raw"] = "A dog\non a mat \r\n in the sun"
    _edit_json(json_path, breaks)
    source = source_for(DataConfig(dataset="f30k", dataset_root=str(root), noise_ratio=0.2))
    split, mask = source.load_train(log=lambda *_: None, check_images=False)
    clean = (root / "annotations" / "karpathy" / "train_caps.txt").read_text(encoding="utf-8").splitlines()
    assert len(clean) == len(split.captions) == len(mask) == 5 * F30K["train"]  # 60 lines for 60 captions
    assert "A dog on a mat in the sun" in clean
    assert "line break" in caplog.text and "1 sentence(s) of the train split" in caplog.text
    # check_data.py says so
    out = _run("check_data.py", "--dataset", "f30k", "--dataset_root", str(root))
    assert out.returncode == 0, out.stderr
    assert "hold a line break" in out.stdout + out.stderr
    # a shard's caption with the same break is the same caption (one helper: npc.io.one_line)
    shard = tmp_path / "s.tar"
    _write_tar(shard, [("a.jpg", _jpeg()), ("a.txt", b"A dog\non a mat \r\n in the sun"), ("b.jpg", _jpeg(9)),
                       ("b.txt", b"a cat")])
    assert W.build_index(shard)[0][4] == "A dog on a mat in the sun"


# ----------------------------------------------------------------------------- read-only folders

def _unshare_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro /tmp /tmp && ! touch /tmp/.npc_ro_probe"],
                           capture_output=True)
    return probe.returncode == 0


READ_ONLY = pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare -m (a read-only bind mount)")


def _read_only(folder, *argv):
    """``python argv`` with ``folder`` mounted read-only in a mount namespace of its own."""
    script = f'mount --bind -o ro "{folder}" "{folder}" && exec "$@"'
    return _run(*argv, prefix=("unshare", "-m", "sh", "-c", script, "sh"))


def _one_line_error(out, folder):
    lines = out.stderr.splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), out.stderr  # a shard's index kept in memory
    err = lines[-1]
    assert err.startswith("error: cannot write "), err
    assert f"in the folder {folder}" in err and "read-only file system" in err and "make the folder writable" in err
    return err


@READ_ONLY
def test_read_only_data_folders_are_one_line_naming_the_folder(f30k, shards, fresh_root, tmp_path):
    root, _ = f30k
    # Karpathy's root: the annotation folder cannot be made
    err = _one_line_error(_read_only(root, "construct_noise.py", "--dataset", "f30k", "--dataset_root", str(root),
                                     "--noise_ratio", "0.2"), root)
    assert not (root / "annotations").exists() and "captions" in err
    # the shards' folder: the index is kept in memory (a warning), the captions' lock file cannot be written
    folder = Path(shards["dev"]).parent
    _one_line_error(_read_only(folder, "construct_noise.py", "--dataset", "webdataset", "--train_data",
                               shards["train"], "--noise_ratio", "0.2"), folder)
    # the demo at a new noise ratio: the noisy split's lock (the folder exists)
    ann = fresh_root / "annotations" / "scan_split"
    err = _one_line_error(_read_only(fresh_root, "construct_noise.py", "--dataset", "demo", "--dataset_root",
                                     str(fresh_root), "--noise_ratio", "0.35"), ann)
    assert ".lock" in err
    # training at a new noise ratio on the read-only demo: the same line
    _one_line_error(_read_only(fresh_root, "main_CLIP.py", "--dataset", "demo", "--dataset_root", str(fresh_root),
                               *TINY_MODEL, "--noise_ratio", "0.35", "--logs_dir", str(tmp_path / "logs"),
                               "--batch_size", "16", "--epochs", "1", "--no_progress"), ann)


@READ_ONLY
def test_a_read_only_logs_dir_is_one_line_naming_it(f30k, tmp_path):
    root, _ = f30k
    logs = tmp_path / "logs"
    logs.mkdir()
    err = _one_line_error(_read_only(logs, "main_CLIP.py", "--dataset", "f30k", "--dataset_root", str(root),
                                     *TINY_MODEL, "--logs_dir", str(logs), "--experiments", "r", "--epochs", "1",
                                     "--batch_size", "16", "--no_progress"), logs)
    assert "--logs_dir" in err and not (logs / "r").exists()


# ----------------------------------------------------------------------------- shards and their index

def _jpeg(seed=3, size=8):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _write_tar(path, members):
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000
            tf.addfile(info, io.BytesIO(data))


def _train_source(shards):
    return source_for(DataConfig(dataset="webdataset", train_data=shards["train"], noise_ratio=0))


@pytest.mark.parametrize("edit, problem", [
    (lambda ix: ix.update(samples="x"), "'samples' is a str, not a list"),
    (lambda ix: ix["samples"][3].pop(), "samples[3] is not [key, extension, offset, size, caption]"),
    (lambda ix: ix.update(samples=[]), "no samples"),
    (lambda ix: ix["samples"][2].__setitem__(4, None), "samples[2] has no caption (found None)"),
])
def test_an_edited_shard_index_is_named_and_rebuilt(shards, edit, problem, caplog):
    source = _train_source(shards)
    first = source.load_split("train")
    shard = Path(first.image_paths[0].shard)
    index = W.index_path(shard)
    saved = json.loads(index.read_text())
    edit(saved)
    index.write_text(json.dumps(saved))
    _fresh()
    again = source.load_split("train")
    assert again.captions == first.captions and again.keys == first.keys and "None" not in again.captions
    assert f"{index} is not a valid index of {shard.name} ({problem}; edited?): indexed the shard anew" in caplog.text
    assert json.loads(index.read_text())["samples"] == json.loads(json.dumps(W.build_index(shard)))


def _members(shard):
    with tarfile.open(shard) as tf:
        return [(m.name, m.offset, m.offset_data, m.size) for m in tf]


def _cut(shard, at):
    data = Path(shard).read_bytes()[:at]
    Path(shard).write_bytes(data)


@pytest.mark.parametrize("where, said", [
    ("sample boundary", "no end-of-archive marker"),
    ("inside a header", "it ends inside a tar header"),
    ("no end marker", "no end-of-archive marker"),
    ("inside an image", "unexpected end of data"),
    ("inside a caption", "unexpected end of data"),
])
@pytest.mark.parametrize("split", ["train", "dev"])
def test_a_shard_cut_short_is_detected_with_the_right_remedy(shards, where, said, split):
    spec = shards[split]
    shard = Path(W.shard_paths(spec, "--x")[1 if split == "train" else 0])
    members = _members(shard)
    mid = next(k for k, m in enumerate(members) if k >= len(members) // 2 and m[0].endswith(".jpg"))
    name, header, data, size = members[mid]
    last = members[-1]
    at = {"sample boundary": header, "inside a header": header + 100, "no end marker": last[2] + -(-last[3] // 512) * 512,
          "inside an image": data + size // 2,
          "inside a caption": next(m[2] + 1 for m in members[mid:] if m[0].endswith(".txt"))}[where]
    _cut(shard, at)
    _fresh()
    data_cfg = DataConfig(dataset="webdataset", train_data=shards["train"], dev_data=shards["dev"],
                          test_data=shards["test"], noise_ratio=0)
    with pytest.raises(DataError) as e:
        source_for(data_cfg).load_split(split, check_images=False)
    msg = str(e.value)
    assert msg.startswith(f"{shard}: the shard is cut short (") and said in msg and "copy the shard again" in msg
    assert "decompress" not in msg
    # check_data.py and training say the same
    flags = ["--dataset", "webdataset", "--train_data", shards["train"], "--dev_data", shards["dev"], "--test_data",
             shards["test"]]
    if split == "dev" and where == "sample boundary":
        for script in (("check_data.py",), ("main_CLIP.py", *TINY_MODEL, "--epochs", "1", "--no_progress",
                                            "--logs_dir", str(shard.parent / "logs"))):
            out = _run(*script, *flags)
            assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
            assert f"{shard}: the shard is cut short" in out.stdout + out.stderr


def test_a_compressed_shard_is_told_to_decompress(tmp_path):
    import gzip

    plain = tmp_path / "p.tar"
    _write_tar(plain, [("a.jpg", _jpeg()), ("a.txt", b"a"), ("b.jpg", _jpeg(4)), ("b.txt", b"b")])
    shard = tmp_path / "g.tar"
    shard.write_bytes(gzip.compress(plain.read_bytes()))
    with pytest.raises(DataError, match=r"g\.tar: a gzip-compressed file; .*decompress the shards first"):
        W.build_index(shard)


def test_a_caption_twice_in_one_shard_is_an_error_naming_shard_and_key(tmp_path):
    shard = tmp_path / "d.tar"
    _write_tar(shard, [("a.jpg", _jpeg()), ("a.txt", b"first"), ("b.jpg", _jpeg(4)), ("b.txt", b"b"),
                       ("a.txt", b"second")])
    with pytest.raises(DataError) as e:
        W.build_index(shard)
    assert str(e.value).startswith(f"{shard}: sample a has two captions (the member a.txt twice)")


def test_a_caption_rewritten_with_its_length_and_old_mtime_is_indexed_anew(shards):
    source = _train_source(shards)
    first = source.load_split("train")
    shard = Path(first.image_paths[0].shard)
    st = shard.stat()
    name, _, data, size = next(m for m in _members(shard) if m[0].endswith(".txt"))
    old = first.captions[[k.split(":", 1)[1] for k in first.keys].index(name[:-4])]
    new = "x" * size
    assert len(old) == size and new != old
    with open(shard, "r+b") as f:
        f.seek(data)
        f.write(new.encode())
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old modification time set back
    assert shard.stat().st_size == st.st_size and shard.stat().st_mtime_ns == st.st_mtime_ns
    _fresh()
    again = source.load_split("train")
    assert new in again.captions and old not in again.captions


# ----------------------------------------------------------------------------- the memory bank's images

def test_the_bank_is_rebuilt_when_karpathy_swaps_two_images(f30k, tmp_path):
    import get_memorybank
    from npc import memory_bank as mb
    from npc.cli import cli
    from npc.params import parse_args
    from npc.run_setup import bank_inputs

    root, json_path = f30k
    args = ["--dataset", "f30k", "--dataset_root", str(root), *TINY_MODEL, "--noise_ratio", "0",
            "--logs_dir", str(tmp_path / "logs"), "--no_progress", "--num_workers", "0"]
    assert cli(get_memorybank.main, args) in (0, None)
    info = root / "annotations" / "karpathy" / "memory_bank" / "0_mbank_info.json"
    built = json.loads(info.read_text())["images_sha256"]

    def reuse():
        inputs = bank_inputs(parse_args(args, "npc"))
        split, _ = source_for(inputs.data).load_train(log=lambda *_: None, check_images=False)
        return mb.reusable_bank(inputs, split, mb.bank_provenance(inputs, split))

    assert reuse() is not None  # the same images: reused

    def swap(images):
        a, b = [e for e in images if e["split"] == "train"][:2]
        a["filename"], b["filename"] = b["filename"], a["filename"]
    _edit_json(json_path, swap)
    assert reuse() is None  # its record names other images: rebuilt
    assert cli(get_memorybank.main, args) in (0, None)
    assert json.loads(info.read_text())["images_sha256"] != built
    assert reuse() is not None


def test_a_shards_images_replaced_change_the_banks_record(shards, tmp_path):
    from npc.fingerprints import images_fingerprint

    source = _train_source(shards)
    before = images_fingerprint(source.load_split("train"))
    shard = Path(source.load_split("train").image_paths[0].shard)
    with tarfile.open(shard) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf]
    _write_tar(shard, [(n, _jpeg(k, 16) if n.endswith(".jpg") else d) for k, (n, d) in enumerate(members)])
    _fresh()
    after = source.load_split("train")
    assert after.captions == source.load_split("train").captions
    assert images_fingerprint(after) != before


# ----------------------------------------------------------------------------- Karpathy's splits

def test_a_karpathy_train_image_also_in_test_is_an_error(f30k):
    root, json_path = f30k

    def share(images):
        train = next(e for e in images if e["split"] == "train")
        test = next(e for e in images if e["split"] == "test")
        test["filename"] = train["filename"]
    _edit_json(json_path, share)
    source = source_for(DataConfig(dataset="f30k", dataset_root=str(root)))
    with pytest.raises(DataError, match=r"of the test split is also a train image .*: the splits must not share"):
        source.load_split("test", check_images=False)
    out = _run("check_data.py", "--dataset", "f30k", "--dataset_root", str(root))
    assert out.returncode == 1 and "the splits must not share images" in out.stderr + out.stdout


def test_flickr30k_images_in_images_beside_an_empty_flickr30k_images(f30k):
    from npc.sources.karpathy import f30k_image_dir

    root, _ = f30k
    (root / "flickr30k-images").rename(root / "images")
    (root / "flickr30k-images").mkdir()
    assert f30k_image_dir(root) == root / "images"
    source = source_for(DataConfig(dataset="f30k", dataset_root=str(root)))
    assert source.load_split("test").num_images == F30K["test"]  # every image found, decoded
    shutil.rmtree(root / "images")
    (root / "images").mkdir()
    advice = source.missing_images_advice()
    assert f"read from {root / 'flickr30k-images'}/" in advice


# ----------------------------------------------------------------------------- the self-check, method options

def test_the_self_check_on_identical_captions_says_chance(tmp_path):
    import torch
    from PIL import Image

    from npc.model import create_model
    from npc.self_check import check_model

    rows = []
    for i in range(48):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png\ta photo of a thing\n")
    (tmp_path / "train.csv").write_text("filepath\ttitle\n" + "".join(rows))
    split = source_for(DataConfig(dataset="csv", train_data=str(tmp_path / "train.csv"))).load_split("train")
    torch.manual_seed(0)
    model, preprocess, tokenizer = create_model("npc-micro", "none")
    check = check_model(model, split, preprocess, tokenizer, device=torch.device("cpu"), batch_size=16)
    assert check["captions"] == 48 and check["own_caption_auc"] == pytest.approx(0.5, abs=1e-9)
    assert not check["can_see"]


def test_a_negative_grad_scale_is_refused(capsys):
    import main_NPC
    from npc.cli import cli
    from npc.estimators import ESTIMATORS

    with pytest.raises(ConfigError, match=r"grad_scale=-4: must be >= 0"):
        next(o for o in ESTIMATORS.get("siamese").options if o.name == "grad_scale").parse("-4")
    assert cli(main_NPC.main, ["--dataset", "demo", "--method_opt", "grad_scale=-4", *TINY_MODEL]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--method_opt grad_scale=-4: must be >= 0" in err


# ----------------------------------------------------------------------------- one CSV file in UTF-16

def test_only_dev_in_utf16_reads_every_file_right(tmp_path):
    files = make_images_and_csvs(tmp_path)
    text = files["dev"].read_text(encoding="utf-8")
    files["dev"].write_bytes(text.encode("utf-16"))  # with its byte-order mark, as Excel and Notepad save it
    data = DataConfig(dataset="csv", train_data=str(files["train"]), dev_data=str(files["dev"]),
                      test_data=str(files["test"]))
    source = source_for(data)
    dev, test = source.load_split("dev"), source.load_split("test")
    assert "a red square" in " ".join(dev.captions + test.captions)
    assert all(c.isascii() for c in dev.captions + test.captions)  # nothing misread
    files["dev"].write_bytes(text.encode("utf-16-le"))  # no byte-order mark: the remedy names this file
    _fresh()
    with pytest.raises(DataError) as e:
        source.load_split("dev")
    assert str(e.value).startswith(f"{files['dev']}, line 1: the file is UTF-16-LE text without a byte-order mark")
    assert "save this file as UTF-8" in str(e.value)
    # --csv_encoding utf-16 given for it: the UTF-8 test.csv is not misread, it is named
    source = source_for(dataclasses.replace(data, csv_encoding="utf-16"))
    with pytest.raises(DataError, match=r"test\.csv, line 1: --csv_encoding utf-16, but this file is not UTF-16"):
        source.load_split("test")
