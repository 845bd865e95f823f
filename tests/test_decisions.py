"""--pair_decisions: a person's decisions (the report page's decisions.csv) used by training, the memory bank,
check_data.py, and the cleaned data written in the user's own format."""
import csv
import json

import numpy as np
import pytest

import check_data
import main_NPC
from helpers import csv_flags, make_images_and_csvs, run_args
from npc.cli import cli
from npc.params import parse_args
from npc.sources import source_for


def noisy_train(argv, script="npc"):
    cfg = parse_args(argv, script)
    return cfg, *source_for(cfg.data).load_train(log=lambda *_: None, check_images=False)


def write_decisions(path, split, decided, fingerprint=None, extra_rows=()):
    """decisions.csv as the page writes it: ``decided`` maps a pair's index to its decision."""
    from npc.pair_weights import split_fingerprint

    keys = split.keys
    rows = [f"# npc pair decisions: data_fingerprint {fingerprint or split_fingerprint(split)}, run 0123, dataset x",
            "key,decision,caption"]
    for i, d in decided.items():
        rows.append(f'{keys[i]},{d},"{split.captions[i]}"')
    rows += list(extra_rows)
    path.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    return path


def test_a_run_drops_the_wrong_pairs_counts_them_and_the_bank_holds_the_right_one(fresh_root, base_dir, tmp_path,
                                                                                  capsys):
    from npc import memory_bank as mb

    logs = tmp_path / "logs"
    flags = run_args(fresh_root, base_dir, logs, "--experiments", "d", "--epochs", "2")
    cfg, split, mask = noisy_train(flags)
    noisy, clean = np.nonzero(mask)[0], np.nonzero(~mask)[0]
    wrong, right = [int(noisy[0]), int(noisy[1]), int(clean[0])], int(clean[1])
    dec = write_decisions(tmp_path / "decisions.csv", split, {**{i: "wrong" for i in wrong}, right: "right",
                                                               int(clean[2]): "unsure"})
    main_NPC.main(flags + ["--pair_decisions", str(dec), "--stop_after", "1"])
    log = (logs / "d" / "log.txt").read_text()
    assert f"3 wrong pairs left out of the training split ({len(split)} -> {len(split) - 3} pairs" in log
    assert "1 right (clean in the memory bank), 1 not sure" in log
    assert "data.pair_decisions_sha256: " in (logs / "d" / "params.txt").read_text()

    # the bank: a folder of its own, built on the kept pairs, the pair marked right in its clean set
    dcfg = parse_args(flags + ["--pair_decisions", str(dec)], "npc")
    bank_dir = mb.bank_dir_for(dcfg.data, dcfg.model)
    assert bank_dir.name.startswith("decisions_") and bank_dir.parent == mb.bank_dir_for(cfg.data, cfg.model)
    kept_keys = [k for i, k in enumerate(split.keys) if i not in wrong]
    p = mb.load_pclean(bank_dir, dcfg.data.noise_ratio, len(kept_keys), dcfg.data.noise_mode)
    assert len(p) == len(split) - 3
    assert p[kept_keys.index(split.keys[right])] > dcfg.bank.clean_threshold
    info = json.loads(next(bank_dir.glob("*info*.json")).read_text())
    assert info["decided_right"] == 1 and info["pair_decisions_sha256"] == info["pair_decisions_sha256"].lower()

    # resume with an edited file: refused, naming the flag; with the file as it was: goes on
    original = dec.read_bytes()
    write_decisions(dec, split, {**{i: "wrong" for i in wrong[:2]}, right: "right"})
    capsys.readouterr()
    assert cli(main_NPC.main, flags + ["--resume", "latest"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--pair_decisions" in err[0] and "changed since the run started" in err[0]
    dec.write_bytes(original)
    result = main_NPC.main(flags + ["--resume", "latest"])
    d = result["pair_decisions"]
    assert (d["wrong"], d["right"], d["unsure"], d["pairs_dropped"]) == (3, 1, 1, 3)
    assert (d["wrong_truly_noisy"], d["right_truly_clean"]) == (2, 1)
    assert d["pairs_after"] == len(split) - 3 and d["sha256"]
    saved = json.loads((logs / "d" / "results.json").read_text())
    assert saved["pair_decisions"]["pairs_dropped"] == 3


def test_a_run_started_without_decisions_refuses_them_on_resume(fresh_root, base_dir, tmp_path, capsys):
    logs = tmp_path / "logs"
    flags = run_args(fresh_root, base_dir, logs, "--experiments", "n", "--epochs", "2", "--method", "clip")
    _, split, _ = noisy_train(flags, "clip")
    import main_CLIP

    main_CLIP.main(flags + ["--stop_after", "1"])
    dec = write_decisions(tmp_path / "decisions.csv", split, {0: "wrong"})
    capsys.readouterr()
    assert cli(main_CLIP.main, flags + ["--resume", "latest", "--pair_decisions", str(dec)]) == 1
    assert "--pair_decisions" in capsys.readouterr().err


@pytest.mark.parametrize("edit, says", [
    (lambda rows, keys: ["key,decision,caption", *rows[2:]], "line 1: expected '# npc pair decisions"),
    (lambda rows, keys: [*rows, f"{keys[5]},maybe,x"], "line 5: unknown decision 'maybe'"),
    (lambda rows, keys: [*rows, f"{keys[0]},right,x"], "line 5: '{}' is decided twice (first on line 3)"),
    (lambda rows, keys: [*rows, "line 99999,wrong,x"], "line 5: no pair of the training split has the key"),
    (lambda rows, keys: [rows[0].replace(rows[0].split()[5].rstrip(","), "f" * 64), *rows[1:]],
     "line 1: the decisions were made on other data"),
    (lambda rows, keys: [rows[0], "pair,what", *rows[2:]], "line 2: expected the column names"),
])
def test_a_bad_decisions_file_is_one_error_naming_its_line(fresh_root, base_dir, tmp_path, capsys, edit, says):
    flags = run_args(fresh_root, base_dir, tmp_path / "logs")
    _, split, _ = noisy_train(flags)
    path = write_decisions(tmp_path / "d.csv", split, {0: "wrong", 1: "right"})
    rows = path.read_text().splitlines()
    path.write_text("\n".join(edit(rows, split.keys)) + "\n")
    capsys.readouterr()
    assert check_data.main(["--dataset", "demo", "--dataset_root", str(fresh_root), "--pair_decisions",
                            str(path)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and f"{path}, {says.format(split.keys[0])}" in err[0], err


def test_check_data_counts_the_decisions(fresh_root, base_dir, tmp_path, capsys):
    flags = run_args(fresh_root, base_dir, tmp_path / "logs")
    _, split, _ = noisy_train(flags)
    path = write_decisions(tmp_path / "d.csv", split, {0: "wrong", 3: "wrong", 1: "right", 2: "unsure"})
    capsys.readouterr()
    assert check_data.main(["--dataset", "demo", "--dataset_root", str(fresh_root), "--pair_decisions",
                            str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 wrong pairs left out" in out and "1 right" in out and "1 not sure" in out


# ----------------------------------------------------------------------------- the cleaned data

def test_cleaned_csv_is_the_users_file_without_the_wrong_rows_beside_it(tmp_path, capsys):
    from npc.sources.csv_files import read_csv_split

    files = make_images_and_csvs(tmp_path / "data")
    flags = [a for a in csv_flags(files, tmp_path / "logs") if a]
    cfg, split, _ = noisy_train(flags)
    dec = write_decisions(tmp_path / "d.csv", split, {0: "wrong", 4: "wrong", 7: "wrong", 2: "right"})
    data_flags = ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
                  "--test_data", str(files["test"]), "--pair_decisions", str(dec)]
    before = files["train"].read_bytes()
    out = files["train"].parent / "train.cleaned.csv"
    assert check_data.main([*data_flags, "--write_cleaned", str(out)]) == 0
    assert files["train"].read_bytes() == before
    lines = files["train"].read_text().splitlines()
    dropped = {int(split.source_lines[i]) for i in (0, 4, 7)}
    assert out.read_text().splitlines() == [ln for n, ln in enumerate(lines, 1) if n not in dropped]
    cleaned = read_csv_split(out, "train", check_images=True)
    assert len(cleaned) == len(split) - 3
    # never over the input, and beside it only
    capsys.readouterr()
    assert check_data.main([*data_flags, "--write_cleaned", str(files["train"])]) == 1
    assert "is an input of the data" in capsys.readouterr().err
    assert files["train"].read_bytes() == before
    assert check_data.main([*data_flags, "--write_cleaned", str(tmp_path / "elsewhere.csv")]) == 1
    assert "beside" in capsys.readouterr().err


def test_cleaned_karpathy_json_lacks_the_wrong_sentences(tmp_path):
    from npc.synthetic.karpathy import write_karpathy_dataset

    root = tmp_path / "f30k"
    json_path = write_karpathy_dataset(root, "f30k", {"train": 6, "val": 3, "test": 3}, seed=5)
    flags = ["--dataset", "f30k", "--dataset_root", str(root)]
    cfg, split, _ = noisy_train(flags)
    wrong = [0, 1, 2, 3, 4, 12]  # every sentence of the first image, and one of the third
    dec = write_decisions(tmp_path / "d.csv", split, {**{i: "wrong" for i in wrong}, 6: "right"})
    before = json_path.read_bytes()
    out = tmp_path / "dataset_flickr30k.cleaned.json"
    assert check_data.main([*flags, "--pair_decisions", str(dec), "--write_cleaned", str(out)]) == 0
    assert json_path.read_bytes() == before
    old, new = json.loads(before), json.loads(out.read_text())
    gone = {int(split.keys[i].split()[-1]) for i in wrong}
    train_old = [e for e in old["images"] if e["split"] == "train"]
    train_new = [e for e in new["images"] if e["split"] == "train"]
    expected = [{**e, "sentences": [x for x in e["sentences"] if x["sentid"] not in gone]} for e in train_old]
    assert [e["sentences"] for e in train_new] == [e["sentences"] for e in expected if e["sentences"]]
    sentids = {s["sentid"] for e in train_new for s in e["sentences"]}
    assert not gone & sentids and len(sentids) == sum(len(e["sentences"]) for e in train_old) - len(wrong)
    # an image whose sentences are all wrong leaves the file
    one = write_decisions(tmp_path / "one.csv", split, {i: "wrong" for i in range(5, 10)})
    n_sent = len(train_old[1]["sentences"])
    assert check_data.main([*flags, "--pair_decisions", str(one), "--write_cleaned", str(out)]) == 0
    names = [e["filename"] for e in json.loads(out.read_text())["images"] if e["split"] == "train"]
    assert (train_old[1]["filename"] in names) == (n_sent > 5)
    assert [e for e in new["images"] if e["split"] != "train"] == [e for e in old["images"] if e["split"] != "train"]
    assert all(set(e["sentids"]) == {s["sentid"] for s in e["sentences"]} for e in train_new if "sentids" in e)


def test_cleaned_shards_are_a_keep_list_of_keys(demo_root, tmp_path):
    from npc.synthetic.shards import demo_as_shards

    specs = demo_as_shards(demo_root, tmp_path / "shards", train_shards=3)
    flags = ["--dataset", "webdataset", "--train_data", specs["train"], "--dev_data", specs["dev"],
             "--test_data", specs["test"]]
    cfg, split, _ = noisy_train(flags)
    dec = write_decisions(tmp_path / "d.csv", split, {1: "wrong", 30: "wrong", 77: "wrong", 5: "right"})
    out = tmp_path / "keep.npy"
    assert check_data.main([*flags, "--pair_decisions", str(dec), "--write_cleaned", str(out)]) == 0
    keep = np.load(out)
    assert list(keep) == [k for i, k in enumerate(split.keys) if i not in (1, 30, 77)]
    assert ":" in keep[0] and (tmp_path / "keep.txt").read_text().splitlines() == list(keep)


def test_decisions_read_rows_as_the_page_quotes_them(tmp_path):
    from npc.decisions import read_decisions

    p = tmp_path / "d.csv"
    p.write_text("\ufeff# npc pair decisions: data_fingerprint " + "a" * 64 + ", run r, dataset csv\r\n"
                 "key,decision,caption\r\nline 17,wrong,A dog.\r\n\"line 254\",WRONG,\"Two cups, one \"\"big\"\"\"\r\n"
                 "\r\nline 9,right,'=1+1\r\n", encoding="utf-8")
    d = read_decisions(p)
    assert d.rows == {"line 17": ("wrong", 3), "line 254": ("wrong", 4), "line 9": ("right", 6)}
    assert d.data_fingerprint == "a" * 64 and csv  # (csv: the module the page's quoting follows)


def test_a_report_with_decisions_leaves_the_wrong_pairs_out_and_keeps_the_datas_identity(fresh_root, base_dir,
                                                                                       tmp_path):
    import find_noisy_pairs
    from helpers import report_flags
    from npc.pair_weights import split_fingerprint

    flags = run_args(fresh_root, base_dir, tmp_path / "logs")
    _, split, _ = noisy_train(flags)
    dec = write_decisions(tmp_path / "d.csv", split, {0: "wrong", 9: "wrong", 3: "right"})
    plain = find_noisy_pairs.main(report_flags(fresh_root, base_dir, tmp_path / "a", "--top", "5", "--candidates",
                                               "0"))
    decided = find_noisy_pairs.main(report_flags(fresh_root, base_dir, tmp_path / "b", "--top", "5", "--candidates",
                                                 "0", "--pair_decisions", str(dec)))
    assert plain["pairs"] == len(split) and decided["pairs"] == len(split) - 2
    assert decided["identity"]["data_fingerprint"] == plain["identity"]["data_fingerprint"] == split_fingerprint(split)
    assert decided["identity"]["run"] != plain["identity"]["run"]  # the page keeps its decisions apart
    with open(tmp_path / "b" / "pairs.csv", newline="", encoding="utf-8") as f:
        captions = [r["caption"] for r in csv.DictReader(f)]
    assert len(captions) == len(split) - 2
