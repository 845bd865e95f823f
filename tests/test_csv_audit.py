"""Own data without silent wrongs: what a new user's folder of images and CSV files meets, case by case.

Every case ends in a one-line error naming the file, line or flag, a one-line warning with a count, or
the right result. The data sets are generated here: unique images (PNG and JPEG, grayscale, RGBA and RGB),
names with spaces and non-ASCII characters, 1 to 3 captions per image.
"""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import construct_noise
import main_CLIP
import main_NPC
from npc import data
from npc.cli import cli
from npc.params import ConfigError, parse_args
from npc.resume_rules import eval_changes
from npc.run_setup import data_checks
from npc.sources import source_for

MODES = ("L", "RGBA", "RGB")


def make_set(folder, n=(16, 6, 6), sep="\t"):
    """folder/images and train/dev/test CSVs; every image has its own bytes. Returns the CSV paths."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}
    for split, count in zip(("train", "dev", "test"), n):
        rows = []
        for i in range(count):
            mode = MODES[i % 3]
            name = f"images/bild {split} {i} é.{'jpg' if mode == 'RGB' else 'png'}"
            pixels = rng.integers(0, 256, size=(24, 24, {"L": 1, "RGBA": 4, "RGB": 3}[mode]), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(folder / name)
            rows += [(name, f"picture {i} of the {split} split caption {j}") for j in range(1 + i % 3)]
        files[split] = folder / f"{split}.csv"
        files[split].write_text(f"filepath{sep}title\n" + "".join(f"{a}{sep}{b}\n" for a, b in rows), encoding="utf-8")
    return files


def flags(files, logs, *extra, epochs="1"):
    return ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
            "--test_data", str(files["test"]), "--vision_model", "npc-micro", "--pretrained", "none",
            "--logs_dir", str(logs), "--batch_size", "8", "--eval_batch_size", "64", "--lr", "1e-4",
            "--warmup", "2", "--num_workers", "0", "--no_progress", "--epochs", epochs, *extra]


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def write_csv(tmp_path, text, encoding="utf-8"):
    (tmp_path / "images").mkdir(exist_ok=True)
    for n in ("a", "b", "c"):
        Image.new("RGB", (8, 8), (40 * ord(n) % 256, 0, 0)).save(tmp_path / "images" / f"{n}.png")
    path = tmp_path / "train.csv"
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


# ----------------------------------------------------------------------------- 1. strict, explained CSV reading

@pytest.mark.parametrize("line3", ['images/b.png\t"a dog', 'images/b.png\t"a dog\nand a cat"'])
def test_a_quote_that_does_not_close_on_its_line_is_refused_naming_the_line(tmp_path, line3):
    """An opening quote without its closing quote would swallow the rest of the file as one caption."""
    rest = "".join(f"images/{n}.png\tcaption {k}\n" for k, n in enumerate("abc" * 30))
    path = write_csv(tmp_path, f"filepath\ttitle\nimages/a.png\ta cat\n{line3}\n{rest}")
    with pytest.raises(data.DataError, match=r"train\.csv, line 3: .*quoted field") as e:
        data.read_csv_split(path, "train")
    assert "\n" not in str(e.value)


def test_the_quote_rule_is_open_clips(tmp_path):
    """Quoted fields hold the separator and doubled quotes; a quote inside an unquoted field is text."""
    path = write_csv(tmp_path, 'filepath\ttitle\nimages/a.png\t"a ""big""\tcat"\nimages/b.png\ta 5" dog\n')
    assert data.read_csv_split(path, "train").captions == ['a "big"\tcat', 'a 5" dog']


def test_an_unquoted_separator_inside_a_caption_is_refused_naming_the_line(tmp_path):
    path = write_csv(tmp_path, "filepath\ttitle\nimages/a.png\ta cat\nimages/b.png\ta dog\tin the rain\n")
    with pytest.raises(data.DataError, match=r"train\.csv, line 3: .*--csv_separator.*double quotes"):
        data.read_csv_split(path, "train")
    comma = write_csv(tmp_path, "filepath,title\nimages/a.png,a cat\nimages/b.png,a dog, wet\n")
    with pytest.raises(data.DataError, match=r"line 3: 3 field\(s\) where the header has 2 \(separator comma"):
        data.read_csv_split(comma, "train", separator=",")


@pytest.mark.parametrize("typed, sep", [("\\t", "\t"), ("tab", "\t"), ("TAB", "\t"), ("\t", "\t"), (",", ","),
                                        ("comma", ","), ("semicolon", ";"), ("|", "|")])
def test_csv_separator_takes_what_a_shell_user_types(typed, sep):
    assert parse_args(["--dataset", "csv", "--csv_separator", typed], "npc").data.csv_separator == sep
    assert construct_noise.build_parser().parse_args(["--noise_ratio", "0", "--csv_separator", typed]).csv_separator \
        == sep


@pytest.mark.parametrize("typed", ["xx", '"', ""])
def test_a_csv_separator_of_several_characters_is_a_flag_error(typed, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "csv", "--csv_separator", typed], "npc")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --csv_separator: expected one character or one of" in err and "tab" in err


def test_a_comma_file_end_to_end_with_a_named_separator(tmp_path):
    files = make_set(tmp_path / "d", sep=",")
    assert construct_noise.main(["--train_data", str(files["train"]), "--csv_separator", "comma",
                                 "--noise_ratio", "0.5"]) == 0
    a = parse_args(flags(files, tmp_path / "logs", "--csv_separator", "comma"), "clip")
    assert source_for(a.data).load_split("test").num_images == 6


def test_a_file_in_another_encoding_is_named_with_its_line_and_the_flag(tmp_path, capsys):
    text = "filepath\ttitle\nimages/a.png\ta cat\nimages/b.png\ta dog\nimages/c.png\ta caf\u00e9 at night\n"
    path = write_csv(tmp_path, text, encoding="cp1252")
    with pytest.raises(data.DataError, match=r"train\.csv, line 4: .*utf-8.*--csv_encoding cp1252"):
        data.read_csv_split(path, "train")
    assert data.read_csv_split(path, "train", encoding="cp1252").captions[2] == "a caf\u00e9 at night"
    assert parse_args(["--csv_encoding", "cp1252"], "npc").data.csv_encoding == "cp1252"
    with pytest.raises(SystemExit):
        parse_args(["--csv_encoding", "klingon"], "npc")
    assert "unknown encoding 'klingon'" in capsys.readouterr().err
    # a byte-order mark and Windows line endings are read as they should be
    path = write_csv(tmp_path, b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    assert data.read_csv_split(path, "train").captions[2] == "a caf\u00e9 at night"


# ----------------------------------------------------------------------------- 2. runs that know their data

@pytest.mark.parametrize("script", [main_CLIP, main_NPC])
def test_resume_after_the_training_csv_changed_is_refused_naming_the_split(tmp_path, capsys, script):
    files = make_set(tmp_path / "d")
    run = flags(files, tmp_path / "logs", "--experiments", "r", epochs="2")
    script.main(run + ["--stop_after", "1"])
    latest = tmp_path / "logs" / "r" / "checkpoints" / "latest.pt"
    assert set(torch.load(latest, weights_only=False)["fingerprints"]) == {"train", "dev", "test", "pretrained"}
    before = latest.read_bytes()
    lines = files["train"].read_text(encoding="utf-8").splitlines(keepends=True)
    files["train"].write_text("".join(lines[:-4]), encoding="utf-8")  # the user edits the file: 31 pairs, now 27
    assert cli(script.main, run + ["--resume", "latest"]) == 1
    err = one_error(capsys)
    assert "(--train_data) changed" in err and "27 / 14" in err
    assert latest.read_bytes() == before and not (tmp_path / "logs" / "r" / "results.json").exists()


def save_weights(path, seed):
    from npc.model import create_model

    model = create_model("npc-micro", "none", init_seed=seed)[0]
    torch.save({"state_dict": model.state_dict()}, path)


def test_resume_with_another_weights_file_under_the_same_path_is_refused_naming_pretrained(tmp_path, capsys,
                                                                                            monkeypatch):
    files = make_set(tmp_path / "d")
    here, there = tmp_path / "here", tmp_path / "there"
    for folder, seed in ((here, 1), (there, 2)):
        folder.mkdir()
        save_weights(folder / "weights.pt", seed)
    run = flags(files, tmp_path / "logs", "--experiments", "w", epochs="2")
    run[run.index("--pretrained") + 1] = "weights.pt"  # relative: resolved in the folder a command runs from
    monkeypatch.chdir(here)
    main_CLIP.main(run + ["--stop_after", "1"])
    resume = ["--experiments", "w", "--logs_dir", str(tmp_path / "logs"), "--resume", "latest", "--no_progress",
              "--num_workers", "0"]
    monkeypatch.chdir(there)
    assert cli(main_CLIP.main, resume) == 1
    err = one_error(capsys)
    assert "--pretrained weights.pt" in err and "changed" in err
    monkeypatch.chdir(tmp_path)
    assert cli(main_CLIP.main, resume) == 1
    err = one_error(capsys)
    assert "--pretrained weights.pt" in err and "no such file" in err
    # a checkpoint of an earlier version records no fingerprints: it resumes, with a note
    latest = tmp_path / "logs" / "w" / "checkpoints" / "latest.pt"
    ckpt = torch.load(latest, weights_only=False)
    del ckpt["fingerprints"]
    torch.save(ckpt, latest)
    monkeypatch.chdir(here)
    assert main_CLIP.main(resume)["results"]["test"]["images"] == 6
    assert "records no fingerprints of its data and weights (an earlier version)" in \
        (tmp_path / "logs" / "w" / "log.txt").read_text()


def test_two_models_keep_their_banks_side_by_side_and_both_resume(tmp_path):
    files = make_set(tmp_path / "d")
    save_weights(tmp_path / "other.pt", 3)
    runs = {"a": flags(files, tmp_path / "logs", "--experiments", "a", "--noise_ratio", "0.4", epochs="2"),
            "b": flags(files, tmp_path / "logs", "--experiments", "b", "--noise_ratio", "0.4", epochs="2")}
    runs["b"][runs["b"].index("--pretrained") + 1] = str(tmp_path / "other.pt")
    for run in runs.values():
        main_NPC.main(run + ["--stop_after", "1"])
    banks = sorted(p.parent.name for p in (tmp_path / "d" / "train.memory_bank").glob("*/0.4_mbank_info.json"))
    assert len(banks) == 2 and banks[0].startswith("npc-micro_none_") and banks[1].startswith("npc-micro_other_")
    for name, run in runs.items():
        assert main_NPC.main(run + ["--resume", "latest"])["results"]["test"]["images"] == 6
        log = (tmp_path / "logs" / name / "log.txt").read_text()
        assert log.count("memory bank: reusing") == 1 and "rebuild" not in log


# ----------------------------------------------------------------------------- 3. checks before the first step

def _checks(cfg):
    return data_checks(cfg.data, cfg.model, evaluating=False)


def test_dev_and_test_images_shared_with_training_are_one_warning_with_a_count(tmp_path):
    files = make_set(tmp_path / "d")
    assert _checks(parse_args(flags(files, tmp_path / "logs"), "clip")) == []  # disjoint: nothing to say
    shutil.copy(files["train"], files["test"])  # the test split is the training split
    dev_image = tmp_path / "d" / "images" / "bild dev 1 é.png"
    shutil.copy(tmp_path / "d" / "images" / "bild train 4 é.png", dev_image)  # the same bytes under another name
    notes = _checks(parse_args(flags(files, tmp_path / "logs"), "clip"))
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert notes[0].startswith(f"warning: 16 of the 16 images of --test_data {files['test']} are also training "
                               f"images (same file or same bytes)")
    assert notes[1].startswith(f"warning: 1 of the 6 images of --dev_data {files['dev']} are also training images "
                               f"(same file or same bytes), e.g. line 3")


@pytest.mark.parametrize("split", ["dev", "test"])
def test_an_unreadable_evaluation_image_fails_before_the_first_step(tmp_path, capsys, split):
    files = make_set(tmp_path / "d")
    image = tmp_path / "d" / "images" / f"bild {split} 2 é.jpg"
    image.write_bytes(image.read_bytes()[:200])  # truncated: its header still reads
    run = flags(files, tmp_path / "logs", "--experiments", "t")
    assert cli(main_CLIP.main, run) == 1
    err = one_error(capsys)
    assert f"cannot read image {image}" in err and f"{files[split]}, line " in err
    assert "--skip_unreadable_images" in err
    assert not (tmp_path / "logs" / "t").exists()  # nothing trained, nothing left behind
    res = main_CLIP.main(run + ["--skip_unreadable_images"])
    out = capsys.readouterr().out
    warning = f"warning: the {split} split: left out 1 unreadable image(s) and their 3 caption(s)"
    assert sum(warning in line for line in out.splitlines()) == 1
    if split == "dev":
        assert "dev: 5 images" in out
    else:
        assert res["results"]["test"]["images"] == 5


# ----------------------------------------------------------------------------- 4. a CPU recipe, eval as documented

def test_eval_with_another_test_csv_needs_no_dataset_flag(tmp_path):
    files = make_set(tmp_path / "d")
    main_CLIP.main(flags(files, tmp_path / "logs", "--experiments", "m"))
    other = make_set(tmp_path / "o", n=(2, 2, 4))["test"]
    res = main_NPC.main(["--eval", "--resume", str(tmp_path / "logs" / "m" / "checkpoints" / "best.pt"),
                         "--test_data", str(other), "--logs_dir", str(tmp_path / "logs"), "--num_workers", "0",
                         "--no_progress"])
    assert res["dataset"] == "csv" and res["results"]["test"]["images"] == 4
    with pytest.raises(ConfigError, match=r"--test_data is for --dataset csv or webdataset .*--dataset demo"):
        eval_changes(parse_args(["--eval", "--resume", "x.pt", "--test_data", str(other)], "npc"), {"dataset": "demo"})


def test_demo_base_is_the_initial_model_for_csv_data_of_the_demos_model(tmp_path, base_dir, capsys):
    files = make_set(tmp_path / "d")
    run = flags(files, tmp_path / "logs", "--pretrained", "demo-base", "--pretrained_dir", str(base_dir))
    res = main_CLIP.main(run + ["--experiments", "b"])
    assert res["results"]["test"]["images"] == 6
    [base] = base_dir.glob("demo-base_npc-micro_*.pt")
    assert f"demo base model: using {base}" in (tmp_path / "logs" / "b" / "log.txt").read_text()
    ckpt = torch.load(tmp_path / "logs" / "b" / "checkpoints" / "best.pt", weights_only=False)
    from npc.io import file_sha256

    assert ckpt["fingerprints"]["pretrained"] == "sha256:" + file_sha256(base)
    assert cli(main_CLIP.main, run + ["--vision_model", "ViT-B/32", "--experiments", "v"]) == 1
    err = one_error(capsys)
    assert all(w in err for w in ("--pretrained demo-base", "--vision_model ViT-B/32", "--vision_model npc-tiny"))
    assert not (tmp_path / "logs" / "v").exists()


def test_bank_info_records_the_initial_weights_by_content(tmp_path):
    files = make_set(tmp_path / "d")
    save_weights(tmp_path / "w.pt", 5)
    import get_memorybank

    run = flags(files, tmp_path / "logs", "--noise_ratio", "0.4", "--pretrained", str(tmp_path / "w.pt"))
    get_memorybank.main(run)
    [info] = (tmp_path / "d" / "train.memory_bank").glob("npc-micro_w_*/0.4_mbank_info.json")
    from npc.io import file_sha256

    assert json.loads(info.read_text())["initial_weights"] == "sha256:" + file_sha256(tmp_path / "w.pt")
