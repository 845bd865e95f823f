"""Evaluation at MSCOCO 5K's size, from JPEG files and from the image cache, and image loading with
several worker processes.

    python bench/eval_speed.py --json                     # GPU: ViT-B/32, 5,000 images x 25,000 captions
    python bench/eval_speed.py --images 200 --model npc-tiny --workers 0,2    # a CPU check

The images are generated 640x480 JPEGs (about 155 KiB each, like MSCOCO's; ``throughput.py``'s
generator), 5 synthetic captions each (random words, about ten a caption, like MSCOCO's). Random
weights: the speed of encoding and ranking does not depend on them. Reported, in seconds:

* ``eval_jpeg_s``: the project's evaluation path (``npc.evaluation.encode_split`` with the largest
  ``--workers`` count, then ``retrieval_metrics``), JPEG decoding included;
* ``eval_cache_s``: the same from a built image cache (uint8 memmap, normalized on the device);
  ``cache_build_s`` is the one-off cost of building it;
* ``rank_s``: the similarity matrix and recalls (the same for both paths).

Both paths run through ``npc.evaluation.encode_split`` under ``eval_precision``, as ``--eval`` does.

Loading alone (no model): images/s through a ``DataLoader`` with each ``--workers`` count, from the
JPEGs (decode + resize + crop + normalize) and from the cache. The JPEGs were just written, so they
are read from the page cache: a cold disk is slower.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from npc import data
from npc import loaders
from npc.evaluation import EVAL_PRECISIONS, encode_split, eval_precision
from npc.train_utils import resolve_device
from npc.evaluation_metrics import retrieval_metrics
from npc.image_cache import ImageCache
from npc.model import create_model

from npc.reporting import environment
from studylib.paper_images import write_paper_size_jpegs

WORDS = ("a man woman dog cat red blue green small large sitting standing on in next to the table street "
         "grass water field plate of food with two three people riding bike horse holding umbrella near "
         "building car bus train window white black wooden open kitchen room").split()


def synthetic_split(folder: Path, n_images: int, num_anns: int, processes: int) -> data.Split:
    rng = np.random.default_rng(0)
    paths = write_paper_size_jpegs(folder, n_images, processes=processes)
    captions = [" ".join(rng.choice(WORDS, int(rng.integers(8, 14)))) for _ in range(n_images * num_anns)]
    return data.Split(name="test", captions=captions, image_ids=[p.stem for p in paths], image_paths=paths,
                      caption_image=np.repeat(np.arange(n_images), num_anns), num_anns=num_anns)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


class _CacheBatches(torch.utils.data.Dataset):
    """Batches read from the cache, so that worker processes can share the reading."""

    def __init__(self, cache: ImageCache, batch: int):
        self.cache, self.batch = cache, batch

    def __len__(self):
        return (len(self.cache) + self.batch - 1) // self.batch

    def __getitem__(self, k):
        return self.cache(np.arange(k * self.batch, min(len(self.cache), (k + 1) * self.batch)))


def cache_loader(cache: ImageCache, batch: int, workers: int):
    return torch.utils.data.DataLoader(_CacheBatches(cache, batch), batch_size=None, num_workers=workers,
                                       pin_memory=torch.cuda.is_available())


def images_per_s(loader, n: int) -> float:
    t0 = time.perf_counter()
    seen = sum(len(b) for b in loader)
    assert seen == n, (seen, n)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: ViT-B/32 on CUDA, npc-tiny on CPU")
    p.add_argument("--images", type=int, default=5000, help="images (MSCOCO 5K: 5,000)")
    p.add_argument("--num_anns", type=int, default=5, help="captions per image")
    p.add_argument("--batch", type=int, default=256, help="evaluation batch size")
    p.add_argument("--workers", default="8,16", help="comma list of DataLoader worker counts for the loading "
                                                     "measurement; evaluation uses the largest")
    p.add_argument("--precision", default="fp32", choices=EVAL_PRECISIONS,
                   help="evaluation precision, as --eval_precision (the project evaluates in fp32 by default)")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    workers = sorted({int(w) for w in args.workers.split(",") if w})
    device = resolve_device(args.device)
    args.model = args.model or ("ViT-B/32" if device.type == "cuda" else "npc-tiny")
    torch.manual_seed(0)
    model, preprocess, tokenizer = create_model(args.model, "none", device=device)
    model.eval()
    result = {**environment(__file__, argv, device), "model": args.model, "images": args.images,
              "captions": args.images * args.num_anns, "batch": args.batch, "precision": args.precision,
              "eval_workers": workers[-1]}
    with tempfile.TemporaryDirectory() as tmp:
        split, result["generate_s"] = timed(lambda: synthetic_split(Path(tmp), args.images, args.num_anns,
                                                                    os.cpu_count() or 1), torch.device("cpu"))
        result["jpeg_kib"] = round(sum(q.stat().st_size for q in split.image_paths) / args.images / 1024, 1)
        for w in workers:  # loading alone, JPEG path
            loader = loaders.image_loader(split, preprocess, args.batch, w)
            result[f"load_jpeg_images_per_s_{w}w"] = images_per_s(loader, args.images)

        cache, result["cache_build_s"] = timed(
            lambda: ImageCache(Path(tmp) / "cache", "eval", split.image_paths, preprocess, num_workers=workers[-1],
                               progress=False, log=lambda *_: None), torch.device("cpu"))
        for w in workers:  # loading alone, cache path
            result[f"load_cache_images_per_s_{w}w"] = images_per_s(cache_loader(cache, args.batch, w), args.images)

        with eval_precision(model, args.precision, device) as (m, autocast):
            kw = dict(batch_size=args.batch, device=device, autocast=autocast, num_workers=workers[-1], progress=False)
            encode_split(m, split.subset_images(min(args.images, args.batch)), preprocess, tokenizer, **kw)  # warm-up
            (img, txt), enc_s = timed(lambda: encode_split(m, split, preprocess, tokenizer, **kw), device)
            metrics, rank_s = timed(lambda: retrieval_metrics(img @ txt.t(), args.num_anns), device)
            (img_c, txt_c), enc_c_s = timed(lambda: encode_split(
                m, split, preprocess, tokenizer, image_batches=cache_loader(cache, args.batch, workers[-1]), **kw),
                device)
            metrics_c, rank_c_s = timed(lambda: retrieval_metrics(img_c @ txt_c.t(), args.num_anns), device)
        result.update(eval_jpeg_s=enc_s + rank_s, rank_s=rank_s, eval_cache_s=enc_c_s + rank_c_s,
                      cache_max_abs_feature_diff=float((img_c - img).abs().max()), same_metrics=metrics == metrics_c)
    if device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['device']}, {args.model}, {args.images} images x {result['captions']} captions, {args.precision}")
    print(f"evaluation (encode + rank): from JPEGs {result['eval_jpeg_s']:.1f} s ({workers[-1]} workers), from the "
          f"cache {result['eval_cache_s']:.1f} s (built once in {result['cache_build_s']:.1f} s); "
          f"ranking {result['rank_s']:.2f} s")
    for w in workers:
        print(f"loading, {w} workers: JPEG {result[f'load_jpeg_images_per_s_{w}w']:.0f} images/s, "
              f"cache {result[f'load_cache_images_per_s_{w}w']:.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
