"""Karpathy's split files (npc/sources/karpathy.py) on tiny generated MSCOCO and Flickr30K folders: the splits they give,
their errors, and the same data in the release's layout read by npc.data.load_split."""
import hashlib
import json
import os

import numpy as np
import pytest

from npc.errors import DataError
from npc.data import load_split
from npc.sources.karpathy import find_karpathy_json, karpathy_counts, read_karpathy_split
from npc.synthetic.karpathy import write_karpathy_dataset, write_release_layout_from_karpathy

SIZES = {"coco": {"train": 6, "restval": 4, "val": 5, "test": 5}, "f30k": {"train": 7, "val": 4, "test": 3}}
OURS = {"coco": {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)},
        "f30k": {"train": ("train",), "dev": ("val",), "test": ("test",)}}


@pytest.fixture(scope="module")
def karpathy_roots(tmp_path_factory):
    out = {}
    for ds in ("coco", "f30k"):
        root = tmp_path_factory.mktemp(f"karpathy_{ds}")
        out[ds] = (root, write_karpathy_dataset(root, ds, SIZES[ds], seed=3))
    return out


def _entries(json_path, parts):
    images = json.loads(json_path.read_text())["images"]
    return [e for p in parts for e in images if e["split"] == p]


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("ds", ["coco", "f30k"])
def test_splits_counts_order_captions_and_keys(karpathy_roots, ds):
    root, json_path = karpathy_roots[ds]
    assert find_karpathy_json(root, ds) == json_path
    assert find_karpathy_json(root, "f30k" if ds == "coco" else "coco") is None
    raw = json.loads(json_path.read_text())
    # the generator mixes the splits in the file and writes 5 to 7 sentences with untrimmed raw text
    assert len({e["split"] for e in raw["images"][: len(raw["images"]) // 2]}) > 1
    sent_counts = [len(e["sentences"]) for e in raw["images"]]
    assert min(sent_counts) == 5 and max(sent_counts) > 5
    assert any(s["raw"] != s["raw"].strip() for e in raw["images"] for s in e["sentences"])
    for split, parts in OURS[ds].items():
        s = read_karpathy_split(json_path, root, ds, split)
        entries = _entries(json_path, parts)
        assert s.num_images == len(entries) == sum(SIZES[ds][p] for p in parts)
        assert len(s) == 5 * s.num_images and s.num_anns == 5
        assert np.array_equal(s.caption_image, np.repeat(np.arange(s.num_images), 5))
        assert s.captions == [x["raw"].strip() for e in entries for x in e["sentences"][:5]]
        assert all(c == c.strip() and c for c in s.captions)
        assert s.pair_keys == [str(x["sentid"]) for e in entries for x in e["sentences"][:5]]
        want_ids = [str(e["cocoid"]) if ds == "coco" else e["filename"] for e in entries]
        assert s.image_ids == want_ids
        assert [p.name for p in s.image_paths] == [e["filename"] for e in entries]
        assert all(p.is_file() for p in s.image_paths)
        assert s.caps_file == json_path
    counts = karpathy_counts(json_path)
    assert counts["dataset"] == ds
    assert {k: v["images"] for k, v in counts["splits"].items()} == {
        k: sum(SIZES[ds][p] for p in parts) for k, parts in OURS[ds].items()}
    assert counts["json_splits"]["train"]["sentences"] == sum(sent_counts[i] for i, e in enumerate(raw["images"])
                                                              if e["split"] == "train")


def test_coco_train_is_train_then_restval_with_original_names(karpathy_roots):
    root, json_path = karpathy_roots["coco"]
    s = read_karpathy_split(json_path, root, "coco", "train")
    n = SIZES["coco"]["train"]
    assert all(p.parent == root / "train2014" and p.name.startswith("COCO_train2014_") for p in s.image_paths[:n])
    assert all(p.parent == root / "val2014" and p.name.startswith("COCO_val2014_") for p in s.image_paths[n:])
    assert s.image_paths[0].name == f"COCO_train2014_{int(s.image_ids[0]):012d}.jpg"
    # the keys travel with subsets, and an evaluation error names the image by its id and keys
    sub = s.subset_images(3).without_images([1])
    assert sub.pair_keys == s.pair_keys[:5] + s.pair_keys[10:15]
    assert sub.image_ids == [s.image_ids[0], s.image_ids[2]]
    labels = ", ".join("sentid " + k for k in s.pair_keys[10:15])
    assert sub.describe_image(1) == f"train split, image {s.image_ids[2]} of {json_path} ({labels})"


def _linked_images(root, folder):
    """``folder/`` holding the tiny Flickr30K's images (hard links), for a test that changes or moves them."""
    folder.mkdir(parents=True)
    for p in (root / "flickr30k-images").iterdir():
        os.link(p, folder / p.name)
    return folder


def test_flickr_images_folder_may_be_images(karpathy_roots, tmp_path):
    root, json_path = karpathy_roots["f30k"]
    moved = tmp_path / "f30k"
    _linked_images(root, moved / "images")
    s = read_karpathy_split(json_path, moved, "f30k", "test")
    assert all(p.parent == moved / "images" for p in s.image_paths)


@pytest.mark.parametrize("ds", ["coco", "f30k"])
def test_release_layout_gives_the_same_splits(karpathy_roots, tmp_path, ds):
    root, json_path = karpathy_roots[ds]
    out = write_release_layout_from_karpathy(json_path, root, tmp_path / "release")
    ann = out / "annotations" / "scan_split"
    n_train = sum(SIZES[ds][p] for p in OURS[ds]["train"])
    assert len((ann / "train_ids.txt").read_text().splitlines()) == n_train           # one id per image
    assert len((ann / "test_ids.txt").read_text().splitlines()) == 5 * SIZES[ds]["test"]  # one per caption
    if ds == "coco":
        assert all(p.name.startswith("COCO_2014_") for p in (out / "images").iterdir())
    else:
        assert (ann / "image_name.txt").is_file()
    for split in ("train", "dev", "test"):
        a = read_karpathy_split(json_path, root, ds, split)
        b = load_split(out, ds, split)
        assert b.captions == a.captions
        assert np.array_equal(b.caption_image, a.caption_image)
        assert [_sha(p) for p in b.image_paths] == [_sha(p) for p in a.image_paths]
        assert len(set(_sha(p) for p in a.image_paths)) == a.num_images  # the comparison can tell images apart


def _edited(karpathy_roots, tmp_path, ds, edit):
    root, json_path = karpathy_roots[ds]
    data = json.loads(json_path.read_text())
    edit(data)
    bad = tmp_path / json_path.name
    bad.write_text(json.dumps(data))
    return root, bad, data


def test_an_image_with_four_sentences_is_named(karpathy_roots, tmp_path):
    def cut(data):
        e = next(e for e in data["images"] if e["split"] == "val")
        e["sentences"] = e["sentences"][:4]
        data["cut"] = e
    root, bad, data = _edited(karpathy_roots, tmp_path, "coco", cut)
    e = data["cut"]
    with pytest.raises(DataError) as err:
        read_karpathy_split(bad, root, "coco", "dev")
    msg = str(err.value)
    assert str(bad) in msg and f"imgid {e['imgid']}" in msg and e["filename"] in msg and "4 sentence" in msg
    assert f"images[{data['images'].index(e)}]" in msg
    read_karpathy_split(bad, root, "coco", "test")  # other splits are unaffected
    assert karpathy_counts(bad)["splits"]["dev"]["num_short"] == 1


@pytest.mark.parametrize("field", ["filename", "sentences", "cocoid", "filepath", "split"])
def test_a_missing_field_is_named(karpathy_roots, tmp_path, field):
    def drop(data):
        e = next(e for e in data["images"] if e["split"] == "test")
        del e[field]
        data["index"] = data["images"].index(e)
    root, bad, data = _edited(karpathy_roots, tmp_path, "coco", drop)
    with pytest.raises(DataError) as err:
        read_karpathy_split(bad, root, "coco", "test")
    msg = str(err.value)
    assert f"{bad}, images[{data['index']}]" in msg and f"no field {field!r}" in msg


def test_a_sentence_without_raw_and_a_wrong_file(karpathy_roots, tmp_path):
    def drop(data):
        del data["images"][0]["sentences"][2]["raw"]
    root, bad, data = _edited(karpathy_roots, tmp_path, "f30k", drop)
    split = {"train": "train", "val": "dev", "test": "test"}[data["images"][0]["split"]]
    with pytest.raises(DataError, match=r"images\[0\] \(imgid 0, filename .*'raw'"):
        read_karpathy_split(bad, root, "f30k", split)
    with pytest.raises(DataError, match="flickr30k split file"):
        read_karpathy_split(bad, root, "coco", "test")
    (tmp_path / "x.json").write_text('{"annotations": []}')
    with pytest.raises(DataError, match="\"images\" list"):
        read_karpathy_split(tmp_path / "x.json", root, "f30k", "test")
    with pytest.raises(DataError, match="not 'val'"):
        read_karpathy_split(bad, root, "f30k", "val")


def test_a_missing_image_is_named_with_its_entry(karpathy_roots, tmp_path):
    root, json_path = karpathy_roots["f30k"]
    copy = tmp_path / "f30k"
    _linked_images(root, copy / "flickr30k-images")
    entry = _entries(json_path, ["val"])[2]
    (copy / "flickr30k-images" / entry["filename"]).unlink()
    with pytest.raises(DataError) as err:
        read_karpathy_split(json_path, copy, "f30k", "dev")
    msg = str(err.value)
    assert "1 of 4 image files" in msg and str(copy / "flickr30k-images" / entry["filename"]) in msg
    assert f"imgid {entry['imgid']}" in msg
    s = read_karpathy_split(json_path, copy, "f30k", "dev", check_images=False)
    assert s.num_images == 4


def test_the_file_is_parsed_once(karpathy_roots, monkeypatch):
    import npc.sources.karpathy as k

    root, json_path = karpathy_roots["coco"]
    read_karpathy_split(json_path, root, "coco", "test")
    calls = []
    real = json.load
    monkeypatch.setattr(k.json, "load", lambda f: calls.append(1) or real(f))
    for split in ("train", "dev", "test"):
        read_karpathy_split(json_path, root, "coco", split)
    assert calls == []
    os.utime(json_path, ns=(0, 12345))  # a changed file is read again
    read_karpathy_split(json_path, root, "coco", "test")
    assert calls == [1]
