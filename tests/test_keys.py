"""One pair key in every format (issue 40): every per-pair file joins to the user's own rows by ``key`` alone, and
an image PIL cannot open (a non-image file named .jpg) follows one policy in every format.

One small noisy dataset per format (module-scoped, shared by the tests): release layout, Karpathy's Flickr30K and
MSCOCO JSON (ordered val/test first, sentids from 10000, so that no sentid is a line of a derived file), CSV and
webdataset shards. Each test runs the noise report and one NPC epoch (npc-micro, --pretrained none) and joins
``pairs.csv``, ``pair_weights.csv`` and the bank's p(clean) CSV to the user's rows by ``key``.
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

import find_noisy_pairs
import main_NPC
from helpers import make_images_and_csvs
from npc.cli import cli
from npc.config import DataConfig
from npc.images import UNREADABLE_ADVICE
from npc.pair_weights import load_pair_weights
from npc.sources import source_for
from npc.synthetic.karpathy import write_karpathy_dataset, write_release_layout_from_karpathy
from npc.synthetic.shards import random_jpeg_samples

FORMATS = ("release", "f30k", "coco", "csv", "shards")
TINY = ["--vision_model", "npc-micro", "--pretrained", "none", "--num_workers", "0", "--no_progress"]
SIZES = {"coco": {"train": 8, "restval": 6, "val": 3, "test": 3}, "f30k": {"train": 14, "val": 3, "test": 3}}


def _reorder_karpathy(json_path: Path) -> None:
    """The JSON as real files are: val and test images first, sentids numbered from 10000 in file order."""
    data = json.loads(json_path.read_text())
    rank = {"val": 0, "test": 1, "train": 2, "restval": 3}
    data["images"].sort(key=lambda e: rank[e["split"]])
    sentid = 10000
    for imgid, e in enumerate(data["images"]):
        e["imgid"] = imgid
        for s in e["sentences"]:
            s["sentid"], s["imgid"] = sentid, imgid
            sentid += 1
        e["sentids"] = [s["sentid"] for s in e["sentences"]]
    json_path.write_text(json.dumps(data))


def _write_shards(folder: Path, samples, names) -> str:
    """Shards of (image bytes, caption) as webdataset writes them (``<key>.jpg``, ``<key>.txt``); the brace pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(samples) // len(names))
    for n, name in enumerate(names):
        with tarfile.open(folder / name, "w", format=tarfile.USTAR_FORMAT) as tf:
            for k, (image, caption) in enumerate(samples[n * per:(n + 1) * per]):
                for ext, data in (("jpg", image), ("txt", caption.encode("utf-8"))):
                    info = tarfile.TarInfo(f"{n:05d}{k:04d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return str(folder / ("{" + names[0][:-4] + ".." + names[-1][:-4] + "}.tar")) if len(names) > 1 else \
        str(folder / names[0])


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Per format: (data flags, the user's rows ``{key: (image, caption)}`` read from the user's own files)."""
    out = {}
    for ds in ("f30k", "coco"):
        root = tmp_path_factory.mktemp(f"keys_{ds}")
        json_path = write_karpathy_dataset(root, ds, SIZES[ds], seed=3)
        _reorder_karpathy(json_path)
        parts = {"train", "restval"}
        rows = {str(s["sentid"]): (e["filename"], s["raw"].strip()) for e in json.loads(json_path.read_text())["images"]
                if e["split"] in parts for s in e["sentences"][:5]}
        out[ds] = (["--dataset", ds, "--dataset_root", str(root), "--data_format", "karpathy"], rows)
        if ds == "f30k":
            rel = write_release_layout_from_karpathy(json_path, root, tmp_path_factory.mktemp("keys_release"))
            caps = (rel / "annotations" / "scan_split" / "train_caps.txt").read_text().splitlines()
            out["release"] = (["--dataset", "f30k", "--dataset_root", str(rel), "--data_format", "release"],
                              {str(n): (None, c) for n, c in enumerate(caps, 1)})
    folder = tmp_path_factory.mktemp("keys_csv")
    files = make_images_and_csvs(folder, n_train=16, n_dev=4, n_test=4)
    lines = files["train"].read_text(encoding="utf-8").splitlines()
    out["csv"] = (["--dataset", "csv", *(a for s in ("train", "dev", "test") for a in (f"--{s}_data", str(files[s])))],
                  {str(n): tuple(line.split("\t")) for n, line in enumerate(lines, 1) if n > 1})
    folder = tmp_path_factory.mktemp("keys_shards")
    samples = [(img, cap) for img, _, cap in random_jpeg_samples(40, seed=4, size=32)]
    specs = {"train": _write_shards(folder / "train", samples[:32], ["00000.tar", "00001.tar"]),
             "dev": _write_shards(folder / "dev", samples[32:36], ["00000.tar"]),
             "test": _write_shards(folder / "test", samples[36:], ["00000.tar"])}
    rows = {f"0000{n}.tar:{n:05d}{k:04d}": (f"0000{n}.tar:{n:05d}{k:04d}", cap)
            for n in range(2) for k, (_, cap) in enumerate(samples[n * 16:(n + 1) * 16])}
    out["shards"] = (["--dataset", "webdataset", *(a for s, v in specs.items() for a in (f"--{s}_data", v))], rows)
    return out


def _data_folder(flags) -> Path:
    """The folder that holds a format's files (shards: the folder of the train/, dev/ and test/ shard folders)."""
    if "--dataset_root" in flags:
        return Path(flags[flags.index("--dataset_root") + 1])
    train = Path(flags[flags.index("--train_data") + 1])
    return train.parent.parent if train.name.endswith(".tar") else train.parent


def _read(path) -> list:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _data_config(flags) -> DataConfig:
    from npc.params import parse_args

    return parse_args([*flags, "--noise_ratio", "0.4", *TINY], "npc").data


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_per_pair_file_joins_to_the_users_rows_by_key_alone(datasets, fmt, tmp_path):
    flags, user = datasets[fmt]
    noisy = [*flags, "--noise_ratio", "0.4", *TINY]
    out, logs = tmp_path / "report", tmp_path / "logs"
    find_noisy_pairs.main([*noisy, "--out", str(out), "--top", "5", "--candidates", "3", "--batch_size", "8"])
    main_NPC.main([*noisy, "--logs_dir", str(logs), "--experiments", "k", "--epochs", "1", "--batch_size", "8",
                   "--eval_batch_size", "32"])
    verdict = json.loads((logs / "k" / "results.json").read_text())["self_check"]  # the self-check's verdict
    assert isinstance(verdict["can_see"], bool) and verdict["message"] and "memory bank" in verdict["of"]
    split, mask = source_for(_data_config(flags)).load_train(log=lambda *_: None)
    assert len(set(split.keys)) == len(split) == len(user)
    pair_of = {k: j for j, k in enumerate(split.keys)}  # what the arrays' order is: checked against, not joined by
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["key"]["name"] == {"f30k": "sentid", "coco": "sentid", "shards": "sample"}.get(fmt, "line")
    pairs = _read(out / "pairs.csv")
    weights = _read(logs / "k" / "pair_weights.csv")
    [bank_csv] = _data_folder(flags).rglob("0.4_mbank_pclean.csv")
    bank = _read(bank_csv)
    p_clean = np.load(bank_csv.with_suffix(".npy"))
    pw = load_pair_weights(logs / "k")
    for name, rows in (("pairs.csv", pairs), ("pair_weights.csv", weights), ("bank", bank)):
        assert sorted(r["key"] for r in rows) == sorted(user), name  # every user row once, by its key
        for r in rows:
            image, caption = user[r["key"]]
            j = pair_of[r["key"]]
            if image is not None:  # the image as the user names it (Karpathy: its filename beside the sentid)
                assert r["image"].replace("\\", "/").endswith(image), (name, r)
            if not mask[j]:
                assert r["caption"] == caption, (name, r)  # a clean pair: the user's own caption
            else:
                assert r["caption"] == split.captions[j]  # a noisy one: the caption the noise gave it
            if name == "pairs.csv":
                assert int(r["pair"]) == j and r["noisy"] == str(int(mask[j]))
            elif name == "bank":
                assert float(r["p_clean"]) == pytest.approx(p_clean[j], rel=1e-5, abs=1e-12)
            else:
                w = pw.weights[0, j]
                assert (r["weight_epoch1"] == "") if np.isnan(w) else float(r["weight_epoch1"]) == \
                    pytest.approx(float(w), rel=1e-5)
    assert mask.any() and not mask.all()
    # report.json and the page: the same keys; candidates by key, never a line of a derived file
    assert all(row["key"] == split.keys[row["pair"]] for row in report["shown"]["rows"])
    assert all(c[2] == split.keys[c[0]] for cands in report["shown"]["candidates"] for c in cands)
    page = (out / "index.html").read_text(encoding="utf-8")
    first = report["shown"]["rows"][0]
    assert f"{report['dataset']['key']['name']} {first['key']}" in page
    if fmt in ("f30k", "coco"):  # the JSON ordered val/test first: a sentid is no line of the derived captions file
        assert all(int(k) >= 10000 + 6 * 5 for k in split.keys)  # after the 6 val/test images' sentences


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_non_image_jpg_is_skipped_with_the_flag_and_stops_with_the_advice_without(datasets, fmt, tmp_path,
                                                                                   capsys):
    import shutil

    flags, _ = datasets[fmt]
    data = _data_config(flags)
    split = source_for(data).read_split("train")
    # a copy of the data with its last training image replaced by a file that is no image, still named .jpg
    src, dst = _data_folder(flags), tmp_path / "copy"
    assert src.name.startswith("keys_") and not dst.is_relative_to(src)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*memory_bank*", "*.npcidx.json"))
    flags = [a.replace(str(src), str(dst)) for a in flags]
    ref = split.image_paths[-1]
    if fmt == "shards":
        shard = dst / Path(ref.shard).relative_to(src)
        raw = bytearray(shard.read_bytes())
        raw[ref.offset:ref.offset + ref.size] = b"<html>" + b"x" * (ref.size - 6)  # same size: the tar stays valid
        shard.write_bytes(bytes(raw))
        named = f"{shard}:{ref.name}"
    else:
        named = dst / Path(ref).relative_to(src)
        named = named.with_suffix(".jpg") if fmt == "csv" else named
        if fmt == "csv":  # the CSV names it .jpg
            train = Path(flags[flags.index("--train_data") + 1])
            train.write_text(train.read_text().replace(str(Path(ref).relative_to(src)),
                                                       str(named.relative_to(dst))))
        named.write_bytes(b"<html>not an image</html>")
    logs = tmp_path / "logs"
    argv = [*flags, "--noise_ratio", "0.4", *TINY, "--logs_dir", str(logs), "--epochs", "1", "--batch_size", "8",
            "--eval_batch_size", "32"]
    assert cli(main_NPC.main, [*argv, "--experiments", "a"]) == 1
    err = capsys.readouterr().err
    assert f"cannot read image {named}" in err and UNREADABLE_ADVICE in err and "BytesIO" not in err, err
    assert err.count("\n") == 1, err
    res = main_NPC.main([*argv, "--skip_unreadable_images", "--experiments", "b"])
    assert res["results"]
    log = (logs / "b" / "log.txt").read_text()
    assert "unreadable training image" in log and str(named) in log


def test_two_karpathy_images_with_the_same_sentids_are_an_error_naming_both(tmp_path):
    from npc.errors import DataError
    from npc.sources.base import forget_parsed

    root = tmp_path / "f30k"
    json_path = write_karpathy_dataset(root, "f30k", {"train": 4, "val": 2, "test": 2}, seed=1)
    data = json.loads(json_path.read_text())
    a, b = [e for e in data["images"] if e["split"] == "train"][:2]
    for s, t in zip(a["sentences"], b["sentences"]):
        t["sentid"] = s["sentid"]
    json_path.write_text(json.dumps(data))
    forget_parsed()
    with pytest.raises(DataError) as e:
        source_for(DataConfig(dataset="f30k", dataset_root=str(root))).read_split("train")
    msg = str(e.value)
    assert f"sentid {a['sentences'][0]['sentid']} twice" in msg and a["filename"] in msg and b["filename"] in msg


def test_eval_writes_beside_the_evaluated_run_not_under_the_working_folder(datasets, tmp_path, monkeypatch):
    import main_CLIP

    flags, _ = datasets["csv"]
    logs = tmp_path / "mylogs"
    main_CLIP.main([*flags, *TINY, "--logs_dir", str(logs), "--experiments", "t", "--epochs", "1", "--batch_size", "8",
                    "--method", "clip", "--noise_ratio", "0"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = main_CLIP.main(["--eval", "--resume", str(logs / "t" / "checkpoints" / "best.pt"), "--num_workers", "0",
                          "--no_progress"])
    assert res["results"]
    [evaluation] = [p.name for p in logs.iterdir() if (p / "eval_results.json").is_file()]  # under the run's logs
    assert evaluation.startswith("eval_csv")
    assert not (tmp_path / "elsewhere" / "logs").exists()


@pytest.mark.parametrize("at, below", [(0.9, True), (0.75, True), (0.1, False)])
def test_the_pclean_line_label_does_not_overlap_the_legend(at, below):
    """The loss histogram's "p(clean) > 0.9 left of here" label: under the legend where they would share pixels."""
    import re

    from npc.report_figures import CHAR_PX, svg_histogram

    rng = np.random.default_rng(0)
    x = rng.random(200)
    grid = np.linspace(0, 1, 50)
    svg = svg_histogram("t", [("clean (truth)", x[:150], "#111"), ("noisy (truth)", x[150:], "#222")], bins=20,
                        value_range=(0.0, 1.0), vline=(at, "p(clean) > 0.9 left of here"),
                        curves=[("clean component", grid, grid, "#333"), ("noisy component", grid, grid, "#444")])
    legend_y = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" class="s">(?:clean|noisy) ', svg)]
    label = re.search(r'<text x="([\d.]+)"( text-anchor="end")? y="([\d.]+)" class="s vl">', svg)
    lx = [float(v) for v in re.findall(r'<text x="([\d.]+)" y="[\d.]+" class="s">(?:clean|noisy) ', svg)]
    assert len(legend_y) == 4 and label
    x_end, y = float(label.group(1)), float(label.group(3))
    span = (x_end - CHAR_PX * 27, x_end) if label.group(2) else (x_end, x_end + CHAR_PX * 27)
    shares_columns = span[0] < min(lx) + CHAR_PX * 16 and min(lx) - 14 < span[1]
    assert shares_columns == below
    assert (y > max(legend_y)) if below else y < min(legend_y) + 13  # below the legend, or at the top beside it


def test_an_unquoted_brace_pattern_expanded_by_the_shell_is_explained(tmp_path, capsys):
    from check_data import main as check_main

    shards = [str(tmp_path / f"0000{k}.tar") for k in range(3)]  # what bash makes of DIR/{00000..00002}.tar
    with pytest.raises(SystemExit) as e:
        check_main(["--dataset", "webdataset", "--train_data", *shards])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"unrecognized arguments: {shards[1]} {shards[2]}" in err
    assert "the shell expanded an unquoted pattern" in err and "quote it" in err
    with pytest.raises(SystemExit):
        check_main(["--dataset", "webdataset", "--no_such_flag"])
    assert "shell expanded" not in capsys.readouterr().err  # a mistyped flag: argparse's own message only
