"""Regime study: does the demo's zero-shot noise detection reach CLIP's on MSCOCO, and what do NPC's weights score there?

The only outside measurement of NPC's weights (OSA, Li et al., arXiv 2410.01944, Tables 9-10:
CLIP ViT-B/32 on MSCOCO) finds them informative (ROC-AUC about 0.89 / 0.94 at 20% / 50% noise)
while zero-shot CLIP separates noisy pairs almost perfectly; on the demo NPC's shipped siamese
weights are at chance. This study measures, on the demo (``dataset/demo``, the train split with
the release's caption-shuffle noise):

``detection``  for each base model (``--bases``: pretraining budget, model size, caption style and
               size of the pretraining split), its test rsum and, over all 10,000 training pairs,
               the ROC-AUC (clean = positive) and OSA Table 9's mean noise rank of (i) the pair's
               cosine similarity, (ii) the GMM's p(clean) of NPC's memory bank (built here from
               this base, as main_NPC.py would: batch 128, bank seed 99, threshold 0.9), (iii)
               OSA's debiased logit ``diag - shift`` (a monotonic map of the cosine: same ranking)
               and its training weight ``x^2 (1 - x^2)`` on the batches of seed 0 (``npc.osa``), and
               OSA Table 10's two rates at threshold 0 of the debiased logit.
``npc``        NPC's per-pair weights on the first ``--pairs`` training pairs (seed 0 batches) with
               the base held fixed (A's optimizer has lr 0, as bench/negative_impact_study.py
               reads them), A''s AdamW state persistent from empty, under regimes (``--regimes``):
               the shipped demo step (fp32, lr 2e-4, batch 128), batch 256, pure fp16 weights
               (open_clip fp16, AdamW straight on them: the release's regime) at lr 2e-4 and at the
               release's lr 2e-7, fp32 at lr 2e-7, the release variant in fp16 at lr 2e-7 and batch
               256, and the first-order estimator. Also the fraction of A''s weight elements that
               its step changed at all (fp16 rounds small updates away).
``harshness``  how true a noisy caption is of the image it was moved to, from the generator's own
               scenes (``bench/studylib/harshness.py``), against the clean captions.

    python bench/regime_study.py --part harshness --noise 0.2,0.4,0.6
    python bench/regime_study.py --part detection --bases tiny-e6,tiny-e2,tiny-e15 --noise 0.4
    python bench/regime_study.py --part npc --bases tiny-e6 --noise 0.4 --regimes shipped,fp16_lr2e-4
    python bench/regime_study.py --render          # table, verdict and figure from the JSON
    python bench/regime_study.py --render --verdict_file bench/results/regime_study/verdict.md  # store the verdict text

Bases are pretrained on first use into ``pre-trained_models/regime_study/`` (``tiny-e6`` is the
demo's own base, ``pre-trained_models/demo-base_npc-tiny_*.pt``, built by npc.demo when missing);
the seconds each took are recorded. Rows of a (part, base, noise, estimator/regime) already in the
JSON are replaced, the others kept, so the study runs in parts; each row records its command,
device, versions and git commit. Writes ``bench/results/regime_study/regime_study.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from npc import data
from npc import loaders
from npc import memory_bank as mb
from npc import osa
from npc.detection import mean_noise_rank, weight_auc
from npc.io import atomic_write_json, atomic_write_text
from npc.reporting import REPO, environment

RESULTS = REPO / "bench" / "results" / "regime_study"
ROOT = REPO / "dataset" / "demo"
BASE_DIR = REPO / "pre-trained_models" / "regime_study"
CONFIGS = Path(__file__).resolve().parent / "regime_study_configs"

# name -> model config, pretraining epochs (npc.demo.BASE_RECIPE otherwise), pretraining captions
# ("web": the demo's alt-text style; "coco": the train split's style, on the same pretrain images),
# number of pretraining images (4000 = the demo's).
BASES: Dict[str, dict] = {
    "tiny-e6": dict(model="npc-tiny", epochs=6, captions="web", n_pretrain=4000),   # the demo's base
    "tiny-e2": dict(model="npc-tiny", epochs=2, captions="web", n_pretrain=4000),
    "tiny-e15": dict(model="npc-tiny", epochs=15, captions="web", n_pretrain=4000),
    "micro-e6": dict(model="npc-micro", epochs=6, captions="web", n_pretrain=4000),
    "tiny-p8-e6": dict(model="regime-tiny-p8", epochs=6, captions="web", n_pretrain=4000),
    "wide-p8-e6": dict(model="regime-wide-p8", epochs=6, captions="web", n_pretrain=4000),
    "tiny-e6-coco": dict(model="npc-tiny", epochs=6, captions="coco", n_pretrain=4000),
    "tiny-e15-coco": dict(model="npc-tiny", epochs=15, captions="coco", n_pretrain=4000),
    "tiny-e6-x4": dict(model="npc-tiny", epochs=6, captions="web", n_pretrain=16000),
    "tiny-e6-x4-coco": dict(model="npc-tiny", epochs=6, captions="coco", n_pretrain=16000),
    # Not zero-shot: pretrained on the clean captions of the train split itself (an upper bound on
    # what a base can know about the training pairs; shows NPC's weights where detection is near perfect).
    "oracle-e6": dict(model="npc-tiny", epochs=6, captions="train-clean", n_pretrain=2000),
    "oracle-e20": dict(model="npc-tiny", epochs=20, captions="train-clean", n_pretrain=2000),
    "oracle-e40": dict(model="npc-tiny", epochs=40, captions="train-clean", n_pretrain=2000),
}

# name -> siamese regime (variant, precision, lr, batch, estimator, A''s optimizer state). The variant's method
# sets the siamese gradient's scale (npc_release: 4x the mean pair loss's, as the release). fp16: pure fp16
# weights stepped by torch's plain AdamW with fp16 moments, the release's numerics (npc.train_utils.make_optimizer).
REGIMES: Dict[str, dict] = {
    "shipped": dict(variant="paper", precision="fp32", lr=2e-4, batch=128, estimator="siamese"),
    "batch256": dict(variant="paper", precision="fp32", lr=2e-4, batch=256, estimator="siamese"),
    "fp16_lr2e-4": dict(variant="paper", precision="fp16", lr=2e-4, batch=128, estimator="siamese"),
    "fp16_lr2e-7": dict(variant="paper", precision="fp16", lr=2e-7, batch=128, estimator="siamese"),
    "fp32_lr2e-7": dict(variant="paper", precision="fp32", lr=2e-7, batch=128, estimator="siamese"),
    "release_fp16_lr2e-7_b256": dict(variant="release", precision="fp16", lr=2e-7, batch=256, estimator="siamese"),
    "release_fp16_lr5e-7_b256": dict(variant="release", precision="fp16", lr=5e-7, batch=256, estimator="siamese"),
    "release_fp16_lr2e-4_b256": dict(variant="release", precision="fp16", lr=2e-4, batch=256, estimator="siamese"),
    "release_fp16_lr2e-7_b256_fresh": dict(variant="release", precision="fp16", lr=2e-7, batch=256,
                                           estimator="siamese", state="fresh"),
    "release_fp16_lr5e-7_b256_fresh": dict(variant="release", precision="fp16", lr=5e-7, batch=256,
                                           estimator="siamese", state="fresh"),
    "release_fp16_lr2e-4_b256_fresh": dict(variant="release", precision="fp16", lr=2e-4, batch=256,
                                           estimator="siamese", state="fresh"),
    "first_order": dict(variant="paper", precision="fp32", lr=2e-4, batch=128, estimator="first_order"),
}
# Regimes whose rows were measured before the release's numerics were reproduced (fused AdamW on fp16 weights,
# siamese gradient x2): rerun, their rows are replaced.

# Reference numbers (not measured here): OSA arXiv 2410.01944, CLIP ViT-B/32 on MSCOCO.
OSA_REFERENCE = {
    "npc_mean_noise_rank": {"0.2": (1641.3, 1815.5), "0.5": (1456.2, 1524.0)},
    "table10": "97.5-99.4% of noisy pairs caught, 93.9% of clean pairs kept",
}


def _register_configs() -> None:
    import open_clip

    import npc.model  # noqa: F401  (registers the demo configs first)

    open_clip.add_model_config(CONFIGS)


# ----------------------------------------------------------------------------- bases

def base_path(name: str) -> Path:
    if name not in BASES:
        raise KeyError(f"unknown base {name!r}: one of {sorted(BASES)}")
    if name == "tiny-e6":
        from npc.demo import demo_base_path

        return demo_base_path(REPO / "pre-trained_models", "npc-tiny", ROOT)
    return BASE_DIR / f"{name}.pt"


def pretrain_root(spec: dict) -> Path:
    """A dataset root whose pretrain split is the one this base learns from (train/dev/test unused)."""
    if spec["captions"] == "web" and spec["n_pretrain"] == 4000:
        return ROOT
    root = REPO / "dataset" / f"regime_pretrain_{spec['captions']}_{spec['n_pretrain']}"
    if spec["captions"] != "web" and (root / "annotations" / "scan_split" / "pretrain_caps.txt").is_file():
        return root  # written last
    from npc import synthetic as syn
    from npc.io import atomic_write_lines

    if spec["captions"] == "train-clean":
        # The train split's images with their clean captions, read as a pretrain split.
        ann = root / "annotations" / "scan_split"
        ann.mkdir(parents=True, exist_ok=True)
        if not (root / "images").exists():
            (root / "images").symlink_to(ROOT / "images", target_is_directory=True)
        src = ROOT / "annotations" / "scan_split"
        atomic_write_lines(ann / "pretrain_ids.txt", data.read_lines(src / "train_ids.txt"))
        atomic_write_lines(ann / "pretrain_caps.txt", data.read_lines(src / "train_caps.txt"))
        return root
    if spec["captions"] == "web":
        # Images 0..3999 are the demo's own (each depends only on seed, split and index).
        syn.ensure_demo_dataset(root, n_pretrain=spec["n_pretrain"], n_train=1, n_dev=1, n_test=1, progress=False)
    else:
        # The same pretrain images, captioned in the train split's COCO style by the generator.
        images = ROOT / "images" if spec["n_pretrain"] == 4000 else pretrain_root({**spec, "captions": "web"}) / "images"
        ann = root / "annotations" / "scan_split"
        ann.mkdir(parents=True, exist_ok=True)
        if not (root / "images").exists():
            (root / "images").symlink_to(images, target_is_directory=True)
        caps, ids = [], []
        for k in range(spec["n_pretrain"]):
            scene = syn._make_scene(syn._rng(0, "pretrain", k, 0), "pretrain")
            caps += syn.describe_scene(scene, syn._rng(0, "pretrain", k, 1), "coco", 5)
            ids.append(syn._ID_BASE["pretrain"] + k)
        atomic_write_lines(ann / "pretrain_ids.txt", ids)
        atomic_write_lines(ann / "pretrain_caps.txt", caps)
    return root


def ensure_base(name: str, record: dict) -> Path:
    """The base's weights, pretrained (npc.demo's own recipe and loop) when missing; seconds recorded."""
    spec = BASES[name]
    path = base_path(name)
    if path.is_file():
        return path
    from npc.demo import BASE_RECIPE, _pretrain_base, ensure_demo_base

    t0 = time.perf_counter()
    if name == "tiny-e6":
        ensure_demo_base(ROOT, "npc-tiny", REPO / "pre-trained_models", progress=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        _pretrain_base(pretrain_root(spec), spec["model"], path, device="cpu", log=print, progress=False,
                       recipe={**BASE_RECIPE, "epochs": spec["epochs"]})
    record.setdefault("bases", {}).setdefault(name, {})["pretrain_seconds"] = time.perf_counter() - t0
    return path


def load_base(name: str, precision: str = "fp32"):
    from npc.model import create_model

    spec = BASES[name]
    return create_model(spec["model"], "demo-base", demo_base_path=base_path(name), precision=precision)


_FEATS: Dict[tuple, dict] = {}


def base_features(name: str, noise: str) -> dict:
    """Encoded training split (fp32), bank, p(clean) and the noise mask of a base at a noise ratio (cached)."""
    key = (name, noise)
    if key in _FEATS:
        return _FEATS[key]
    from npc.evaluation import encode_split
    from npc.model import logit_scale

    model, preprocess, tokenizer = load_base(name)
    split, mask = data.load_train_split(ROOT, "demo", 5, float(noise), log=lambda *_: None)
    img, txt = encode_split(model, split, preprocess, tokenizer, batch_size=256, progress=False)
    scale = float(logit_scale(model).detach())
    bank, info, p_clean = mb.build_memory_bank(img, txt, split, scale, batch_size=128, clean_threshold=0.9,
                                               noise_mask=mask, seed=99)
    _FEATS[key] = dict(split=split, mask=mask, img=img, txt=txt, scale=scale, bank=bank, bank_info=info,
                       p_clean=p_clean, model=model)
    return _FEATS[key]


def test_rsum(name: str) -> dict:
    from npc.evaluation import evaluate_split

    model, preprocess, tokenizer = load_base(name)
    split = data.load_split(ROOT, "demo", "test", 5)
    rows = evaluate_split(model, split, preprocess, tokenizer, batch_size=256, progress=False)
    row = next(iter(rows.values()))
    return {"test_rsum": float(row["rsum"]), "test_i2t_r1": float(row["i2t_r1"]), "test_t2i_r1": float(row["t2i_r1"])}


# ----------------------------------------------------------------------------- metrics

def score_row(score: np.ndarray, noisy: np.ndarray) -> dict:
    r = mean_noise_rank(score, noisy, n=2000, seed=0)
    return {"auc": weight_auc(score, noisy), "mean_noise_rank": r["mean_noise_rank"],
            "mean_noise_rank_optimal": r["mean_noise_rank_optimal"],
            "mean_noise_rank_random": r["mean_noise_rank_random"], "mean_noise_rank_n": r["n"],
            "n_pairs": int(len(score)), "noisy_fraction": float(np.mean(noisy))}


def osa_train_weights(f: dict, shift: float, batch: int = 128) -> np.ndarray:
    """OSA's weight of every pair on the training batches of seed 0, epoch 0 (nan for pairs left out)."""
    split = f["split"]
    ci = torch.as_tensor(split.caption_image)
    w = np.full(len(split), np.nan)
    for idx in loaders.EpochBatchSampler(len(split), batch, seed=0):
        idx = torch.as_tensor(idx)
        logits = f["scale"] * f["img"][ci[idx]] @ f["txt"][idx].t()
        w[idx.numpy()] = osa.osa_weight_function(logits, shift).numpy()
    return w


