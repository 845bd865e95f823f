"""--dataset webdataset: pairs in tar shards as img2dataset writes them (docs/shards.md): training, evaluation,
the noise report and the data check on shards; the same pairs as a CSV set give the same bank and losses; two
processes build the bank one process builds; bad shards are one line naming the shard and the key."""
import csv
import json
import tarfile

import numpy as np
import pytest

import main_CLIP
import main_NPC
from helpers import MODEL, _records
from npc.errors import DataError
from npc.synthetic.shards import demo_as_shards

MODEL_FLAGS = ("--vision_model", MODEL, "--pretrained", "demo-base", "--eval_batch_size", "64", "--num_workers", "0",
               "--no_progress")


def data_flags(specs):
    return ["--dataset", "webdataset", "--train_data", specs["train"], "--dev_data", specs["dev"],
            "--test_data", specs["test"]]


def run_flags(specs, base_dir, logs, *extra):
    """tests/helpers.py's run_args with the shards instead of the demo's folder."""
    return [*data_flags(specs), "--pretrained_dir", str(base_dir), *MODEL_FLAGS, "--logs_dir", str(logs),
            "--batch_size", "16", "--warmup", "2", *extra]


@pytest.fixture
def shards(demo_root, tmp_path):
    """The tiny demo's pairs as shards (3 train shards, dev.tar, test.tar) and as a CSV set, in a private folder."""
    return demo_as_shards(demo_root, tmp_path / "shards", train_shards=3)


def read_pairs_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- reading shards

def test_shards_read_as_a_split_with_each_pairs_shard_and_key(shards):
    from npc.config import DataConfig
    from npc.images import TarMember, open_rgb
    from npc.sources import source_for

    source = source_for(DataConfig(dataset="webdataset", train_data=shards["train"], noise_ratio=0))
    from npc.sources import webdataset_shards as W

    split = source.load_split("train")
    W._INDEXES.clear()  # what this process read: the second read is from the indexes beside the shards
    clean = source.load_split("train")
    csv_split = source_for(DataConfig(dataset="csv", train_data=str(shards["csv"]["train"]))).load_split("train")
    assert len(split) == split.num_images == 80 and split.captions == clean.captions == csv_split.captions
    assert [k.split(":")[0] for k in split.keys] == ["00000.tar"] * 27 + ["00001.tar"] * 26 + ["00002.tar"] * 27
    assert split.keys[27] == "00001.tar:000010000" and split.image_ids == split.keys
    ref = split.image_paths[30]
    assert isinstance(ref, TarMember) and ref.name == "000010003.jpg"
    assert np.array_equal(np.asarray(open_rgb(ref)), np.asarray(open_rgb(csv_split.image_paths[30])))
    assert source.listed_at(split, 30) == f"{ref.shard}, sample 000010003" and ref.shard.endswith("/00001.tar")
    folder = shards["csv"]["train"].parent.parent
    assert sorted(p.name for p in folder.glob("*.npcidx.json")) == ["00000.tar.npcidx.json", "00001.tar.npcidx.json",
                                                                   "00002.tar.npcidx.json"]
    # a list of shards (relative to the list's folder) and a single .tar read the same pairs
    (folder / "train_shards.txt").write_text("00000.tar\n# a comment\n00001.tar\n\n00002.tar\n")
    listed = source_for(DataConfig(dataset="webdataset", train_data=str(folder / "train_shards.txt"))).load_split("train")
    assert listed.keys == split.keys and listed.captions == split.captions
    one = source_for(DataConfig(dataset="webdataset", train_data=str(folder / "00001.tar"))).load_split("train")
    assert one.keys == split.keys[27:53]


def test_an_index_is_rebuilt_when_its_shard_changes(shards, tmp_path):
    from npc.sources import webdataset_shards as W

    shard = shards["csv"]["train"].parent.parent / "00000.tar"
    index = W.index_path(shard)
    first = W.shard_index(shard)
    saved = json.loads(index.read_text())
    assert saved["size"] == shard.stat().st_size and len(saved["samples"]) == 27
    _rewrite_caption(shard, "000000004", "a caption changed by hand")
    W._INDEXES.clear()
    again = W.shard_index(shard)
    assert again[4][4] == "a caption changed by hand" and first[4][4] != again[4][4]
    assert json.loads(index.read_text())["mtime_ns"] == shard.stat().st_mtime_ns
    index.write_text(index.read_text().replace("a caption changed by hand", "stale"))  # same size and time
    W._INDEXES.clear()
    assert W.shard_index(shard)[4][4] == "stale"  # trusted: it names the shard's size and time


