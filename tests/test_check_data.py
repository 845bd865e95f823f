"""check_data.py: the dataset check before a long run, on Karpathy's format, the release's layout and CSV files."""
import io
import json
import shutil

import pytest
from PIL import Image

from check_data import main
from helpers import TINY_SIZES, make_images_and_csvs
from npc.synthetic.karpathy import write_karpathy_dataset, write_release_layout_from_karpathy

SIZES = {"train": 4, "restval": 2, "val": 4, "test": 3}


def _run(capsys, *argv):
    code = main([*argv, "--no_progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    json_path = write_karpathy_dataset(root, "coco", SIZES, seed=5)
    return root, json_path, json.loads(json_path.read_text())["images"]


def _big_jpeg(path):
    """A photo-sized JPEG in place of ``path``: its header is a small part of the file, as in real data."""
    rng = __import__("numpy").random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype="uint8"), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def test_karpathy_folder_with_missing_and_truncated_images(coco, capsys):
    root, json_path, images = coco
    val = [e for e in images if e["split"] == "val"]
    test = [e for e in images if e["split"] == "test"]
    gone = [val[1], test[2]]
    for e in gone:
        (root / e["filepath"] / e["filename"]).unlink()
    cut = val[3]
    cut_path = root / cut["filepath"] / cut["filename"]
    size = _big_jpeg(cut_path)
    cut_path.write_bytes(cut_path.read_bytes()[: size // 3])  # a download cut short, past the header
    # the cheap check (exists + header) does not see a file cut after its header: --decode does
    code, out, _ = _run(capsys, "--dataset", "coco", "--dataset_root", str(root))
    assert code == 1
    assert "Karpathy's split file" in out and str(json_path) in out
    assert "problems: 2 missing, 0 unreadable" in out and cut["filename"] not in out
    code, out, _ = _run(capsys, "--dataset", "coco", "--dataset_root", str(root), "--decode")
    assert code == 1
    assert "problems: 2 missing, 1 unreadable" in out
    for e in gone + [cut]:
        assert f"images[{images.index(e)}] (imgid {e['imgid']}, filename {e['filename']})" in out
    assert f"unreadable: {cut_path}" in out
    assert "what to do:" in out and "val2014" in out and "--skip_unreadable_images" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["dev", "4", "5,000", "20", "1", "1"] in rows and ["test", "3", "5,000", "15", "1", "0"] in rows


def test_a_file_cut_within_its_header_fails_the_cheap_check(coco, capsys):
    root, _, images = coco
    e = next(e for e in images if e["split"] == "train")
    path = root / e["filepath"] / e["filename"]
    path.write_bytes(path.read_bytes()[:150])
    code, out, _ = _run(capsys, "--dataset", "coco", "--dataset_root", str(root))
    assert code == 1 and "problems: 0 missing, 1 unreadable" in out and e["filename"] in out


def test_good_karpathy_folders_exit_0_with_their_counts(tmp_path, capsys):
    root = tmp_path / "f30k"
    write_karpathy_dataset(root, "f30k", {"train": 5, "val": 3, "test": 2}, seed=2)
    for extra in ([], ["--decode"]):
        code, out, _ = _run(capsys, "--dataset", "f30k", "--dataset_root", str(root), *extra)
        assert code == 0, out
        rows = [line.split() for line in out.splitlines()]
        assert ["train", "5", "29,000", "25", "0", "0"] in rows
        assert ["dev", "3", "1,014", "15", "0", "0"] in rows and ["test", "2", "1,000", "10", "0", "0"] in rows
        assert "not the full dataset's number of images" in out and out.rstrip().splitlines()[-1].startswith("ok:")


def test_release_layout_of_the_demo(demo_root, capsys):
    code, out, _ = _run(capsys, "--dataset", "demo", "--dataset_root", str(demo_root), "--decode")
    assert code == 0, out
    assert "the reference release's layout" in out
    rows = [line.split() for line in out.splitlines()]
    n = TINY_SIZES
    assert ["train", str(n["n_train"]), "-", str(5 * n["n_train"]), "0", "0"] in rows
    assert ["test", str(n["n_test"]), "-", str(5 * n["n_test"]), "0", "0"] in rows


@pytest.mark.parametrize("ds", ["coco", "f30k"])
def test_release_layout_problems_name_their_lines(tmp_path, capsys, ds):
    src = tmp_path / "src"
    json_path = write_karpathy_dataset(src, ds, SIZES if ds == "coco" else {"train": 4, "val": 3, "test": 3}, seed=1)
    root = write_release_layout_from_karpathy(json_path, src, tmp_path / "release")
    ann = root / "annotations" / "scan_split"
    train_ids = (ann / "train_ids.txt").read_text().splitlines()
    test_ids = (ann / "test_ids.txt").read_text().splitlines()
    if ds == "coco":
        names = [f"COCO_2014_{int(i):012d}.jpg" for i in (train_ids[2], test_ids[5])]
    else:
        table = (ann / "image_name.txt").read_text().splitlines()
        names = [table[int(i)] for i in (train_ids[2], test_ids[5])]
    for name in names:
        (root / "images" / name).unlink()
    (ann / "dev_caps.txt").unlink()
    code, out, _ = _run(capsys, "--dataset", ds, "--dataset_root", str(root))
    assert code == 1
    assert f"listed at {ann / 'train_ids.txt'}, line 3" in out
    assert f"listed at {ann / 'test_ids.txt'}, lines 6-10" in out
    if ds == "f30k":
        assert f"{ann / 'image_name.txt'}, line {int(train_ids[2]) + 1}" in out
        assert ["train", "4", "29,000", "20", "1", "0"] in [line.split() for line in out.splitlines()]
    assert f"dev    error: annotation file not found: {ann / 'dev_caps.txt'}" in out
    assert "entries that cannot be read: fix each at the place its line names" in out


def test_csv_files(tmp_path, capsys):
    files = make_images_and_csvs(tmp_path)
    argv = ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
            "--test_data", str(files["test"])]
    code, out, _ = _run(capsys, *argv)
    assert code == 0, out
    assert "CSV files" in out and ["dev", "6", "-", "12", "0", "0"] in [line.split() for line in out.splitlines()]
    (tmp_path / "images" / "dev_4.jpg").unlink()
    code, out, _ = _run(capsys, *argv)
    assert code == 1
    line = next(k for k, row in enumerate(files["dev"].read_text().splitlines(), 1) if row.startswith("images/dev_4.jpg"))
    assert f"missing: {tmp_path / 'images' / 'dev_4.jpg'}" in out and f"{files['dev']}, line {line}" in out
    assert "relative to the CSV file's folder" in out


def test_one_line_errors(tmp_path, capsys):
    code, out, err = _run(capsys, "--dataset", "coco", "--dataset_root", str(tmp_path))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "dataset_coco.json" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "--dataset", "coco", "--dataset_root", str(tmp_path), "--train_data", "x.csv")
    assert code == 1 and "--dataset csv" in err
    with pytest.raises(SystemExit):  # a mistyped flag is not guessed
        main(["--dataset", "coco", "--dec"])


def test_a_wrong_json_is_a_split_error(coco, capsys):
    root, json_path, images = coco
    data = json.loads(json_path.read_text())
    e = next(e for e in data["images"] if e["split"] == "test")
    e["sentences"] = e["sentences"][:4]
    json_path.write_text(json.dumps(data))
    shutil.rmtree(root / "train2014")
    code, out, _ = _run(capsys, "--dataset", "coco", "--dataset_root", str(root))
    assert code == 1
    # the bad entry is listed, and the test split's other images are still checked
    assert f"    entry: {json_path}, images[{data['images'].index(e)}] (imgid {e['imgid']}" in out
    assert ["test", str(SIZES["test"] - 1), "5,000", str(5 * (SIZES["test"] - 1)), "0", "0"] in \
        [line.split() for line in out.splitlines()]
    assert f"problems: {SIZES['train']} missing" in out


def test_five_different_problems_are_all_named_in_one_run(tmp_path, capsys):
    """A JSON entry without sentences no longer hides the same split's other problems: all five in one run,
    grouped by split, each with its place and the remedy of its kind; exit 1."""
    root = tmp_path / "f30k"
    json_path = write_karpathy_dataset(root, "f30k", {"train": 8, "val": 3, "test": 3}, seed=7)
    data = json.loads(json_path.read_text())
    train = [e for e in data["images"] if e["split"] == "train"]
    test = [e for e in data["images"] if e["split"] == "test"]
    del train[0]["sentences"]                                         # 1. an entry without its sentences
    del train[1]["sentences"][2]["sentid"]                            # 2. a sentence without its sentid
    json_path.write_text(json.dumps(data))
    (root / "flickr30k-images" / train[2]["filename"]).unlink()       # 3. a missing training image
    bad = root / "flickr30k-images" / train[3]["filename"]
    bad.write_bytes(b"<html>404 not found</html>")                    # 4. a non-image file named .jpg
    (root / "flickr30k-images" / test[0]["filename"]).unlink()        # 5. a missing image of another split
    code, out, _ = _run(capsys, "--dataset", "f30k", "--dataset_root", str(root))
    assert code == 1
    idx = {id(e): i for i, e in enumerate(data["images"])}
    assert f"entry: {json_path}, images[{idx[id(train[0])]}]" in out and "'sentences'" in out
    assert f"entry: {json_path}, images[{idx[id(train[1])]}]" in out and "sentid" in out
    assert f"missing: {root / 'flickr30k-images' / train[2]['filename']}" in out
    assert f"unreadable: {bad} (not an image file PIL can open" in out
    assert f"missing: {root / 'flickr30k-images' / test[0]['filename']}" in out
    assert "problems: 2 missing, 1 unreadable image(s), 2 entries that cannot be read, by split:" in out
    assert out.index("  train split (2 bad entries, 1 missing, 1 unreadable):") < out.index("  test split (1 missing):")
    for advice in ("entries that cannot be read: fix each", "missing images", "--skip_unreadable_images"):
        assert advice in out


def test_shards_a_bad_shard_does_not_hide_another(tmp_path, capsys):
    """A shard with a caption and no image and a second shard that is not a tar: both named in one run."""
    import tarfile

    from npc.synthetic.shards import random_jpeg_samples, write_shard

    folder = tmp_path / "shards"
    folder.mkdir()
    samples = random_jpeg_samples(9, seed=1, size=16)
    write_shard(folder / "00000.tar", samples[:3], 0)
    with tarfile.open(folder / "00001.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("000010000.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"cat"))
    (folder / "00002.tar").write_bytes(b"not a tar at all" * 40)
    write_shard(folder / "00003.tar", samples[3:6], 3)
    code, out, _ = _run(capsys, "--dataset", "webdataset", "--train_data", str(folder / "{00000..00003}.tar"))
    assert code == 1
    assert f"entry: {folder / '00001.tar'}: sample 000010000 has a caption" in out
    assert f"entry: {folder / '00002.tar'}: not a tar file" in out
    assert ["train", "6", "-", "6", "0", "0"] in [line.split() for line in out.splitlines()]  # the good shards
