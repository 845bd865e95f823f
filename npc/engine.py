"""Training and evaluation loops, checkpoints, logging. No argparse in here: plain values in.

``run(args)`` is what ``main_NPC.py`` / ``main_CLIP.py`` call; everything it uses is a function of
this package that tests call directly.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from tqdm import tqdm

import data
from npc import memory_bank as mb
from npc.demo import demo_base_path, ensure_demo_base, ensure_demo_data
from npc.distributed import DistInfo, all_reduce_mean_, barrier, cleanup, gather_no_grad, init_distributed
from npc.evaluation import encode_split, eval_precision, evaluate_split, mean_r1, primary_row
from npc.evaluation_metrics import format_metrics_table
from npc.io import atomic_copy, atomic_torch_save, atomic_write_json, atomic_write_text
from npc.model import compile_towers, create_model, load_checkpoint_weights, logit_scale
from npc.negative_impact import clip_step, npc_step
from npc.train_utils import (autocast_for, lr_at, make_optimizer, resolve_device, resolve_precision, rng_state,  # noqa: F401
                             seed_everything, set_lr, set_rng_state, to_device)

CHECKPOINT_FORMAT = "npc-reimpl/1"
REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("npc")


class NonFiniteLoss(RuntimeError):
    pass


# ----------------------------------------------------------------------------- small pieces

def show_progress(args) -> bool:
    """Progress bars in a terminal; not in log files, where every refresh would add a line."""
    return not args.no_progress and sys.stderr.isatty()


def setup_logging(run_dir: Optional[Path], info: DistInfo) -> None:
    log.handlers.clear()
    log.setLevel(logging.INFO if info.is_main else logging.WARNING)
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s | %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    log.addHandler(stream)
    if run_dir is not None and info.is_main:
        fh = logging.FileHandler(run_dir / "log.txt")
        fh.setFormatter(fmt)
        log.addHandler(fh)


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: Path, *, model, optimizer, siamese_opt, epoch: int, step: int, best: Dict, args) -> None:
    ckpt = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "name": args.name,
            "vision_model": args.vision_model, "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "best": best, "rng": rng_state(),
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}}
    if siamese_opt is not None:
        ckpt["siamese_optimizer"] = siamese_opt.state_dict()
    atomic_torch_save(ckpt, path)


def resolve_resume(resume: Optional[str], ckpt_dir: Path) -> Optional[Path]:
    if not resume:
        return None
    path = ckpt_dir / "latest.pt" if resume == "latest" else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: checkpoint not found: {path}")
    return path


# ----------------------------------------------------------------------------- one epoch

@dataclass
class EpochResult:
    loss: float
    steps: int
    pairs_per_s: float
    weights: Optional[np.ndarray] = None      # NPC weights of the epoch's pairs (rank 0 gathers all ranks)
    indices: Optional[np.ndarray] = None


def train_one_epoch(model, loader, optimizer, *, method: str, epoch: int, start_step: int, lr_fn, device,
                    autocast, info: DistInfo, grad_clip: float, siamese=None, siamese_opt=None,
                    variant: str = "paper", impl: str = "efficient", reweight: bool = True, display: int = 50,
                    writer=None, progress: bool = True) -> EpochResult:
    model.train()
    step = start_step
    total, n_steps, n_pairs = 0.0, 0, 0
    weights, indices = [], []
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not (progress and info.is_main), leave=False,
               dynamic_ncols=True)
    for batch in bar:
        lr = lr_fn(step, epoch)
        set_lr([optimizer] + ([siamese_opt] if siamese_opt is not None else []), lr)
        batch = to_device(batch, device)
        if method == "npc":
            out = npc_step(model, siamese, optimizer, siamese_opt, batch, variant=variant, impl=impl, info=info,
                           autocast=autocast, grad_clip=grad_clip, reweight=reweight)
            weights.append(gather_no_grad(out["weights"].detach(), info).cpu())
            indices.append(gather_no_grad(batch["index"], info).cpu())
        else:
            out = clip_step(model, optimizer, batch, info=info, autocast=autocast, grad_clip=grad_clip)
        loss_t = out["loss"].detach().clone().float()
        all_reduce_mean_([loss_t], info)  # log the global batch's loss, not rank 0's share
        loss = float(loss_t)
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss {loss} at epoch {epoch + 1}, step {step}; stopping. The last "
                                f"good checkpoint is kept. Try a lower --lr or --precision fp32.")
        total += loss
        n_steps += 1
        n_pairs += len(batch["index"]) * info.world_size
        step += 1
        rate = n_pairs / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", pairs_s=f"{rate:.0f}")
        if writer is not None and (step % display == 0 or n_steps == 1):
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/grad_norm", float(out["grad_norm"]), step)
            writer.add_scalar("train/pairs_per_s", rate, step)
            if method == "npc":
                writer.add_scalar("npc/mean_weight", float(out["weights"].mean()), step)
                writer.add_scalar("npc/bank_loss", float(out["bank_loss"]), step)
        if info.is_main and step % display == 0:
            log.info(f"epoch {epoch + 1} step {step} loss {loss:.4f} lr {lr:.3e} pairs/s {rate:.0f}")
    elapsed = time.perf_counter() - t0
    return EpochResult(loss=total / max(n_steps, 1), steps=n_steps, pairs_per_s=n_pairs / max(elapsed, 1e-9),
                       weights=torch.cat(weights).numpy() if weights else None,
                       indices=torch.cat(indices).numpy() if indices else None)


def weight_stats(weights: np.ndarray, indices: np.ndarray, noise_mask: Optional[np.ndarray]) -> Dict[str, float]:
    """How well NPC's weights separate clean from noisy pairs (needs the ground-truth mask)."""
    stats = {"mean_weight": float(weights.mean()), "frac_weight_below_1": float((weights < 1).mean())}
    if noise_mask is None:
        return stats
    noisy = noise_mask[indices]
    if noisy.any():
        stats["mean_weight_noisy"] = float(weights[noisy].mean())
    if (~noisy).any():
        stats["mean_weight_clean"] = float(weights[~noisy].mean())
    if noisy.any() and (~noisy).any():
        from sklearn.metrics import roc_auc_score

        stats["weight_auc"] = float(roc_auc_score(~noisy, weights))
    return stats


