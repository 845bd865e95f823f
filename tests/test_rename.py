"""dataset/MSCOCO_rename.py: dry run, apply, conflicts (nothing renamed), other files untouched."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("MSCOCO_rename",
                                                  ROOT / "dataset" / "MSCOCO_rename.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SOURCES = {
    "COCO_train2014_000000000009.jpg": b"train9",
    "COCO_train2014_000000581929.jpg": b"train581929",
    "COCO_val2014_000000000042.jpg": b"val42",
}
OTHERS = {
    "COCO_2014_000000000001.jpg": b"already renamed",
    "notes.txt": b"keep me",
    "COCO_train2014_000000000009.png": b"not a jpg",
    "COCO_test2014_000000000005.jpg": b"test split, not renamed",
}


def populate(d: Path, files):
    for name, data in files.items():
        (d / name).write_bytes(data)


def listing(d: Path):
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in d.iterdir()}


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    populate(d, {**SOURCES, **OTHERS})
    (d / "COCO_train2014_000000000077.jpg").mkdir()   # a folder with a matching name: ignored
    return d


def test_dry_run_changes_nothing(images, capsys):
    before = listing(images)
    assert load_script().main([str(images)]) == 0
    assert listing(images) == before
    out = capsys.readouterr().out
    assert "COCO_train2014_000000000009.jpg -> COCO_2014_000000000009.jpg" in out
    assert "3 file(s) would be renamed" in out


def test_apply_renames_train_and_val(images, capsys):
    assert load_script().main([str(images), "--apply"]) == 0
    after = listing(images)
    assert after["COCO_2014_000000000009.jpg"] == b"train9"
    assert after["COCO_2014_000000581929.jpg"] == b"train581929"
    assert after["COCO_2014_000000000042.jpg"] == b"val42"
    for name in SOURCES:
        assert name not in after
    for name, data in OTHERS.items():          # other files untouched
        assert after[name] == data
    assert (images / "COCO_train2014_000000000077.jpg").is_dir()
    assert "renamed 3 file(s)" in capsys.readouterr().out
    # re-running finds nothing left to do
    assert load_script().main([str(images), "--apply"]) == 0
    assert "nothing to rename" in capsys.readouterr().out


def test_existing_target_conflict_renames_nothing(images, capsys):
    (images / "COCO_2014_000000000042.jpg").write_bytes(b"someone else's file")
    before = listing(images)
    assert load_script().main([str(images), "--apply"]) != 0
    assert listing(images) == before           # not even the non-conflicting files
    err = capsys.readouterr().err
    assert "COCO_2014_000000000042.jpg already exists" in err
    assert "COCO_val2014_000000000042.jpg" in err


def test_two_sources_one_target_conflict(images, capsys):
    populate(images, {"COCO_val2014_000000000009.jpg": b"val9"})
    (images / "COCO_2014_000000000001.jpg").unlink()
    populate(images, {"COCO_val2014_000000000001.jpg": b"val1"})
    populate(images, {"COCO_2014_000000000001.jpg": b"exists"})
    before = listing(images)
    assert load_script().main([str(images), "--apply"]) == 1
    assert listing(images) == before
    err = capsys.readouterr().err
    # every conflict is reported
    assert "COCO_2014_000000000009.jpg would be the target of several files" in err
    assert "COCO_train2014_000000000009.jpg" in err and "COCO_val2014_000000000009.jpg" in err
    assert "COCO_2014_000000000001.jpg already exists" in err
    assert "2 conflict(s)" in err


def test_conflict_reported_in_dry_run_too(images, capsys):
    (images / "COCO_2014_000000000009.jpg").write_bytes(b"x")
    assert load_script().main([str(images)]) == 1
    assert "COCO_2014_000000000009.jpg already exists" in capsys.readouterr().err


def test_not_a_folder(tmp_path):
    with pytest.raises(SystemExit) as e:
        load_script().main([str(tmp_path / "missing")])
    assert e.value.code == 2
