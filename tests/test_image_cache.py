"""The preprocessed image cache: same pixels as the PIL path, reused, rebuilt when the source changes."""
import os

import torch

from npc import data
from npc import loaders
from npc.image_cache import ImageCache, normalize_uint8
from npc.model import create_model


def test_cache_matches_pil_path_and_is_rebuilt_on_change(fresh_root, tmp_path):
    _, preprocess, _ = create_model("npc-micro", "none")  # 32 px: the 64 px demo images are resized
    split = data.load_split(fresh_root, "demo", "test")
    messages = []
    cache = ImageCache(tmp_path / "cache", "test", split.image_paths, preprocess, num_workers=0, progress=False,
                       log=messages.append)
    assert "building" in messages[-1] and len(cache) == split.num_images
    idx = [3, 0, 7]
    pil = torch.stack([loaders.load_image(split.image_paths[i], preprocess) for i in idx])
    cached = normalize_uint8(cache(idx), *(preprocess.transforms[-1].mean, preprocess.transforms[-1].std))
    # uint8 storage rounds the resized pixels: at most half a grey level, i.e. 0.5/255/std after normalizing
    assert (cached - pil).abs().max() <= 0.5 / 255 / 0.26 + 1e-6
    ImageCache(tmp_path / "cache", "test", split.image_paths, preprocess, num_workers=0, progress=False,
               log=messages.append)
    assert "reusing" in messages[-1]
    st = os.stat(split.image_paths[0])
    os.utime(split.image_paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    ImageCache(tmp_path / "cache", "test", split.image_paths, preprocess, num_workers=0, progress=False,
               log=messages.append)
    assert "source changed" in messages[-1]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]


def test_training_with_cache_runs(fresh_root, base_dir, tmp_path):
    import main_NPC
    from helpers import run_args

    res = main_NPC.main(run_args(fresh_root, base_dir, tmp_path / "logs", "--epochs", "1", "--experiments", "c",
                                 "--image_cache", str(tmp_path / "cache")))
    assert (tmp_path / "cache" / "demo_train.u8").is_file()
    assert next(iter(res["results"].values()))["rsum"] > 0
