"""The data module: layout, file naming, validation errors, batch assembly, sharded sampling."""
import numpy as np
import pytest
import torch
from PIL import Image

from npc import data
from npc import loaders


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _make_dataset(root, dataset, ids, num_anns, names, split="test", image_table=None):
    ann = root / "annotations" / "scan_split"
    caps = [f"caption {k * num_anns + i} of image {img}" for k, img in enumerate(ids) for i in range(num_anns)]
    _write(ann / f"{split}_caps.txt", caps)
    id_lines = ids if split == "train" else [i for i in ids for _ in range(num_anns)]
    _write(ann / f"{split}_ids.txt", id_lines)
    if image_table is not None:
        _write(ann / "image_name.txt", image_table)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "images" / n)


def test_file_naming_coco(tmp_path):
    _make_dataset(tmp_path, "coco", ["9", "123456"], 5, ["COCO_2014_000000000009.jpg", "COCO_2014_000000123456.jpg"])
    split = data.load_split(tmp_path, "coco", "test")
    assert [p.name for p in split.image_paths] == ["COCO_2014_000000000009.jpg", "COCO_2014_000000123456.jpg"]
    assert split.caption_image.tolist() == [0] * 5 + [1] * 5


def test_file_naming_f30k_uses_image_name_table(tmp_path):
    table = ["1000092795.jpg", "10002456.jpg", "1000268201.jpg"]
    _make_dataset(tmp_path, "f30k", ["2", "0"], 5, ["1000268201.jpg", "1000092795.jpg"], image_table=table)
    split = data.load_split(tmp_path, "f30k", "test")
    assert [p.name for p in split.image_paths] == ["1000268201.jpg", "1000092795.jpg"]


def test_file_naming_cc_string_ids_one_caption(tmp_path):
    _make_dataset(tmp_path, "cc", ["abc_1", "x9"], 1, ["abc_1.jpg", "x9.jpg"])
    split = data.load_split(tmp_path, "cc", "test")
    assert split.num_anns == 1 and split.image_ids == ["abc_1", "x9"]
    assert [p.name for p in split.image_paths] == ["abc_1.jpg", "x9.jpg"]


def test_train_ids_are_per_image(tmp_path):
    _make_dataset(tmp_path, "coco", ["1", "2", "3"], 5, [f"COCO_2014_{i:012d}.jpg" for i in (1, 2, 3)], split="train")
    split = data.load_split(tmp_path, "coco", "train")
    assert len(split) == 15 and split.num_images == 3
    assert split.caption_image[10:].tolist() == [2] * 5


def test_count_mismatch_names_both_files(tmp_path):
    _make_dataset(tmp_path, "coco", ["1", "2"], 5, [f"COCO_2014_{i:012d}.jpg" for i in (1, 2)])
    caps = tmp_path / "annotations" / "scan_split" / "test_caps.txt"
    caps.write_text(caps.read_text() + "one caption too many\n")
    with pytest.raises(data.DataError, match=r"test_caps\.txt has 11 captions.*test_ids\.txt has 10"):
        data.load_split(tmp_path, "coco", "test")


def test_broken_id_runs_name_the_line(tmp_path):
    _make_dataset(tmp_path, "coco", ["1", "2"], 5, [f"COCO_2014_{i:012d}.jpg" for i in (1, 2)])
    ids = tmp_path / "annotations" / "scan_split" / "test_ids.txt"
    lines = ids.read_text().splitlines()
    lines[7] = "1"
    ids.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match="line 6"):
        data.load_split(tmp_path, "coco", "test")


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test_caps\.txt"):
        data.load_split(tmp_path, "coco", "test")


def test_missing_images_reports_count_and_examples(tmp_path):
    ids = [str(i) for i in range(1, 9)]
    _make_dataset(tmp_path, "coco", ids, 5, ["COCO_2014_000000000001.jpg"])
    with pytest.raises(data.DataError, match=r"7 of 8 image files are missing") as e:
        data.load_split(tmp_path, "coco", "test")
    assert "COCO_2014_000000000002.jpg" in str(e.value)
    assert str(e.value).count(".jpg") == 5  # the first few, not all


def test_unreadable_image_names_the_file(tmp_path):
    _make_dataset(tmp_path, "coco", ["1"], 5, ["COCO_2014_000000000001.jpg"])
    bad = tmp_path / "images" / "COCO_2014_000000000001.jpg"
    bad.write_bytes(b"not a jpeg")
    split = data.load_split(tmp_path, "coco", "test")
    with pytest.raises(data.DataError, match="cannot read image .*COCO_2014_000000000001.jpg"):
        loaders.load_image(split.image_paths[0], lambda im: im)


def test_unknown_dataset():
    from npc.sources import dataset_definition

    with pytest.raises(data.DataError, match="unknown dataset 'mscoco'"):
        dataset_definition("mscoco")


def _identity_tokenizer(captions):
    return torch.tensor([[int(c.split()[1]), int(c.split()[-1])] for c in captions])


def test_pair_batches_dedup_and_positions(tmp_path):
    ids = [str(i) for i in range(1, 5)]
    _make_dataset(tmp_path, "coco", ids, 5, [f"COCO_2014_{i:012d}.jpg" for i in range(1, 5)], split="train")
    split = data.load_split(tmp_path, "coco", "train")
    # The image each pair shows is encoded in a pixel so positions can be checked.
    pre = lambda im: torch.tensor(np.asarray(im, dtype=np.float32)[0, 0] / 40)  # noqa: E731
    for k, p in enumerate(split.image_paths):
        Image.new("RGB", (4, 4), (k * 40, 0, 0)).save(p, format="PNG")  # lossless, despite the .jpg name
    bank = loaders.BankIndex(image_bank=np.array([5, 5, 0, 19]), text_bank=np.arange(20)[::-1].copy())
    ds = loaders.PairBatches(split, pre, _identity_tokenizer, bank)
    b = ds[[0, 1, 6, 12]]
    assert len(b["images"]) == len(torch.unique(b["images"][:, 0]))  # each image once
    for group in ("pair", "bankI", "bankT"):
        img_of = b["images"][b[f"{group}_img"], 0].long()
        txt_caption = b["texts"][b[f"{group}_txt"], 0]
        # every pair's image is the image of its caption
        assert img_of.tolist() == [split.caption_image[c] for c in txt_caption.tolist()]
    assert b["texts"][b["pair_txt"], 0].tolist() == [0, 1, 6, 12]
    assert b["texts"][b["bankI_txt"], 0].tolist() == [5, 5, 5, 0]
    assert b["texts"][b["bankT_txt"], 0].tolist() == [19, 18, 13, 7]


def test_sampler_shards_are_the_single_process_batch():
    single = list(loaders.EpochBatchSampler(103, 8, seed=5))
    shards = [list(loaders.EpochBatchSampler(103, 8, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == 12
    for k, batch in enumerate(single):
        assert shards[0][k] + shards[1][k] == batch
    s = loaders.EpochBatchSampler(103, 8, seed=5)
    s.set_epoch(1)
    assert list(s) != single


def test_demo_dataset_passes_validation(demo_root):
    for split in ("pretrain", "train", "dev", "test"):
        s = data.load_split(demo_root, "demo", split)
        assert len(s) == 5 * s.num_images