def _rewrite_caption(shard, key, caption):
    """The shard rewritten with sample ``key``'s caption replaced (its other members' bytes unchanged)."""
    members = []
    with tarfile.open(shard) as tf:
        for m in tf:
            data = tf.extractfile(m).read()
            if m.name == f"{key}.txt":
                data = caption.encode("utf-8")
                m.size = len(data)
            members.append((m, data))
    import io

    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tf:
        for m, data in members:
            tf.addfile(m, io.BytesIO(data))


# ----------------------------------------------------------------------------- every run on shards

@pytest.mark.parametrize("script, method", [(main_CLIP, "clip"), (main_CLIP, "pclean_weight"), (main_NPC, "npc_paper")])
def test_training_evaluation_and_report_on_shards(shards, base_dir, tmp_path, script, method):
    import find_noisy_pairs

    logs = tmp_path / "logs"
    res = script.main(run_flags(shards, base_dir, logs, "--method", method, "--noise_ratio", "0.4", "--epochs", "1",
                                "--experiments", "r"))
    run = logs / "r"
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "results.json").is_file()
    assert set(res["results"]) and _records(run)[0]["epoch"] == 1
    folder = shards["csv"]["train"].parent.parent
    derived = {p.name for p in folder.iterdir()}
    assert {"00000..00002.train_caps.txt", "00000..00002.0.4_noise_train_caps.txt"} <= derived
    if method != "clip":
        [bank] = (folder / "00000..00002.memory_bank").iterdir()
        assert (bank / "0.4_mbank_img_idx.npy").is_file() and bank.name.startswith("npc-micro_demo-base_")
    if method != "npc_paper":
        return
    out = tmp_path / "report"
    find_noisy_pairs.main([*data_flags(shards), "--pretrained_dir", str(base_dir), *MODEL_FLAGS, "--noise_ratio", "0.4",
                           "--resume", str(run / "checkpoints" / "best.pt"), "--out", str(out), "--top", "5"])
    rows = read_pairs_csv(out / "pairs.csv")
    assert len(rows) == 80
    assert (out / "index.html").read_text().count("data:image/jpeg;base64,") >= 5  # the members' thumbnails
    keys = {r["key"] for r in rows}  # a shard's pair is keyed file:key, its image named so too
    assert all(r["key"] == r["image"] for r in rows)
    assert len(keys) == 80 and "00002.tar:000020026" in keys and all(k.startswith("0000") for k in keys)
    caps = (folder / "00000..00002.0.4_noise_train_caps.txt").read_text().splitlines()
    r = rows[0]
    assert r["caption"] == caps[int(r["pair"])] and r["noisy"] in ("0", "1")


