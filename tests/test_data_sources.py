"""The data sources as one home per format: each split parsed once per run, construct_noise.py on every format,
the datasets' own properties, and a new format (JSON lines, defined here) working with every script unchanged."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import check_data
import construct_noise
import main_NPC
from helpers import MODEL, csv_flags, make_images_and_csvs
from npc import sources
from npc.config import DataConfig
from npc.data import Split
from npc.errors import DataError
from npc.sources import dataset_definition, register, source_for
from npc.sources.base import Dataset, SplitFiles, forget_parsed, group_pairs
from npc.synthetic.karpathy import write_karpathy_dataset
from npc.synthetic.shards import demo_as_shards


def quiet(*_):
    pass


# ----------------------------------------------------------------------------- one parse per split per run

def test_every_split_is_parsed_once_in_a_run(tmp_path, monkeypatch):
    """An NPC run (preflight, data checks, training, its memory bank, dev, test) parses each split once."""
    from npc.sources.csv_files import CsvFiles

    files = make_images_and_csvs(tmp_path / "d", n_train=12, n_dev=4, n_test=4)
    parsed = Counter()
    real = CsvFiles.parse_split

    def spy(self, split):
        parsed[split] += 1
        return real(self, split)

    monkeypatch.setattr(CsvFiles, "parse_split", spy)
    forget_parsed()
    res = main_NPC.main(csv_flags(files, tmp_path / "logs", "--experiments", "r", "--noise_ratio", "0.4"))
    assert set(res["results"]) and (tmp_path / "d" / "train.memory_bank").is_dir()  # the bank read the train split
    assert parsed == {"train": 1, "dev": 1, "test": 1}
    # a file that changes is parsed again (its size and modification time are the split's stamp)
    source = source_for(DataConfig(dataset="csv", train_data=str(files["dev"])))
    n = len(source.read_split("train"))
    assert len(source.read_split("train")) == n and parsed["train"] == 2
    with open(files["dev"], "a", encoding="utf-8") as f:
        f.write("images/dev_0.jpg\ta caption added later\n")
    assert len(source.read_split("train")) == n + 1 and parsed["train"] == 3

def test_a_kept_split_is_a_copy_the_caller_may_change(tmp_path):
    files = make_images_and_csvs(tmp_path / "d", n_train=6, n_dev=2, n_test=2)
    source = source_for(DataConfig(dataset="csv", train_data=str(files["train"]), noise_ratio=0.5))
    clean = source.read_split("train").captions
    noisy, mask = source.noisy_train(quiet, check_images=False)
    assert mask.sum() > 0 and noisy.captions != clean
    assert source.read_split("train").captions == clean  # the noisy captions did not replace the kept ones


# ----------------------------------------------------------------------------- construct_noise.py on every format

def _same_as_training(data, path, capsys):
    out = capsys.readouterr().out
    assert f"noisy captions: {path}" in out
    split, mask = source_for(data).load_train(log=quiet, check_images=False)
    assert Path(split.caps_file) == Path(path) and 0 < mask.sum() < len(mask)
    assert np.array_equal(mask, np.load(str(path)[:-4] + "_mask.npy"))
    return split


def test_construct_noise_on_the_release_layout(fresh_root, capsys):
    assert construct_noise.main(["--dataset_root", str(fresh_root), "--noise_ratio", "0.3"]) == 0
    path = fresh_root / "annotations" / "scan_split" / "0.3_noise_train_caps.txt"
    _same_as_training(DataConfig(dataset="demo", dataset_root=str(fresh_root), noise_ratio=0.3), path, capsys)


@pytest.mark.parametrize("ds", ["coco", "f30k"])
def test_construct_noise_on_a_karpathy_folder(ds, tmp_path, capsys):
    root = tmp_path / ds
    sizes = {"coco": {"train": 6, "restval": 4, "val": 3, "test": 3}, "f30k": {"train": 8, "val": 3, "test": 3}}[ds]
    write_karpathy_dataset(root, ds, sizes, seed=1)
    # no --dataset: the split file found there names it
    assert construct_noise.main(["--dataset_root", str(root), "--noise_ratio", "0.4", "--seed", "5"]) == 0
    path = root / "annotations" / "karpathy" / "0.4_noise_train_caps.txt"
    _same_as_training(DataConfig(dataset=ds, dataset_root=str(root), noise_ratio=0.4, noise_seed=5), path, capsys)
    # another seed without --force is refused naming the remedy; with it, rebuilt
    assert construct_noise.main(["--dataset_root", str(root), "--noise_ratio", "0.4"]) == 1
    assert "--force" in capsys.readouterr().err
    assert construct_noise.main(["--dataset", ds, "--dataset_root", str(root), "--noise_ratio", "0.4", "--force"]) == 0
    _same_as_training(DataConfig(dataset=ds, dataset_root=str(root), noise_ratio=0.4), path, capsys)


def test_construct_noise_on_csv_files(tmp_path, capsys):
    files = make_images_and_csvs(tmp_path / "d")
    assert construct_noise.main(["--train_data", str(files["train"]), "--noise_ratio", "0.5"]) == 0
    _same_as_training(DataConfig(dataset="csv", train_data=str(files["train"]), noise_ratio=0.5),
                      tmp_path / "d" / "train.0.5_noise_train_caps.txt", capsys)


def test_construct_noise_on_shards(demo_root, tmp_path, capsys):
    specs = demo_as_shards(demo_root, tmp_path / "s", train_shards=2, csv=False)
    assert construct_noise.main(["--train_data", specs["train"], "--noise_ratio", "0.4"]) == 0  # found: shards
    _same_as_training(DataConfig(dataset="webdataset", train_data=specs["train"], noise_ratio=0.4),
                      tmp_path / "s" / "00000..00001.0.4_noise_train_caps.txt", capsys)


# ----------------------------------------------------------------------------- the datasets' own properties

def test_a_datasets_properties_are_its_definitions():
    demo, coco, cc, csv = (dataset_definition(n) for n in ("demo", "coco", "cc", "csv"))
    assert demo.generated and demo.ships_base and demo.cuda_precision == "amp_bf16" and demo.default_flags == "demo"
    assert not coco.generated and coco.folds_1k and coco.cuda_precision == "fp16" and coco.default_root
    assert cc.num_anns == 1 and csv.num_anns == 0 and not csv.default_root
    # one definition per dataset, shared by the formats that hold it
    classes = sources.source_classes()
    assert classes["karpathy"].definitions[0] is classes["release"].definitions[1] is coco
    with pytest.raises(DataError, match="unknown dataset 'x'"):
        dataset_definition("x")


# ----------------------------------------------------------------------------- a new format, nothing else changed

class JsonLines(SplitFiles):
    """One JSON object a line: {"image": path relative to the file, "text": caption}."""

    format = "jsonl"
    definitions = (Dataset("jsonl", "pairs in JSON-lines files (a test's format)", num_anns=0),)
    label = "JSON-lines files"
    file_hint = "FILE.jsonl"

    def parse_split(self, split: str) -> Split:
        path = Path(self.split_spec(split))
        pairs = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                image = path.parent / row["image"]
                pairs.append((str(image), row["image"], image, row["text"], n))
        return group_pairs(split, pairs, caps_file=path, source_file=path, lines=True)


@pytest.fixture
def jsonl_format():
    register(JsonLines)
    yield
    sources._SOURCES.unregister("jsonl")  # the registry as this test found it


def _as_jsonl(files):
    out = {}
    for split, csv_path in files.items():
        rows = [line.split("\t") for line in csv_path.read_text(encoding="utf-8").splitlines()[1:]]
        out[split] = csv_path.with_suffix(".jsonl")
        out[split].write_text("".join(json.dumps({"image": a, "text": b}) + "\n" for a, b in rows), encoding="utf-8")
    return out


def test_a_new_format_works_with_every_script(jsonl_format, tmp_path, capsys):
    import find_noisy_pairs

    files = _as_jsonl(make_images_and_csvs(tmp_path / "d", n_train=16, n_dev=4, n_test=4))
    data = ["--dataset", "jsonl", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
            "--test_data", str(files["test"])]
    assert construct_noise.main([*data[:4], "--noise_ratio", "0.4"]) == 0
    assert (tmp_path / "d" / "train.0.4_noise_train_caps.txt").is_file()
    assert check_data.main(data) == 0
    assert "JSON-lines files (--train_data" in capsys.readouterr().out
    flags = csv_flags(files, tmp_path / "logs", "--experiments", "r", "--noise_ratio", "0.4")
    flags[1] = "jsonl"
    res = main_NPC.main(flags)
    best = tmp_path / "logs" / "r" / "checkpoints" / "best.pt"
    assert best.is_file() and set(res["results"])
    ev = main_NPC.main(["--eval", "--resume", str(best), "--logs_dir", str(tmp_path / "logs"), "--num_workers", "0",
                        "--no_progress"])
    assert ev["dataset"] == "jsonl" and ev["results"] == res["results"]
    out = tmp_path / "report"
    find_noisy_pairs.main([*data, "--vision_model", MODEL, "--pretrained", "none", "--noise_ratio", "0.4",
                           "--resume", str(best), "--eval_batch_size", "64", "--num_workers", "0", "--no_progress",
                           "--out", str(out), "--top", "3"])
    assert (out / "index.html").is_file() and (out / "pairs.csv").read_text().count("\n") > 16
