"""MSCOCO and Flickr30K as Karpathy's split files hold them, through a whole run: training with the
release's defaults and only the dataset's and the tiny model's flags, the same pairs as the release's
layout of the same data, and a release checkpoint evaluated on a Karpathy-read test split."""
import hashlib
import json

import numpy as np
import pytest
import torch

import main_CLIP
import main_NPC
from npc.config import DataConfig
from npc.sources import source_for
from npc.synthetic.karpathy import write_karpathy_dataset, write_release_layout_from_karpathy

# 60 training images x 5 captions: at least one batch of the release's 256; dev and test small.
SIZES = {"coco": {"train": 40, "restval": 20, "val": 6, "test": 8},
         "f30k": {"train": 60, "val": 6, "test": 8}}
TINY_MODEL = ["--vision_model", "npc-micro", "--pretrained", "none"]


@pytest.fixture(scope="module")
def karpathy(tmp_path_factory):
    out = {}
    for ds in SIZES:
        root = tmp_path_factory.mktemp(f"karpathy_{ds}")
        out[ds] = (root, write_karpathy_dataset(root, ds, SIZES[ds], seed=5))
    return out


@pytest.mark.parametrize("dataset", ["coco", "f30k"])
@pytest.mark.parametrize("script, method", [(main_CLIP, "clip"), (main_NPC, "npc_paper")])
def test_a_karpathy_folder_trains_and_evaluates_with_only_the_dataset_flags(karpathy, dataset, script, method,
                                                                          tmp_path, capsys):
    root, _ = karpathy[dataset]
    logs = tmp_path / "logs"
    result = script.main(["--dataset", dataset, "--dataset_root", str(root), *TINY_MODEL, "--logs_dir", str(logs),
                          "--experiments", "k"])
    assert result["method"] == method and result["results"]["test"]["images"] == SIZES[dataset]["test"]
    log = (logs / "k" / "log.txt").read_text()
    assert f"data: {dataset} read from Karpathy's split file {root}" in log
    params = (logs / "k" / "params.txt").read_text()
    assert "data.data_format: karpathy" in params and "optim.batch_size: 256" in params  # the release's defaults
    if method == "npc_paper":  # the bank of a Karpathy-read split lives beside the JSON's derived files
        assert list((root / "annotations" / "karpathy" / "memory_bank").glob("0_mbank_*"))


def _image_digest(split, i):
    return hashlib.sha256(split.image_paths[i].read_bytes()).hexdigest()


@pytest.mark.parametrize("dataset", ["coco", "f30k"])
def test_the_same_data_in_the_releases_layout_gives_the_same_noisy_pairs(karpathy, dataset, tmp_path):
    root, json_path = karpathy[dataset]
    release = write_release_layout_from_karpathy(json_path, root, tmp_path / "release")
    sources = {fmt: source_for(DataConfig(dataset=dataset, dataset_root=str(r), num_anns=5, noise_ratio=0.4))
               for fmt, r in (("karpathy", root), ("release", release))}
    assert {f: s.format for f, s in sources.items()} == {"karpathy": "karpathy", "release": "release"}
    train = {f: s.load_train(log=lambda *_: None) for f, s in sources.items()}
    (a, mask_a), (b, mask_b) = train["karpathy"], train["release"]
    assert a.captions == b.captions and np.array_equal(a.caption_image, b.caption_image)
    assert np.array_equal(mask_a, mask_b) and 0 < mask_a.sum() < len(mask_a)
    assert [_image_digest(a, i) for i in range(a.num_images)] == [_image_digest(b, i) for i in range(b.num_images)]
    assert a.key_name == "sentid" and a.keys[0].isdigit() and (b.key_name, b.keys[0]) == ("line", "1")
    for split in ("dev", "test"):
        x, y = (sources[f].load_split(split) for f in ("karpathy", "release"))
        assert x.captions == y.captions and [_image_digest(x, i) for i in range(x.num_images)] == \
            [_image_digest(y, i) for i in range(y.num_images)]


def test_a_release_checkpoint_evaluates_on_a_karpathy_read_test_split(karpathy, tmp_path):
    from npc.model import create_model

    root, json_path = karpathy["coco"]
    torch.manual_seed(0)
    model, _, _ = create_model("npc-micro", "none")
    sd = {f"module.{k}": v.half() for k, v in model.state_dict().items()}  # the release's fp16, DataParallel names
    path = tmp_path / "npc_coco_0.2.pth"
    torch.save({"epoch": 4, "name": "ViT-B/32", "state_dict": sd, "optimizer": {}}, path)
    release = write_release_layout_from_karpathy(json_path, root, tmp_path / "release")
    tables = {}
    for name, r in (("karpathy", root), ("release", release)):
        res = main_NPC.main(["--dataset", "coco", "--dataset_root", str(r), "--eval", "--resume", str(path),
                             *TINY_MODEL, "--logs_dir", str(tmp_path / "logs"), "--experiments", f"e_{name}"])
        tables[name] = res["results"]
    assert tables["karpathy"] == tables["release"]  # the same pairs, the same scores, the same table
    assert json.loads((tmp_path / "logs" / "e_karpathy" / "eval_results.json").read_text())["results"]["test"]