def test_resume_after_a_shard_was_rewritten_is_refused_naming_train_data(shards, base_dir, tmp_path, capsys):
    from npc.cli import cli

    flags = run_flags(shards, base_dir, tmp_path / "logs", "--experiments", "r", "--noise_ratio", "0.4", "--epochs", "2")
    main_CLIP.main(flags + ["--stop_after", "1"])
    latest = tmp_path / "logs" / "r" / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    _rewrite_caption(shards["csv"]["train"].parent.parent / "00001.tar", "000010002", "one caption changed")
    assert cli(main_CLIP.main, flags + ["--resume", "latest"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "(--train_data) changed" in err[0] and "other content" in err[0]
    assert latest.read_bytes() == before


def test_check_data_on_shards(shards, capsys):
    import check_data

    assert check_data.main([*data_flags(shards), "--decode"]) == 0
    out = capsys.readouterr().out
    assert "webdataset shards (--train_data" in out and "ok: every split reads and every image decodes" in out
    test_shard = shards["test"]
    with open(test_shard, "r+b") as f:  # the last image's bytes overwritten: its member does not decode
        from npc.sources.webdataset_shards import shard_index

        key, ext, offset, size, _ = shard_index(__import__("pathlib").Path(test_shard))[-1]
        f.seek(offset)
        f.write(b"\0" * size)
    assert check_data.main([*data_flags(shards), "--decode"]) == 1
    out = capsys.readouterr().out
    assert f"unreadable: {test_shard}:{key}.{ext}" in out and f"listed at {test_shard}, sample {key}" in out


# ----------------------------------------------------------------------------- the same pairs as a CSV set

def test_csv_set_and_shards_of_the_same_pairs_give_the_same_bank_and_losses(shards, base_dir, tmp_path):
    csvs = shards["csv"]
    as_csv = {"train": str(csvs["train"]), "dev": str(csvs["dev"]), "test": str(csvs["test"])}
    banks, records = {}, {}
    for name, specs in (("shards", shards), ("csv", as_csv)):
        flags = run_flags(specs, base_dir, tmp_path / "logs", "--noise_ratio", "0.4", "--epochs", "1", "--experiments", name)
        if name == "csv":
            flags[1] = "csv"
        main_NPC.main(flags)
        folder = csvs["train"].parent if name == "csv" else csvs["train"].parent.parent
        stem = "train" if name == "csv" else "00000..00002"
        [bank] = (folder / f"{stem}.memory_bank").iterdir()
        banks[name] = {p.name: p.read_bytes() for p in sorted(bank.glob("0.4_mbank_*.npy"))}
        records[name] = _records(tmp_path / "logs" / name)
    assert sorted(banks["shards"]) == ["0.4_mbank_img_idx.npy", "0.4_mbank_pclean.npy", "0.4_mbank_txt_idx.npy"]
    assert banks["shards"] == banks["csv"]
    assert records["shards"][0]["train_loss"] == records["csv"][0]["train_loss"]
    assert records["shards"] == records["csv"]


# ----------------------------------------------------------------------------- two processes

def test_torchrun_npc_run_on_shards_builds_the_bank_one_process_builds(demo_root, base_dir, tmp_path):
    """As tests/test_distributed.py's test of the demo's folder: main_NPC under torchrun encodes the bank on
    both ranks; get_memorybank.py in one process writes the same bytes."""
    from helpers import npc_bank_by_torchrun_and_by_one_process

    specs = [demo_as_shards(demo_root, tmp_path / w / "shards", csv=False) for w in ("one", "two")]
    flags = ("--noise_ratio", "0.6", "--batch_size", "32")
    npc_bank_by_torchrun_and_by_one_process(tmp_path, run_flags(specs[1], base_dir, tmp_path / "logs", *flags),
                                            run_flags(specs[0], base_dir, tmp_path / "logs", *flags))
    files = []
    for w in ("one", "two"):
        [bank] = (tmp_path / w / "shards" / "00000..00002.memory_bank").iterdir()
        files.append({p.name: p.read_bytes() for p in sorted(bank.glob("0.6_mbank_*.npy"))})
    assert len(files[0]) == 3 and files[0] == files[1]


# ----------------------------------------------------------------------------- bad input

def test_a_brace_pattern_matching_no_file_is_one_line_naming_the_flag(shards):
    from npc.config import DataConfig
    from npc.sources import source_for

    folder = shards["csv"]["train"].parent.parent
    spec = str(folder / "{00000..00004}.tar")
    with pytest.raises(DataError, match=r"^--train_data .*\{00000\.\.00004\}\.tar: .*not found.*00003\.tar$"):
        source_for(DataConfig(dataset="webdataset", train_data=spec)).load_split("train")
    with pytest.raises(DataError, match=r"^--dev_data .*nothing_\{0\.\.1\}\.tar: 2 of 2 shard\(s\) not found"):
        source_for(DataConfig(dataset="webdataset", dev_data=str(folder / "nothing_{0..1}.tar"))).load_split("dev")


def test_a_sample_with_an_image_but_no_caption_is_one_line_naming_shard_and_key(shards, tmp_path):
    import io

    from npc.config import DataConfig
    from npc.sources import source_for

    bad = tmp_path / "bad.tar"
    with tarfile.open(shards["dev"]) as src, tarfile.open(bad, "w") as dst:
        for m in src:
            if m.name != "000000005.txt":
                dst.addfile(m, io.BytesIO(src.extractfile(m).read()))
    with pytest.raises(DataError) as e:
        source_for(DataConfig(dataset="webdataset", test_data=str(bad))).load_split("test")
    assert str(e.value) == f"{bad}: sample 000000005 has an image (000000005.jpg) but no caption (000000005.txt)"


@pytest.mark.parametrize("pattern, expected", [
    ("a/{000..002}.tar", ["a/000.tar", "a/001.tar", "a/002.tar"]),
    ("{8..11}-{x,y}.tar", ["8-x.tar", "8-y.tar", "9-x.tar", "9-y.tar", "10-x.tar", "10-y.tar", "11-x.tar", "11-y.tar"]),
    ("plain.tar", ["plain.tar"]),
    ("{single}.tar", ["{single}.tar"]),
])
def test_brace_notation(pattern, expected):
    from npc.sources.webdataset_shards import expand_braces

    assert expand_braces(pattern) == expected
