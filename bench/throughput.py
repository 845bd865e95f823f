"""Throughput of the training step (CLIP, naive NPC, efficient NPC) and of batch loading, side by side.

    python bench/throughput.py                       # CPU, npc-tiny, batch 128 (under two minutes here)
    python bench/throughput.py --model ViT-B/32 --batch 256 --precision amp_bf16 --json   # on a GPU
    python bench/throughput.py --model ViT-B/32 --batch 64 --kinds text_open_clip,text --no_loading

Steps run with random weights and pixels (speed does not depend on them) on the demo's captions
(or caption-shaped random tokens with ``--bank_self``: their lengths matter), interleaved
(CLIP, naive NPC, efficient NPC paper variant, efficient NPC release variant, NPC with the
first-order estimator (``--npc_estimator first_order``), CLIP, ...) so that
machine noise hits all of them alike; the table reports the median over rounds and the cost
ratios to the CLIP step. ``npc`` is the default training step (``--npc_variant paper --npc_impl
efficient``). A last pass reports the time of each named phase of the steps (synchronized on CUDA).
The text tower alone (forward + backward on the batch's captions) is timed through open_clip's
``encode_text``, which runs every position of the context, and through ``npc.model``'s, which stops
at the longest caption. ``--kinds`` selects what to time, e.g. ``--model ViT-B/32 --kinds
text_open_clip,text`` for the text towers of the paper's model on a CPU.

The batch has the structure of a real one (which bank entries are the pair itself, which are
shared): its positions come from the demo's 40%-noise memory bank, where 99% of image-side entries
show the pair's own image (mostly with another of its captions: the image-side bank holds one pair
per image) and 60% of text-side entries are the pair itself (``self_*_fraction`` in
``_mbank_info.json``); the efficient step encodes such duplicates once. ``--bank_self F`` uses a
synthetic bank instead, in which a fraction F of the entries is the pair itself.

Loading is measured on the demo dataset (generated if missing) with a memory bank: NPC batches
(pairs + bank pairs) from JPEG files through PIL, and from the preprocessed ``--image_cache``.
Peak memory: per step kind on CUDA (``max_memory_allocated``); on CPU only the process's peak RSS.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from npc.train_utils import autocast_for, make_optimizer, resolve_device, resolve_precision
from npc.model import compile_towers, create_model, encode_text_parts
from npc import loaders, methods
from npc.steps import train_step

from npc.reporting import REPO, environment
from studylib.paper_images import write_paper_size_jpegs


KINDS = ["clip", "npc_naive", "npc", "npc_release", "npc_first_order", "text_open_clip", "text"]
STEPS = ("npc_naive", "npc", "npc_release", "npc_first_order")  # timed against the CLIP step


def synthetic_captions(n: int, context: int, rng) -> torch.Tensor:
    """Token rows shaped like tokenized captions: start, 8 to 24 random word tokens, end, padding."""
    sot, eot = 49406, 49407  # CLIP's BPE start/end-of-text ids
    out = torch.zeros(n, context, dtype=torch.long)
    for row, n_words in zip(out, rng.integers(8, 25, n)):
        n_words = min(int(n_words), context - 2)
        row[0], row[n_words + 1] = sot, eot
        row[1:n_words + 1] = torch.from_numpy(rng.integers(1, 40000, n_words))
    return out


def synthetic_batch(b: int, image_size: int, context: int, bank_self: float, device, seed: int = 0):
    """B pairs and their bank pairs; a fraction ``bank_self`` of bank entries are the pair itself."""
    g = np.random.default_rng(seed)
    n_extra = 2 * b
    images = torch.randn(b + n_extra, 3, image_size, image_size)
    texts = synthetic_captions(b + n_extra, context, g)
    batch = {"images": images, "texts": texts, "pair_img": torch.arange(b), "pair_txt": torch.arange(b),
             "index": torch.arange(b)}
    for k, group in enumerate(("bankI", "bankT")):
        own = g.random(b) < bank_self
        pos = np.where(own, np.arange(b), b + k * b + np.arange(b))
        batch[f"{group}_img"] = torch.from_numpy(pos)
        batch[f"{group}_txt"] = torch.from_numpy(pos)
    return {k: v.to(device) for k, v in batch.items()}


def demo_bank_batch(b: int, image_size: int, tokenizer, device, seed: int = 0):
    """A batch with the dedup structure of a real one: positions from the demo's 40%-noise bank.

    The captions are the demo's, tokenized for the model (their lengths matter: the text tower
    stops at the longest one); the pixels are random at the model's input size.
    """
    from npc import data
    from npc import loaders
    from npc import memory_bank as mb

    root = REPO / "dataset" / "demo"
    split, _ = data.load_train_split(root, "demo", 5, 0.4, log=lambda *_: None, check_images=False)
    bank = mb.load_bank(data.memory_bank_dir(root), 0.4, split)
    ds = loaders.PairBatches(split, None, tokenizer, bank,
                          image_source=lambda idx: torch.zeros(len(idx), 3, image_size, image_size))
    rng = np.random.default_rng(seed)
    batch = ds[rng.choice(len(split), b, replace=False).tolist()]
    batch["images"] = torch.randn(batch["images"].shape)
    return {k: v.to(device) for k, v in batch.items()}


def time_steps(args, device) -> dict:
    torch.manual_seed(0)
    precision = resolve_precision(args.precision, device)
    model, _, tokenizer = create_model(args.model, "none", precision=precision, device=device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    bank_file = REPO / "dataset" / "demo" / "annotations" / "memory_bank" / "0.4_mbank_img_idx.npy"
    if args.bank_self is None and not bank_file.is_file():
        print(f"no demo bank at {bank_file} (run `python main_NPC.py` once): using --bank_self 0.8")
        args.bank_self = 0.8
    if args.bank_self is None:
        batch = demo_bank_batch(args.batch, size, tokenizer, device)
    else:
        batch = synthetic_batch(args.batch, size, model.context_length, args.bank_self, device)
    args.distinct_images, args.distinct_texts = (
        len(torch.unique(torch.cat([batch[f"{g}_{kind}"] for g in ("pair", "bankI", "bankT")]))) for kind in ("img", "txt"))
    siamese = copy.deepcopy(model)
    if args.torchcompile:
        for m in (model, siamese):
            compile_towers(m)
    opt = make_optimizer(model, 1e-5, 0.9, 0.98, 1e-6, 0.2)
    sopt = make_optimizer(siamese, 1e-5, 0.9, 0.98, 1e-6, 0.2)
    autocast = autocast_for(precision, device)

    def step_of(method, options=None):
        """The training step of a method by name (its estimator on the shared siamese copy and optimizer)."""
        m = methods.compose(methods.get_method(method), options=options)
        est = m.build_estimator()
        if hasattr(est, "attach_siamese"):
            est.attach_siamese(siamese, sopt)
        return lambda: train_step(model, opt, batch, est, m.objective, autocast=autocast, reweight=m.reweight)

    kinds = {
        "clip": step_of("clip"),
        "npc_naive": step_of("npc_paper", {"impl": "naive"}),
        "npc": step_of("npc_paper"),
        "npc_release": step_of("npc_release"),
        # the first-order estimator (paper objective): no siamese; weights from feature gradients
        "npc_first_order": step_of("npc_first_order"),
        # The text tower alone, forward + backward on the batch's captions: open_clip's encode_text
        # (every position) against npc.model's (up to the longest caption).
        "text_open_clip": lambda: text_pass(lambda t: F.normalize(model.encode_text(t), dim=-1)),
        "text": lambda: text_pass(lambda t: encode_text_parts(model, t)[0]),
    }
    unknown = set(args.kinds) - set(kinds)
    if unknown:
        raise SystemExit(f"--kinds: unknown {sorted(unknown)}; choose from {sorted(kinds)}")
    kinds = {k: fn for k, fn in kinds.items() if k in args.kinds}
    texts = batch["texts"][batch["pair_txt"]]

    def text_pass(encode_fn):
        model.zero_grad(set_to_none=True)
        with autocast():
            feats = encode_fn(texts)
        feats.float().sum().backward()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for fn in kinds.values():  # warm-up (allocator, compile)
        for _ in range(args.warmup):
            fn()
    sync()
    times = {k: [] for k in kinds}
    peak = {}
    for _ in range(args.rounds):
        for k, fn in kinds.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            sync()
            times[k].append((time.perf_counter() - t0) / args.steps)
            if device.type == "cuda":
                peak[k] = max(peak.get(k, 0), torch.cuda.max_memory_allocated() / 2 ** 20)
    out = {"precision": precision}
    for k, ts in times.items():
        out[f"{k}_pairs_per_s"] = args.batch / statistics.median(ts)
        if k in peak:
            out[f"{k}_peak_mib"] = round(peak[k])
    for k in STEPS:
        if k in kinds and "clip" in kinds:
            out[f"{k}_over_clip"] = out["clip_pairs_per_s"] / out[f"{k}_pairs_per_s"]
    if "text" in kinds and "text_open_clip" in kinds:
        out["text_speedup"] = out["text_pairs_per_s"] / out["text_open_clip_pairs_per_s"]
        out["text_positions_used"] = int(texts.argmax(-1).max()) + 1
        out["text_context"] = texts.shape[1]
    out["phases_ms"] = time_phases({k: kinds[k] for k in ("clip", "npc", "npc_release", "npc_first_order")
                                    if k in kinds}, args.steps)
    return out


def time_phases(kinds: dict, steps: int) -> dict:
    """Milliseconds per step in each named phase of the steps (``phase`` in npc/negative_impact.py)."""
    from npc.negative_impact import phase_timings

    out = {}
    for kind, fn in kinds.items():
        with phase_timings() as times:
            for _ in range(steps):
                fn()
        out[kind] = {name: round(1000 * statistics.median(ts), 2) for name, ts in times.items()}
    return out


def time_loading(args) -> dict:
    from npc import data
    from npc import memory_bank as mb
    from npc.demo import ensure_demo_data
    from npc.image_cache import ImageCache

    root = REPO / "dataset" / "demo"
    ensure_demo_data(root, progress=False)
    _, preprocess, tokenizer = create_model("npc-tiny", "none")
    split, _ = data.load_train_split(root, "demo", 5, 0.4, log=lambda *_: None)
    bank_dir = data.memory_bank_dir(root)
    if mb.bank_paths(bank_dir, 0.4)[0].is_file():
        bank = mb.load_bank(bank_dir, 0.4, split)
    else:  # a stand-in bank with the typical share of self entries
        rng = np.random.default_rng(0)
        bank = loaders.BankIndex(rng.integers(0, len(split), split.num_images), rng.integers(0, len(split), len(split)))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = ImageCache(tmp, "train", split.image_paths, preprocess, num_workers=0, progress=False,
                           log=lambda *_: None)
        sources = {"pil": None, "cache": cache}
        rng = np.random.default_rng(1)
        batches = [rng.choice(len(split), args.batch, replace=False).tolist() for _ in range(args.load_batches)]
        for name, src in sources.items():
            ds = loaders.PairBatches(split, preprocess, tokenizer, bank, image_source=src)
            ds[batches[0]]
            t0 = time.perf_counter()
            n_images = 0
            for b in batches:
                n_images += len(ds[b]["images"])
            dt = time.perf_counter() - t0
            out[f"load_{name}_pairs_per_s_1proc"] = args.batch * len(batches) / dt
            out[f"load_{name}_images_per_batch"] = n_images / len(batches)
    return out


def time_loading_paper_size(args) -> dict:
    """Images/s of decoding + CLIP preprocessing at the paper's sizes (640x480 JPEGs to 224 px) in one
    process, through PIL and through the image cache; the demo's images are only 64 px.

    The JPEGs are generated (``write_paper_size_jpegs``; MSCOCO train2014 holds 13 GB over 82,783
    files); decoding cost follows pixel count and size on disk. The cache is read from the page
    cache, as a warm epoch reads it.
    """
    import open_clip

    from npc.image_cache import ImageCache

    preprocess = open_clip.image_transform(224, is_train=False)
    rng = np.random.default_rng(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_paper_size_jpegs(Path(tmp), args.load_images)
        out["paper_size_jpeg_kib"] = round(sum(p.stat().st_size for p in paths) / len(paths) / 1024, 1)
        t0 = time.perf_counter()
        for p in paths:
            loaders.load_image(p, preprocess)
        out["load_pil_224_images_per_s_1proc"] = len(paths) / (time.perf_counter() - t0)
        cache = ImageCache(Path(tmp) / "cache", "paper_size", paths, preprocess, num_workers=0, progress=False,
                           log=lambda *_: None)
        batches = [rng.choice(len(paths), min(len(paths), 170), replace=False) for _ in range(20)]
        t0 = time.perf_counter()
        n = sum(len(cache(b)) for b in batches)
        out["load_cache_224_images_per_s_1proc"] = n / (time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: npc-tiny on CPU, ViT-B/32 on CUDA")
    p.add_argument("--batch", type=int, default=None, help="default: 128 on CPU, 256 on CUDA")
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default=None, choices=("fp32", "amp_bf16", "fp16"))
    p.add_argument("--bank_self", type=float, default=None,
                   help="synthetic bank in which this fraction of entries is the pair itself (default: the "
                        "structure of the demo's real 40%%-noise bank, built by `python main_NPC.py`)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per round and kind")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--load_batches", type=int, default=10)
    p.add_argument("--kinds", type=lambda t: [k for k in t.split(",") if k], default=KINDS,
                   help=f"comma list of what to time (default: all of {','.join(KINDS)})")
    p.add_argument("--torchcompile", action="store_true",
                   help="compile the towers as training's --torchcompile does (warm-up steps absorb compilation)")
    p.add_argument("--load_images", type=int, default=100, help="640x480 JPEGs for the paper-size loading measurement")
    p.add_argument("--no_loading", action="store_true", help="skip the data-loading measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    args.model = args.model or ("ViT-B/32" if device.type == "cuda" else "npc-tiny")
    args.batch = args.batch or (256 if device.type == "cuda" else 128)
    result = {**environment(__file__, argv, device), "model": args.model, "batch": args.batch,
              "bank_self": args.bank_self, "torchcompile": args.torchcompile}
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # keep --json output clean of progress messages
        result.update(time_steps(args, device))
        result["distinct_images_per_batch"] = args.distinct_images
        result["distinct_texts_per_batch"] = args.distinct_texts
        if not args.no_loading:
            result.update(time_loading(args))
            result.update(time_loading_paper_size(args))
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"device {result['device']}, model {args.model}, batch {args.batch}, precision {result['precision']}")
    print(f"{'step':12s} {'pairs/s':>10s} {'cost vs CLIP':>13s}")
    for k in ("clip", *STEPS):
        if f"{k}_pairs_per_s" not in result:
            continue
        ratio = result["clip_pairs_per_s"] / result[f"{k}_pairs_per_s"] if "clip_pairs_per_s" in result else float("nan")
        mem = f"  peak {result[k + '_peak_mib']} MiB" if f"{k}_peak_mib" in result else ""
        print(f"{k:12s} {result[f'{k}_pairs_per_s']:10.0f} {ratio:12.2f}x{mem}")
    if "text_speedup" in result:
        print(f"text tower, forward + backward, captions/s: open_clip {result['text_open_clip_pairs_per_s']:.0f}, "
              f"up to the longest caption ({result['text_positions_used']} of {result['text_context']} positions) "
              f"{result['text_pairs_per_s']:.0f}: {result['text_speedup']:.2f}x")
    for k, phases in result.get("phases_ms", {}).items():
        print(f"{k} phases (median ms/step): " + ", ".join(f"{n} {t:.1f}" for n, t in phases.items()))
    if not args.no_loading:
        for k in ("pil", "cache"):
            print(f"loading NPC batches ({k}, 1 process): {result[f'load_{k}_pairs_per_s_1proc']:.0f} pairs/s "
                  f"({result[f'load_{k}_images_per_batch']:.0f} distinct images per batch of {args.batch})")
    if not args.no_loading:
        print(f"decoding + preprocessing at the paper's size (640x480 JPEG, {result['paper_size_jpeg_kib']} KiB, "
              f"to 224 px), images/s in 1 process: PIL {result['load_pil_224_images_per_s_1proc']:.0f}, "
              f"cache {result['load_cache_224_images_per_s_1proc']:.0f}")
    print(f"peak RSS {result['peak_rss_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