# ----------------------------------------------------------------------------- orchestration

def prepare_demo(args, progress: bool) -> Optional[Path]:
    """Generate the demo data and its base model when missing; returns the base model's path."""
    if args.dataset != "demo":
        return None
    ensure_demo_data(args.dataset_root, log=log.info, progress=progress)
    return ensure_demo_base(args.dataset_root, args.vision_model, Path(args.pretrained_dir), device=args.device,
                            log=log.info, progress=progress)


def eval_tables(model, splits, preprocess, tokenizer, *, dataset: str, eval_batch_size: int, device, precision: str,
                ties: str, num_workers: int, progress: bool) -> Dict[str, Dict[str, float]]:
    """Recall rows of ``splits``, encoded at the evaluation ``precision`` (not the training one)."""
    rows = {}
    with eval_precision(model, precision, device) as (eval_model, autocast):
        for split in splits:
            rows.update(evaluate_split(eval_model, split, preprocess, tokenizer, ties=ties,
                                       folds_1k=dataset == "coco" and split.name == "test",
                                       batch_size=eval_batch_size, device=device, autocast=autocast,
                                       num_workers=num_workers, progress=progress))
    return rows


def ensure_bank(args, model, train_split, noise_mask, preprocess, tokenizer, device, autocast, progress: bool
                ) -> data.BankIndex:
    bank_dir = data.memory_bank_dir(args.dataset_root)
    img_path, _, info_path = mb.bank_paths(bank_dir, args.noise_ratio, args.noise_mode)
    if img_path.is_file() and not getattr(args, "rebuild_bank", False):
        log.info(f"memory bank: reusing {img_path.parent}/{img_path.name.replace('_img_idx.npy', '_*')}")
        if info_path.is_file():
            built = json.loads(info_path.read_text(encoding="utf-8"))
            now = {"vision_model": args.vision_model, "pretrained": str(args.pretrained)}
            if any(built.get(k) != v for k, v in now.items()):
                log.warning(f"memory bank: {info_path.name} was built with "
                            f"{ {k: built.get(k) for k in now} }, this run uses {now}; pass --rebuild_bank to rebuild")
        return mb.load_bank(bank_dir, args.noise_ratio, train_split, args.noise_mode,
                            trust_pickle=getattr(args, "trust_pickle", False))
    log.info(f"memory bank: encoding {train_split.num_images} images / {len(train_split)} captions with the initial model")
    img, txt = encode_split(model, train_split, preprocess, tokenizer, batch_size=args.eval_batch_size, device=device,
                            autocast=autocast, num_workers=args.num_workers, progress=progress, desc="bank")
    bank, info, _ = mb.build_memory_bank(img, txt, train_split, logit_scale(model).item(), batch_size=args.batch_size,
                                         clean_threshold=args.clean_threshold, noise_mask=noise_mask, seed=args.seed)
    info.update(noise_ratio=str(args.noise_ratio), noise_mode=args.noise_mode, pretrained=str(args.pretrained),
                vision_model=args.vision_model)
    paths = mb.save_bank(bank, bank_dir, args.noise_ratio, args.noise_mode, info)
    msg = f"memory bank: {info['n_clean']} of {info['n_pairs']} pairs clean (p>{args.clean_threshold})"
    if "precision" in info:
        msg += f", precision {info['precision']:.3f} recall {info['recall']:.3f} against the noise mask"
    log.info(msg + f"; wrote {paths[0]} and {paths[1].name}")
    return bank