_PARTLY: Dict[str, np.ndarray] = {}


def noisy_partly_true(noise: str, split, noisy: np.ndarray) -> np.ndarray:
    """Per pair: its caption has at least one mention true of its image (bench/studylib/harshness.py); cached."""
    if noise not in _PARTLY:
        from studylib.harshness import caption_truth
        from npc import synthetic as syn

        info = json.loads((ROOT / "demo_info.json").read_text())
        scenes = [rec.scene for rec in syn.split_records("train", info["n_train"], seed=info["seed"],
                                                         num_anns=info["num_anns"])]
        truth = [caption_truth(c, scenes[int(i)]) for c, i in zip(split.captions, split.caption_image)]
        _PARTLY[noise] = np.array([t["n_mentions"] > 0 and t["frac_true"] > 0 for t in truth])
    return _PARTLY[noise]


def detection(name: str, noise: str) -> List[dict]:
    f = base_features(name, noise)
    noisy = np.asarray(f["mask"], dtype=bool)
    ci = f["split"].caption_image
    cos = (f["img"][torch.as_tensor(ci)] * f["txt"]).sum(-1).numpy().astype(np.float64)
    est = osa.frozen_copy(f["model"])
    shift = osa.random_shift(est, 128, generator=torch.Generator().manual_seed(0))
    debiased = f["scale"] * cos - shift
    w = osa_train_weights(f, shift)
    covered = ~np.isnan(w)
    # Noisy pairs whose caption holds nothing true of the image, against those with something true.
    part_true = noisy_partly_true(noise, f["split"], noisy)
    hard = noisy & part_true
    rows = [dict(estimator="cosine", **score_row(cos, noisy), mean_clean=float(cos[~noisy].mean()),
                 mean_noisy=float(cos[noisy].mean()), noisy_partly_true_fraction=float(hard.sum() / noisy.sum()),
                 auc_vs_noisy_nothing_true=weight_auc(cos[~hard], noisy[~hard]),
                 auc_vs_noisy_partly_true=weight_auc(cos[~noisy | hard], noisy[~noisy | hard])),
            dict(estimator="gmm_p_clean", **score_row(f["p_clean"], noisy),
                 bank_precision=f["bank_info"].get("precision"), bank_recall=f["bank_info"].get("recall"),
                 bank_clean_fraction=f["bank_info"].get("clean_fraction")),
            dict(estimator="osa_debiased", **score_row(debiased, noisy), osa_shift=shift,
                 logit_scale=f["scale"], mean_diag_logit=float((f["scale"] * cos).mean()),
                 mean_clean=float(debiased[~noisy].mean()), mean_noisy=float(debiased[noisy].mean()),
                 **osa.table10_rates(debiased, noisy)),
            dict(estimator="osa_weight", **score_row(w[covered], noisy[covered]), osa_shift=shift,
                 mean_w_clean=float(w[covered & ~noisy].mean()), mean_w_noisy=float(w[covered & noisy].mean()))]
    return [{"part": "detection", "base": name, "noise_ratio": float(noise), **r} for r in rows]