@dataclass
class Run:
    """What every step of a run shares: its configuration, where it writes and how it computes."""

    args: argparse.Namespace
    info: DistInfo
    device: torch.device
    precision: str
    autocast: Callable
    progress: bool
    run_dir: Path
    ckpt_dir: Path
    writer: Optional[object] = None  # TensorBoard, rank 0 of a training run only

    def eval_tables(self, model, splits, preprocess, tokenizer) -> Dict[str, Dict[str, float]]:
        a = self.args
        return eval_tables(model, splits, preprocess, tokenizer, dataset=a.dataset, eval_batch_size=a.eval_batch_size,
                           device=self.device, precision=a.eval_precision, ties=a.ties, num_workers=a.num_workers,
                           progress=self.progress)


@dataclass
class Trainer:
    """The state a training run carries from epoch to epoch."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    siamese: Optional[torch.nn.Module]
    siamese_opt: Optional[torch.optim.Optimizer]
    sampler: data.EpochBatchSampler
    loader: torch.utils.data.DataLoader
    lr_fn: Callable
    noise_mask: np.ndarray
    start_epoch: int = 0
    step: int = 0
    best: Dict = field(default_factory=lambda: {"rsum": -1.0, "epoch": -1})


def run(args) -> Dict:
    """Train (or only evaluate) as configured by ``args``; returns the final result dict."""
    r = setup_run(args)
    try:
        model, preprocess, tokenizer, resume_path, resume_ckpt = build_model(r)
        test_splits = [data.load_split(args.dataset_root, args.dataset, s, args.num_anns)
                       for s in args.eval_splits.split(",") if s]
        if args.eval:
            rows = r.eval_tables(model, test_splits, preprocess, tokenizer) if r.info.is_main else {}
            return _report(rows, r.run_dir, args, r.info, title=f"evaluation of {resume_path or args.pretrained}")
        r.writer = open_writer(r)
        train_split, noise_mask, dev = load_train_data(r)
        trainer = build_trainer(r, model, preprocess, tokenizer, train_split, noise_mask, resume_ckpt)
        end_epoch = fit(r, trainer, lambda m: r.eval_tables(m, [dev], preprocess, tokenizer))
        if end_epoch < args.epochs:
            log.info(f"stopped after epoch {end_epoch} (--stop_after); continue with "
                     f"--experiments {args.experiments} --resume latest")
            return {"stopped_after": end_epoch}
        return final_evaluation(r, trainer, test_splits, preprocess, tokenizer)
    finally:
        if r.writer is not None:
            r.writer.close()
        cleanup(r.info)


def setup_run(args) -> Run:
    """Device, processes, precision and seed; the run's name, folder and log file."""
    progress = show_progress(args)
    device = resolve_device(args.device)
    args.device = str(device)
    info = init_distributed(args.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        args.device = str(device)
    precision = resolve_precision(args.precision, device)
    args.precision = precision
    seed_everything(args.seed)  # the same on every rank: random init must agree; data order comes from the sampler

    if not args.experiments:
        if args.resume == "latest":
            raise SystemExit("error: --resume latest needs --experiments NAME (the run to continue)")
        stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
        args.experiments = (f"eval_{args.dataset}_{stamp}" if args.eval else
                            f"{args.method}_{args.dataset}_noise{args.noise_ratio}_{stamp}")
        if info.enabled:  # the clock may tick between ranks: everyone takes rank 0's name
            import torch.distributed as dist

            name = [args.experiments]
            dist.broadcast_object_list(name, src=0)
            args.experiments = name[0]
    run_dir = Path(args.logs) / args.experiments
    ckpt_dir = Path(args.checkpoint_path) if args.checkpoint_path else run_dir / "checkpoints"
    if (run_dir / "params.txt").exists() and not args.resume and not args.eval:
        raise SystemExit(f"error: {run_dir} already holds a run; continue it with --resume latest or choose "
                         f"another --experiments")
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    setup_logging(run_dir, info)
    return Run(args=args, info=info, device=device, precision=precision, autocast=autocast_for(precision, device),
               progress=progress, run_dir=run_dir, ckpt_dir=ckpt_dir)


def build_model(r: Run):
    """The demo's data and base if needed, the model, the weights to resume; writes params.txt."""
    args, info = r.args, r.info
    base_path = prepare_demo(args, r.progress) if info.is_main else None
    barrier(info)
    if args.dataset == "demo" and base_path is None:
        base_path = demo_base_path(Path(args.pretrained_dir), args.vision_model, args.dataset_root)
    # --eval holds the weights in fp32 (an fp16 checkpoint loads exactly) and encodes at --eval_precision.
    model, preprocess, tokenizer = create_model(args.vision_model, args.pretrained,
                                                precision="fp32" if args.eval else r.precision,
                                                device=r.device, context_length=args.context_length,
                                                demo_base_path=base_path)
    resume_path = resolve_resume(args.resume, r.ckpt_dir)
    resume_ckpt = None
    if resume_path is not None:
        resume_ckpt = load_checkpoint_weights(model, resume_path)
        log.info(f"loaded weights from {resume_path}")
    if info.is_main:
        params = "\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items()))
        atomic_write_text(r.run_dir / ("eval_params.txt" if args.eval else "params.txt"), params + "\n")
    return model, preprocess, tokenizer, resume_path, resume_ckpt


def open_writer(r: Run):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(r.run_dir / "tensorboard")) if r.info.is_main else None