def npc_weights(name: str, noise: str, regime: str, n_pairs: int) -> dict:
    """NPC's weights under ``regime`` on the first ``n_pairs`` pairs of the seed-0 batches, A held fixed."""
    from npc import methods
    from npc.negative_impact import trainable
    from npc.steps import estimate
    from npc.train_utils import make_optimizer

    r = REGIMES[regime]
    f = base_features(name, noise)   # the bank is built from the fp32 base, as main_NPC.py builds it
    torch.manual_seed(0)
    model, preprocess, tokenizer = load_base(name, precision=r["precision"])
    model.train()
    ds = loaders.PairBatches(f["split"], preprocess, tokenizer, f["bank"])
    sampler = loaders.EpochBatchSampler(len(f["split"]), r["batch"], seed=0)
    batches = [b for b, _ in zip(sampler, range(max(1, n_pairs // r["batch"])))]
    siamese = copy.deepcopy(model)
    # A''s optimizer as main_NPC.py makes it (AdamW 0.9/0.98, eps 1e-6, wd 0.2; the plain one on fp16 weights).
    siamese_opt = make_optimizer(siamese, r["lr"], 0.9, 0.98, 1e-6, 0.2)
    if r["estimator"] == "first_order":
        estimator = methods.get_method("npc_first_order").build_estimator()
    else:  # the siamese estimator as --method npc_<variant> [--siamese_state fresh] builds it
        state = {"state": r["state"]} if r.get("state") else None
        method = methods.compose(methods.get_method(f"npc_{r['variant']}"), options=state)
        estimator = method.build_estimator()
        estimator.attach_siamese(siamese, siamese_opt)
    ws, idxs, ratios, changed, total, changed16, total16 = [], [], [], 0, 0, 0, 0
    t0 = time.perf_counter()
    for idx in batches:
        batch = ds[idx]
        out = estimate(model, batch, estimator)
        if r["estimator"] != "first_order":
            with torch.no_grad():
                for p, q in zip(trainable(siamese), trainable(model)):
                    diff = int((p != q).sum())
                    changed += diff
                    total += p.numel()
                    if p.dtype == torch.float16:  # open_clip's fp16 keeps embeddings, norms and scales fp32
                        changed16 += diff
                        total16 += p.numel()
        ratios.append(out["ratio"].float().numpy())
        ws.append(out["weights"].float().numpy())
        idxs.append(batch["index"].numpy())
    seconds = (time.perf_counter() - t0) / len(batches)
    w = np.concatenate(ws).astype(np.float64)
    idx = np.concatenate(idxs)
    noisy = np.asarray(f["mask"], dtype=bool)[idx]
    ok = np.isfinite(w)
    row = {"part": "npc", "base": name, "noise_ratio": float(noise), **{k: v for k, v in r.items() if k != "estimator"},
           "npc_estimator": r["estimator"], "estimator": f"npc_{regime}", "regime": regime,
           **score_row(w[ok], noisy[ok]), "nonfinite_weights": int((~ok).sum()),
           "mean_w_clean": float(w[ok & ~noisy].mean()), "mean_w_noisy": float(w[ok & noisy].mean()),
           "frac_w_one": float(np.mean(w[ok] == 1.0)), "seconds_per_step": seconds, "steps": len(batches),
           "siamese_changed_fraction": changed / total if total else None,
           "siamese_changed_fraction_fp16": changed16 / total16 if total16 else None,
           "ratio_std": float(np.concatenate(ratios).std()), "ratio_below_1": float(np.mean(np.concatenate(ratios) < 1))}
    # the same pairs under the base's own signals, for a like-for-like comparison
    sub = {"cosine_same_pairs": (f["img"][torch.as_tensor(f["split"].caption_image[idx])] * f["txt"][idx]).sum(-1).numpy(),
           "gmm_same_pairs": f["p_clean"][idx]}
    row.update({f"auc_{k}": weight_auc(v, noisy) for k, v in sub.items()})
    return row


def harshness(noise: str) -> dict:
    from studylib.harshness import split_harshness
    from npc import synthetic as syn

    split, mask = data.load_train_split(ROOT, "demo", 5, float(noise), log=lambda *_: None)
    info = json.loads((ROOT / "demo_info.json").read_text())
    scenes = [rec.scene for rec in syn.split_records("train", info["n_train"], seed=info["seed"],
                                                     num_anns=info["num_anns"])]
    h = split_harshness(split.captions, split.caption_image, mask, scenes)
    return {"part": "harshness", "base": None, "noise_ratio": float(noise), "estimator": "caption_truth",
            "clean": h["clean"], "noisy": h["noisy"]}


# ----------------------------------------------------------------------------- record and render

def _key(r: dict) -> tuple:
    return (r["part"], r.get("base"), r["noise_ratio"], r["estimator"])


def _merge(record: dict, rows: List[dict], meta: dict, out: Path) -> None:
    rows = [{**r, **meta} for r in rows]
    keys = {_key(r) for r in rows}
    record["rows"] = [r for r in record.get("rows", []) if _key(r) not in keys] + rows
    atomic_write_json(out, record)


def _f(x, fmt="{:.3f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def render(record: dict, out_md: Path, out_png: Path) -> str:
    rows = record.get("rows", [])
    bases = record.get("bases", {})
    det = [r for r in rows if r["part"] == "detection"]
    npc_rows = [r for r in rows if r["part"] == "npc"]
    harsh = [r for r in rows if r["part"] == "harshness"]
    get = {_key(r): r for r in rows}
    order = [b for b in BASES if any(r.get("base") == b for r in rows)]
    lines = ["# Regime study: the demo's zero-shot noise detection vs CLIP on MSCOCO, and NPC's weights", "",
             "Generated by `python bench/regime_study.py --render` from `regime_study.json`; every number below "
             "is measured by `bench/regime_study.py` (command, device, versions and commit in each JSON row), "
             "except the OSA reference values, quoted from OSA (arXiv 2410.01944, Tables 9-10: CLIP ViT-B/32, "
             "MSCOCO): NPC mean noise rank 1,641.3 of an optimal 1,815.5 at 20% noise, 1,456.2 of 1,524.0 at "
             "50%; zero-shot CLIP catches 97.5-99.4% of noisy pairs and keeps 93.9% of clean ones.", ""]
    lines += ["## Bases", "", "| base | model | pretrain epochs | pretrain captions | pretrain images | "
              "pretrain s | test rsum (of 600) |", "|---|---|---|---|---|---|---|"]
    for b in order:
        s, info = BASES[b], bases.get(b, {})
        lines.append(f"| {b} | {s['model']} | {s['epochs']} | {s['captions']} | {s['n_pretrain']} | "
                     f"{_f(info.get('pretrain_seconds'), '{:.0f}')} | {_f(info.get('test_rsum'), '{:.1f}')} |")
    noises = sorted({r["noise_ratio"] for r in det})
    for n in noises:
        lines += ["", f"## Detection by the base at {n:.0%} noise (all 10,000 training pairs)", "",
                  "Zero-shot for every base but `oracle-*` (pretrained on the clean captions of these very "
                  "training pairs). AUC: ROC-AUC, clean = positive. MNR: OSA Table 9's mean noise rank (2,000 "
                  "pairs, seed 0; higher is better). Caught / kept: OSA Table 10 at threshold 0 of OSA's "
                  "debiased logit. The NPC columns are read on the first 2,048 pairs only (next table).", "",
                  "| base | test rsum | AUC cosine | AUC GMM p(clean) | AUC OSA weight | MNR cosine | MNR GMM | "
                  "MNR OSA weight | MNR optimal / random | OSA shift | debiased logit clean / noisy | noisy caught | "
                  "clean kept | NPC shipped AUC / MNR | first-order AUC / MNR | AUC cosine vs noisy with nothing / "
                  "something true |", "|---" * 16 + "|"]
        for b in order:
            c = get.get(("detection", b, n, "cosine"))
            if c is None:
                continue
            g = get.get(("detection", b, n, "gmm_p_clean"), {})
            o = get.get(("detection", b, n, "osa_debiased"), {})
            w = get.get(("detection", b, n, "osa_weight"), {})
            s = get.get(("npc", b, n, "npc_shipped"), {})
            fo = get.get(("npc", b, n, "npc_first_order"), {})
            lines.append(
                f"| {b} | {_f(bases.get(b, {}).get('test_rsum'), '{:.1f}')} | {_f(c['auc'])} | {_f(g.get('auc'))} | "
                f"{_f(w.get('auc'))} | {_f(c['mean_noise_rank'], '{:.1f}')} | "
                f"{_f(g.get('mean_noise_rank'), '{:.1f}')} | {_f(w.get('mean_noise_rank'), '{:.1f}')} | "
                f"{_f(c['mean_noise_rank_optimal'], '{:.1f}')} / {_f(c['mean_noise_rank_random'], '{:.1f}')} | "
                f"{_f(o.get('osa_shift'), '{:.2f}')} | {_f(o.get('mean_clean'), '{:.2f}')} / "
                f"{_f(o.get('mean_noisy'), '{:.2f}')} | {_f(o.get('noisy_caught'))} | {_f(o.get('clean_kept'))} | "
                f"{_f(s.get('auc'))} / {_f(s.get('mean_noise_rank'), '{:.1f}')} | "
                f"{_f(fo.get('auc'))} / {_f(fo.get('mean_noise_rank'), '{:.1f}')} | "
                f"{_f(c.get('auc_vs_noisy_nothing_true'))} / {_f(c.get('auc_vs_noisy_partly_true'))} |")
    if npc_rows:
        lines += ["", "## NPC's weights by siamese regime", "",
                  "Weights of the first pairs of the seed-0 batches (A fixed, A''s AdamW state persistent from "
                  "empty, or emptied every step (fresh); bank built from the base). fp16: pure fp16 weights and the "
                  "release's AdamW (fp16 moments); the release variant's siamese gradient is 4x the mean pair "
                  "loss's. Changed: fraction of A''s parameter elements that its step "
                  "changed at all, over all steps (all / those of the fp16 tensors: open_clip's fp16 holds only "
                  "the linear and conv weights in fp16). Ratio sd: spread of NPC's loss ratio before/after "
                  "(n/a for the first-order estimator, whose rescaled 'after' losses can be near 0). "
                  "The cosine AUC is on the same pairs.", "",
                  "| base | noise | regime | variant | precision | lr | batch | A' state | pairs | AUC | MNR (opt / rnd) | "
                  "mean w clean / noisy | w = 1 | changed all / fp16 | ratio sd | AUC cosine, same pairs | s/step |",
                  "|---" * 17 + "|"]
        for r in sorted(npc_rows, key=lambda r: (order.index(r["base"]) if r["base"] in order else 99,
                                                 r["noise_ratio"], list(REGIMES).index(r["regime"]))):
            lines.append(
                f"| {r['base']} | {r['noise_ratio']:.0%} | {r['regime']} | {r['variant']} | {r['precision']} | "
                f"{r['lr']:g} | {r['batch']} | {r.get('state', 'persistent')} | {r['n_pairs']} | {_f(r['auc'])} | "
                f"{_f(r['mean_noise_rank'], '{:.1f}')} ({_f(r['mean_noise_rank_optimal'], '{:.1f}')} / "
                f"{_f(r['mean_noise_rank_random'], '{:.1f}')}) | {_f(r['mean_w_clean'])} / {_f(r['mean_w_noisy'])} | "
                f"{_f(r['frac_w_one'])} | {_f(r.get('siamese_changed_fraction'), '{:.4f}')} / "
                f"{_f(r.get('siamese_changed_fraction_fp16'), '{:.4f}')} | "
                f"{'n/a' if r['regime'] == 'first_order' else _f(r.get('ratio_std'), '{:.2g}')} | "
                f"{_f(r.get('auc_cosine_same_pairs'))} | {_f(r['seconds_per_step'], '{:.2f}')} |")
    if harsh:
        lines += ["", "## Harshness of the noise (generator ground truth)", "",
                  "Mentions read from each training caption (objects with their attributes, background, "
                  "directional relations; `bench/studylib/harshness.py`) checked against the scene of the image the "
                  "caption is paired with. Bindings: object mentions naming colour and shape. Colour / shape "
                  "words: named anywhere in the scene, whatever they are bound to.", "",
                  "| noise | pairs | captions | mentions true | all mentions true | none true | objects | bindings | "
                  "relations | background | colour words | shape words |", "|---" * 12 + "|"]
        for r in sorted(harsh, key=lambda r: r["noise_ratio"]):
            for kind in ("clean", "noisy"):
                h = r[kind]
                lines.append(f"| {r['noise_ratio']:.0%} | {kind} | {h['n_captions']} | {_f(h['mean_frac_true'])} | "
                             f"{_f(h['frac_all_true'])} | {_f(h['frac_no_mention_true'])} | {_f(h['objects_true'])} | "
                             f"{_f(h['bindings_true'])} | {_f(h['relations_true'])} | {_f(h['background_true'])} | "
                             f"{_f(h['colour_words_true'])} | {_f(h['shape_words_true'])} |")
    if record.get("verdict"):
        lines += ["", "## Verdict", "", record["verdict"]]
    runs = sorted({(r.get("command"), r.get("git_commit"), r.get("device")) for r in rows if r.get("command")})
    if runs:
        lines += ["", "## Commands (from the repository root; commit, device)", ""]
        lines += [f"- `{c}` ({g}; {d})" for c, g, d in runs]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out_md, text)
    _figure(det, npc_rows, order, bases, out_png)
    return text


def _figure(det, npc_rows, order, bases, out_png: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figure")
        return
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    marks = {"cosine": dict(marker="o", s=90, facecolors="none", edgecolors="tab:blue"),
             "gmm_p_clean": dict(marker="s", s=18, color="tab:orange"),
             "osa_weight": dict(marker="^", s=30, color="tab:green")}
    for est, kw in marks.items():
        pts = [(bases.get(r["base"], {}).get("test_rsum"), r["auc"]) for r in det
               if r["estimator"] == est and r["noise_ratio"] == 0.4 and r["base"] in order]
        pts = [p for p in pts if p[0] is not None]
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, label=est, **kw)
    for r in det:
        x = bases.get(r["base"], {}).get("test_rsum")
        if r["estimator"] == "cosine" and r["noise_ratio"] == 0.4 and x is not None:
            ax.annotate(r["base"], (x, r["auc"]), xytext=(3, -10), textcoords="offset points", fontsize=6, rotation=-30)
    ax.axhline(0.99, color="g", ls=":", lw=0.8, label="zero-shot CLIP on MSCOCO (>= 0.99)")
    ax.set_xlabel("base test rsum (of 600)")
    ax.set_ylabel("ROC-AUC vs noise mask (40% noise)")
    ax.set_ylim(0.8, 1.0)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("the base's own detection (oracle-*: not zero-shot)", fontsize=10)
    ax = axes[1]
    cos = {(r["base"], r["noise_ratio"]): r["auc"] for r in det if r["estimator"] == "cosine"}
    for est, kw in (("npc_shipped", dict(marker="x", color="tab:red")),
                    ("npc_first_order", dict(marker="D", color="tab:purple", s=20))):
        pts = [(cos[(r["base"], r["noise_ratio"])], r["auc"], r["noise_ratio"]) for r in npc_rows
               if r["estimator"] == est and (r["base"], r["noise_ratio"]) in cos]
        if pts:
            x, y, _ = zip(*pts)
            ax.scatter(x, y, label=f"{est} (all bases, noise 20/40/60%)", **kw)
    ax.axvline(0.99, color="g", ls=":", lw=0.8, label="CLIP-like detection (0.99)")
    ax.axhline(0.89, color="tab:blue", ls=":", lw=0.8, label="NPC on MSCOCO, OSA (about 0.89 at 20%)")
    ax.axhline(0.5, color="k", ls="--", lw=0.8)
    ax.set_xlabel("the base's cosine ROC-AUC (same noise)")
    ax.set_ylabel("ROC-AUC of NPC's weights")
    ax.set_ylim(0.4, 1.0)
    ax.legend(fontsize=7, loc="center left")
    ax.set_title("NPC's weights against the base's detection", fontsize=10)
    ax = axes[2]
    regs = list(REGIMES)
    for k, b in enumerate(("tiny-e6", "oracle-e40")):
        got = {r["regime"]: r["auc"] for r in npc_rows if r["noise_ratio"] == 0.4 and r["base"] == b}
        if got:
            ax.bar(np.arange(len(regs)) + 0.4 * k, [got.get(g, np.nan) for g in regs], 0.4, label=f"base {b}")
    ax.set_xticks(np.arange(len(regs)) + 0.2)
    ax.set_xticklabels(regs, rotation=30, ha="right", fontsize=8)
    ax.axhline(0.5, color="k", ls="--", lw=0.8)
    ax.axhline(0.89, color="tab:blue", ls=":", lw=0.8)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("ROC-AUC of NPC's weights (40% noise)")
    ax.legend(fontsize=7)
    ax.set_title("NPC's weights by siamese regime", fontsize=10)
    fig.tight_layout()
    tmp = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out_png)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("detection", "npc", "harshness"), help="what to measure")
    p.add_argument("--bases", default="tiny-e6", help=f"comma list of {', '.join(BASES)}")
    p.add_argument("--noise", default="0.4", help="comma list of noise ratios")
    p.add_argument("--regimes", default="shipped,first_order", help=f"comma list of {', '.join(REGIMES)}")
    p.add_argument("--pairs", type=int, default=2048, help="training pairs NPC's weights are read on (npc part)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "regime_study.json")
    p.add_argument("--verdict_file", type=Path, help="store this text file's content as the verdict")
    p.add_argument("--render", action="store_true", help="only redraw table and figure from the JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.chdir(REPO)
    _register_configs()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": [], "bases": {}}
    if args.verdict_file:
        record["verdict"] = args.verdict_file.read_text().strip()
        atomic_write_json(args.out, record)
    if not args.render and args.part:
        meta = environment(__file__, argv, torch.device("cpu"))
        for noise in args.noise.split(","):
            if args.part == "harshness":
                t = time.perf_counter()
                row = harshness(noise)
                _merge(record, [{**row, "seconds": time.perf_counter() - t}], meta, args.out)
                continue
            for b in args.bases.split(","):
                ensure_base(b, record)
                binfo = record.setdefault("bases", {}).setdefault(b, {})
                if "test_rsum" not in binfo:
                    binfo.update(test_rsum(b), **BASES[b], path=str(base_path(b).relative_to(REPO)))
                    atomic_write_json(args.out, record)
                t = time.perf_counter()
                if args.part == "detection":
                    rows = detection(b, noise)
                    sec = time.perf_counter() - t
                    rows = [{**r, "seconds": sec} for r in rows]
                    _merge(record, rows, meta, args.out)
                    print(f"{b} {noise}: " + ", ".join(f"{r['estimator']} {r['auc']:.3f}" for r in rows), flush=True)
                else:
                    for reg in args.regimes.split(","):
                        row = npc_weights(b, noise, reg, args.pairs)
                        _merge(record, [row], meta, args.out)
                        print(f"{b} {noise} {reg}: AUC {row['auc']:.3f} MNR {row['mean_noise_rank']:.1f} "
                              f"changed {row['siamese_changed_fraction']} / {row['siamese_changed_fraction_fp16']} "
                              f"ratio sd {row['ratio_std']:.2g}", flush=True)
    record = json.loads(args.out.read_text()) if args.out.is_file() else record
    print(render(record, args.out.with_suffix(".md"), args.out.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