def load_train_data(r: Run):
    """The noisy training split (built on first use), its noise mask, and the dev split."""
    args = r.args
    train_split, noise_mask = data.load_train_split(args.dataset_root, args.dataset, args.num_anns,
                                                    args.noise_ratio, noise_seed=args.noise_seed,
                                                    noise_mode=args.noise_mode, log=log.info)
    dev = data.load_split(args.dataset_root, args.dataset, "dev", args.num_anns)
    if args.dev_length:
        dev = dev.subset_images(max(1, args.dev_length // args.num_anns))
    log.info(f"train: {len(train_split)} pairs / {train_split.num_images} images "
             f"(noise {args.noise_ratio}, {args.noise_mode}: {int(noise_mask.sum())} wrong captions); "
             f"dev: {dev.num_images} images; device {r.device}, precision {r.precision}, "
             f"{r.info.world_size} process(es)")
    return train_split, noise_mask, dev


def build_trainer(r: Run, model, preprocess, tokenizer, train_split, noise_mask, resume_ckpt) -> Trainer:
    """Memory bank and siamese (NPC), optimizers, the loader and lr schedule; the resumed state."""
    args, info = r.args, r.info
    bank = None
    siamese = siamese_opt = None
    if args.method == "npc":
        if info.is_main:
            bank = ensure_bank(args, model, train_split, noise_mask, preprocess, tokenizer, r.device, r.autocast,
                               r.progress)
        barrier(info)
        if bank is None:
            bank = mb.load_bank(data.memory_bank_dir(args.dataset_root), args.noise_ratio, train_split,
                                args.noise_mode)
        siamese = copy.deepcopy(model)
        siamese_opt = make_optimizer(siamese, args.lr, args.beta1, args.beta2, args.eps, args.weight_decay)
    optimizer = make_optimizer(model, args.lr, args.beta1, args.beta2, args.eps, args.weight_decay)
    if args.torchcompile:
        for m in (model, siamese):
            if m is not None:
                compile_towers(m)
        log.info("torch.compile: image and text transformers (the first steps compile)")

    image_source = None
    if args.image_cache:
        from npc.image_cache import ImageCache

        open_cache = partial(ImageCache, args.image_cache, f"{args.dataset}_train", train_split.image_paths,
                             preprocess)
        if info.is_main:  # rank 0 builds (or validates) the cache; the others open it afterwards
            image_source = open_cache(num_workers=args.num_workers, progress=r.progress, log=log.info)
        barrier(info)
        if image_source is None:
            image_source = open_cache(log=lambda *_: None)
    dataset = data.PairBatches(train_split, preprocess, tokenizer, bank, image_source=image_source)
    sampler = data.EpochBatchSampler(len(train_split), args.batch_size, args.seed, info.rank, info.world_size)
    lr_fn = partial(lr_at, base_lr=args.lr, warmup=args.warmup, total_steps=len(sampler) * args.epochs,
                    epochs=args.epochs, schedule=args.lr_schedule)
    trainer = Trainer(model=model, optimizer=optimizer, siamese=siamese, siamese_opt=siamese_opt, sampler=sampler,
                      loader=data.train_loader(dataset, sampler, args.num_workers), lr_fn=lr_fn,
                      noise_mask=noise_mask)
    restore_training_state(trainer, resume_ckpt)
    return trainer


def restore_training_state(t: Trainer, ckpt: Optional[Dict]) -> None:
    """Optimizers, epoch, step, best and RNG of a checkpoint of this project (weights are already loaded)."""
    if ckpt is None:
        return
    if ckpt.get("format") == CHECKPOINT_FORMAT and "optimizer" in ckpt:
        t.optimizer.load_state_dict(ckpt["optimizer"])
        if t.siamese_opt is not None and "siamese_optimizer" in ckpt:
            t.siamese_opt.load_state_dict(ckpt["siamese_optimizer"])
        t.start_epoch, t.step, t.best = ckpt["epoch"], ckpt["step"], ckpt["best"]
        set_rng_state(ckpt["rng"])
        log.info(f"resuming after epoch {t.start_epoch} (step {t.step})")
    else:
        log.info("the resumed checkpoint has weights only (e.g. the reference release's): training starts at epoch 1")


def fit(r: Run, t: Trainer, evaluate_dev: Callable) -> int:
    """Train from ``t.start_epoch`` to ``--epochs`` (or ``--stop_after`` epochs); returns the last epoch."""
    args, info = r.args, r.info
    end_epoch = args.epochs if not args.stop_after else min(args.epochs, t.start_epoch + args.stop_after)
    for epoch in range(t.start_epoch, end_epoch):
        t.sampler.set_epoch(epoch)
        res = train_one_epoch(t.model, t.loader, t.optimizer, method=args.method, epoch=epoch, start_step=t.step,
                              lr_fn=t.lr_fn, device=r.device, autocast=r.autocast, info=info,
                              grad_clip=args.grad_clip, siamese=t.siamese, siamese_opt=t.siamese_opt,
                              variant=getattr(args, "npc_variant", "paper"),
                              impl=getattr(args, "npc_impl", "efficient"),
                              reweight=getattr(args, "npc_weights", "on") == "on",
                              display=args.display, writer=r.writer, progress=r.progress)
        t.step += res.steps
        record = {"epoch": epoch + 1, "step": t.step, "train_loss": res.loss, "pairs_per_s": res.pairs_per_s}
        if res.weights is not None:
            record["npc"] = weight_stats(res.weights, res.indices, t.noise_mask)
            if r.writer is not None and t.noise_mask is not None:
                noisy = t.noise_mask[res.indices]
                for name, sel in (("clean", ~noisy), ("noisy", noisy)):
                    if sel.any():
                        r.writer.add_histogram(f"npc/weights_{name}", res.weights[sel], epoch + 1)
        if info.is_main:
            end_of_epoch(r, t, epoch + 1, record, evaluate_dev(t.model), res)
        barrier(info)
    return end_epoch


def end_of_epoch(r: Run, t: Trainer, epoch: int, record: Dict, dev_rows: Dict, res: EpochResult) -> None:
    """Rank 0: model selection on dev, checkpoints, metrics.jsonl, TensorBoard and the log line."""
    dev_metrics = primary_row(dev_rows)
    record["dev"] = dev_metrics
    record["dev_mean_r1"] = mean_r1(dev_metrics)
    is_best = dev_metrics["rsum"] > t.best["rsum"]
    if is_best:
        t.best = {"rsum": dev_metrics["rsum"], "mean_r1": record["dev_mean_r1"], "epoch": epoch}
    epoch_path = r.ckpt_dir / f"epoch{epoch}.pt"
    save_checkpoint(epoch_path, model=t.model, optimizer=t.optimizer, siamese_opt=t.siamese_opt, epoch=epoch,
                    step=t.step, best=t.best, args=r.args)
    atomic_copy(epoch_path, r.ckpt_dir / "latest.pt")
    if is_best:
        atomic_copy(epoch_path, r.ckpt_dir / "best.pt")
    for k, v in dev_metrics.items():
        r.writer.add_scalar(f"dev/{k}", v, epoch)
    r.writer.add_scalar("dev/mean_r1", record["dev_mean_r1"], epoch)
    msg = (f"epoch {epoch}/{r.args.epochs}: train loss {res.loss:.4f}, {res.pairs_per_s:.0f} pairs/s; "
           f"dev rsum {dev_metrics['rsum']:.1f} (mean R@1 {record['dev_mean_r1']:.1f})" + (" *best*" if is_best else ""))
    if "npc" in record:
        s = record["npc"]
        msg += f"; NPC mean w {s['mean_weight']:.3f}"
        if "weight_auc" in s:
            msg += (f" (clean {s['mean_weight_clean']:.3f} / noisy {s['mean_weight_noisy']:.3f}, "
                    f"AUC {s['weight_auc']:.3f})")
    log.info(msg)
    with open(r.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def final_evaluation(r: Run, t: Trainer, test_splits, preprocess, tokenizer) -> Dict:
    """The best dev checkpoint on the evaluation splits; writes results.json."""
    args, best = r.args, t.best
    if r.info.is_main and (r.ckpt_dir / "best.pt").is_file():
        load_checkpoint_weights(t.model, r.ckpt_dir / "best.pt")
        log.info(f"evaluating the best checkpoint (epoch {best['epoch']}, dev rsum {best['rsum']:.1f})")
    rows = r.eval_tables(t.model, test_splits, preprocess, tokenizer) if r.info.is_main else {}
    return _report(rows, r.run_dir, args, r.info, title=f"{args.name} after {args.epochs} epochs (best dev epoch "
                                                         f"{best['epoch']})", extra={"best_dev": best})


def _report(rows, run_dir: Path, args, info: DistInfo, title: str, extra: Optional[Dict] = None) -> Dict:
    if not info.is_main:
        return {}
    table = format_metrics_table(rows)
    log.info(f"{title} (encoded in {args.eval_precision}, --ties {args.ties}; ties: queries whose ground truth "
             f"scores exactly as a wrong candidate)\n{table}")
    result = {"experiments": args.experiments, "dataset": args.dataset, "noise_ratio": str(args.noise_ratio),
              "method": args.method, "eval_precision": args.eval_precision, "ties": args.ties, "results": rows,
              **(extra or {})}
    name = "eval_results.json" if args.eval else "results.json"
    atomic_write_json(run_dir / name, result)
    log.info(f"wrote {run_dir / name}")
    return result


def build_bank_only(args) -> Dict:
    """``get_memorybank.py``: (re)build the memory bank of a dataset and noise ratio, nothing else."""
    progress = show_progress(args)
    device = resolve_device(args.device)
    args.device = str(device)
    precision = resolve_precision(args.precision, device)
    autocast = autocast_for(precision, device)
    setup_logging(None, DistInfo())
    base_path = prepare_demo(args, progress)
    model, preprocess, tokenizer = create_model(args.vision_model, args.pretrained, precision=precision, device=device,
                                                context_length=args.context_length, demo_base_path=base_path)
    if args.resume:
        load_checkpoint_weights(model, resolve_resume(args.resume, Path(args.logs) / str(args.experiments) / "checkpoints"))
    train_split, noise_mask = data.load_train_split(args.dataset_root, args.dataset, args.num_anns, args.noise_ratio,
                                                    noise_seed=args.noise_seed, noise_mode=args.noise_mode,
                                                    log=log.info)
    args.rebuild_bank = True
    bank = ensure_bank(args, model, train_split, noise_mask, preprocess, tokenizer, device, autocast, progress)
    return {"image_bank": bank.image_bank, "text_bank": bank.text_bank}


USER_ERRORS = (data.DataError, FileNotFoundError, ValueError, RuntimeError)


def cli(main, argv) -> int:
    """Run a script's ``main``; problems with the user's files or flags end in one clear line."""
    try:
        main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("NPC_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
