"""The run, top-down: :func:`run` -> :func:`fit` -> :func:`train_one_epoch` -> :func:`final_evaluation`.

``run(cfg)`` is what ``main_NPC.py`` / ``main_CLIP.py`` call. Setting a run up (processes, folder,
resumed configuration, model and data) is :mod:`npc.run_setup`; checkpoints and run folders are
:mod:`npc.checkpoint`; the memory bank is :mod:`npc.memory_bank`; one training step of a method is
:func:`npc.steps.train_step`. No argparse in here: the run's configuration (:mod:`npc.config`) and plain values.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from tqdm import tqdm

from npc import bank_update, loaders, pair_weights, steps
from npc import memory_bank as mb
from npc.checkpoint import (CHECKPOINT_FORMAT, complete_publish, publish_epoch,
                            save_checkpoint, wait_past_event_files)
from npc.cli import cli  # noqa: F401  (the scripts and tests import it from here too)
from npc.detection import weight_stats
from npc.distributed import DistInfo, barrier, gather_no_grad, mean_over_ranks
from npc.errors import ConfigError, UserError
from npc.estimators import RunInputs, WeightEstimator
from npc.evaluation import mean_r1, primary_row, results_by_split
from npc.evaluation_metrics import format_metrics_table
from npc.config import RunConfig
from npc.io import atomic_write_json, atomic_write_lines
from npc.methods import Method
from npc.model import compile_towers, load_checkpoint_weights
from npc.run_setup import Run, bank_inputs, build_model, load_train_data, setup_run
from npc.sources import dataset_definition, source_for
from npc.train_utils import lr_at, make_optimizer, set_lr, set_rng_state, to_device

log = logging.getLogger("npc")


class NonFiniteLoss(UserError, RuntimeError):
    pass


@dataclass
class Trainer:
    """The state a training run carries from epoch to epoch."""

    method: Method
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    estimator: Optional[WeightEstimator]
    step_fn: Callable                       # batch -> the step's outputs (the method's train_step)
    sampler: loaders.EpochBatchSampler
    loader: torch.utils.data.DataLoader
    lr_fn: Callable
    noise_mask: np.ndarray
    dataset: loaders.PairBatches
    bank_in_force: Optional[str] = None   # --bank_update: the run's latest bank (a folder of the run), else None
    start_epoch: int = 0
    step: int = 0
    best: Dict = field(default_factory=lambda: {"rsum": -1.0, "epoch": -1})

    @property
    def optimizers(self):
        return [self.optimizer, *self.estimator.optimizers]


def run(cfg: RunConfig) -> Dict:
    """Train (or only evaluate) as configured by ``cfg``; returns the final result dict."""
    with ExitStack() as stack:
        r = setup_run(cfg, stack)
        cfg = r.cfg  # the run's final configuration (device, name, a resumed run's flags)
        model, preprocess, tokenizer = build_model(r)
        test_splits = [source_for(cfg.data).load_split(s) for s in cfg.data.eval_split_names]
        if cfg.run.eval:
            r.load_resumed_weights(model)
            rows = r.eval_tables(model, test_splits, preprocess, tokenizer) if r.info.is_main else {}
            return _report(rows, r.run_dir, cfg, r.info, title=f"evaluation of {r.resume_path or cfg.model.pretrained}",
                           splits=test_splits)
        train_split, noise_mask, dev = load_train_data(r)
        check_initial_model(r, model, dev, preprocess, tokenizer)
        trainer = build_trainer(r, model, preprocess, tokenizer, train_split, noise_mask)
        open_logs(r, trainer, stack)
        r.state.started = True  # from here on a failure keeps the run's folder (its logs, its checkpoints)
        end_epoch = fit(r, trainer, lambda m: r.eval_tables(m, [dev], preprocess, tokenizer))
        if end_epoch < cfg.optim.epochs:
            log.info(f"stopped after epoch {end_epoch} (--stop_after); continue with "
                     f"--experiments {cfg.run.experiments} --resume latest")
            return {"stopped_after": end_epoch}
        return final_evaluation(r, trainer, test_splits, preprocess, tokenizer)


def check_initial_model(r: Run, model, dev, preprocess, tokenizer) -> None:
    """A new run on a user's data whose method builds no memory bank (whose build checks the model itself,
    npc/self_check.py) checks that its initial model tells the dev split's pairs apart: one line either way."""
    cfg = r.cfg
    if (not r.info.is_main or r.resume_path is not None or dataset_definition(cfg.data.dataset).generated
            or "bank" in cfg.method.method().needs):
        return
    from npc.self_check import check_model

    check = check_model(model, dev, preprocess, tokenizer, device=r.device, autocast=r.autocast,
                        batch_size=cfg.evaluation.eval_batch_size, num_workers=cfg.data.num_workers,
                        what="the dev split's pairs")
    (log.info if check["can_see"] else log.warning)(f"the initial model: {check['message']}")
    r.state.self_check = {"of": "the initial model on the dev split", **check}


def bank_self_check(cfg) -> Optional[Dict]:
    """The self-check the memory bank's info file records (the bank's model on the training pairs), or None."""
    try:
        info = mb.bank_paths(mb.bank_dir_for(cfg.data, cfg.model), cfg.data.noise_ratio, cfg.data.noise_mode)[2]
        return {"of": "the memory bank's model on the training pairs",
                **json.loads(info.read_text(encoding="utf-8"))["self_check"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_trainer(r: Run, model, preprocess, tokenizer, train_split, noise_mask) -> Trainer:
    """What the method needs (memory bank, p(clean), its training subset) from the initial weights,
    the resumed weights, the method's estimator and step, the optimizer, the loader and lr schedule,
    and the resumed training state."""
    cfg, info = r.cfg, r.info
    method = cfg.method.method()
    needs = method.needs
    if "noise_mask" in needs and noise_mask is None:
        raise ConfigError(f"--method {method.name} needs the ground-truth noise mask of a split this project made "
                         f"(benchmark only)")
    bank = p_clean = subset = None
    if "bank" in needs:  # every rank encodes its share when the bank is built
        bank = mb.ensure_bank(bank_inputs(cfg), model, train_split, noise_mask, preprocess, tokenizer, r.device, r.autocast,
                              r.progress, info=info)
        r.state.self_check = bank_self_check(cfg)
    if "p_clean" in needs:  # the CLIP baselines on the bank's GMM: p(clean) from the same build
        p_clean = mb.load_pclean(mb.bank_dir_for(cfg.data, cfg.model), cfg.data.noise_ratio, len(train_split),
                                 cfg.data.noise_mode)
    if not method.uses_bank:
        bank = None  # plain CLIP batches: no bank pairs
    if method.subset == "gmm_clean":
        subset = np.nonzero(p_clean > cfg.bank.clean_threshold)[0]
        log.info(f"--method {method.name}: training on the {len(subset)} pairs with p(clean) > {cfg.bank.clean_threshold}")
    elif method.subset == "oracle_clean":
        subset = np.nonzero(~noise_mask)[0]
        log.info(f"--method {method.name} (benchmark only): training on the {len(subset)} truly clean pairs")
    estimator = method.build_estimator()
    make_opt = partial(make_optimizer, lr=cfg.optim.lr, beta1=cfg.optim.beta1, beta2=cfg.optim.beta2, eps=cfg.optim.eps,
                       weight_decay=cfg.optim.weight_decay)
    # from the initial weights (OSA's frozen copy is the initial model)
    estimator.bind(RunInputs(model=model, make_optimizer=make_opt, info=info, batch_size=cfg.optim.batch_size,
                             seed=cfg.optim.seed, p_clean=p_clean, noise_mask=noise_mask, epochs=cfg.optim.epochs))
    r.load_resumed_weights(model)
    optimizer = make_opt(model)
    if cfg.model.torchcompile:
        for m in (model, *estimator.trained_models):
            compile_towers(m)
        log.info("torch.compile: image and text transformers (the first steps compile)")
    step_fn = partial(steps.train_step, model, optimizer, estimator=estimator, objective=method.build_objective(),
                      info=info, autocast=r.autocast, grad_clip=cfg.optim.grad_clip, reweight=method.reweight)

    image_source = None
    if cfg.data.image_cache:
        from npc.image_cache import ImageCache

        open_cache = partial(ImageCache, cfg.data.image_cache, f"{cfg.data.dataset}_train", train_split.image_paths,
                             preprocess, split=train_split)  # its unreadable images are left out or named
        if info.is_main:  # rank 0 builds (or validates) the cache; the others open it afterwards
            image_source = open_cache(num_workers=cfg.data.num_workers, progress=r.progress, log=log.info)
        barrier(info)
        if image_source is None:
            image_source = open_cache(log=lambda *_: None)
    dataset = loaders.PairBatches(train_split, preprocess, tokenizer, bank, image_source=image_source,
                               skip_unreadable=cfg.data.skip_unreadable_images)
    sampler = loaders.EpochBatchSampler(len(train_split) if subset is None else len(subset),
                                     cfg.optim.batch_size, cfg.optim.seed, info.rank, info.world_size, indices=subset)
    lr_fn = partial(lr_at, base_lr=cfg.optim.lr, warmup=cfg.optim.warmup, total_steps=len(sampler) * cfg.optim.epochs,
                    epochs=cfg.optim.epochs, schedule=cfg.optim.lr_schedule)
    loader = loaders.train_loader(dataset, sampler, cfg.data.num_workers, persistent=not method.bank_update)
    trainer = Trainer(method=method, model=model, optimizer=optimizer, estimator=estimator, step_fn=step_fn,
                      sampler=sampler, loader=loader, lr_fn=lr_fn, noise_mask=noise_mask, dataset=dataset)
    restore_training_state(trainer, r.resume_ckpt, r.ckpt_dir, info.is_main, resume_path=r.resume_path,
                           keep=cfg.run.keep_checkpoints)
    r.resume_ckpt = None  # optimizer states can be large: not kept for the whole run
    if trainer.bank_in_force:  # the bank a resumed --bank_update run had rebuilt
        bank_update.use_bank(r, trainer, trainer.bank_in_force)
    return trainer


def fit(r: Run, t: Trainer, evaluate_dev: Callable) -> int:
    """Train from ``t.start_epoch`` to ``--epochs`` (or ``--stop_after`` epochs); returns the last epoch."""
    cfg, info = r.cfg, r.info
    end_epoch = cfg.optim.epochs if not cfg.run.stop_after else min(cfg.optim.epochs, t.start_epoch + cfg.run.stop_after)
    for epoch in range(t.start_epoch, end_epoch):
        t.sampler.set_epoch(epoch)
        t.estimator.on_epoch(epoch, cfg.optim.epochs)
        try:
            res = train_one_epoch(t.step_fn, t.loader, model=t.model, optimizers=t.optimizers, epoch=epoch,
                                  start_step=t.step, lr_fn=t.lr_fn, device=r.device, info=info,
                                  display=cfg.run.display, writer=r.writer, progress=r.progress)
        except NonFiniteLoss as e:
            raise NonFiniteLoss(f"{e}. {non_finite_remedy(r)}") from None
        t.step += res.steps
        record = {"epoch": epoch + 1, "step": t.step, "train_loss": res.loss, "pairs_per_s": res.pairs_per_s}
        if t.method.bank_update and (epoch + 1) % t.method.bank_update == 0 and epoch + 1 < cfg.optim.epochs:
            record["bank"] = bank_update.update_bank(r, t, epoch + 1)
        if res.skipped_images:
            record["skipped_images"] = res.skipped_images
            log.warning(f"epoch {epoch + 1}: left out the pairs of {res.skipped_images} unreadable image(s) "
                        f"(--skip_unreadable_images)")
        if res.weights is not None:  # the method's per-pair weights (whatever estimator gave them)
            record["weights"] = weight_stats(res.weights, res.indices, t.noise_mask)
            if r.writer is not None and t.noise_mask is not None:
                noisy = t.noise_mask[res.indices]
                for name, sel in (("clean", ~noisy), ("noisy", noisy)):
                    if sel.any():
                        r.writer.add_histogram(f"weights/{name}", res.weights[sel], t.step)
        if info.is_main:  # what the method did to each pair (npc/pair_weights.py), before the checkpoint
            pair_weights.record_epoch(r.run_dir, epoch + 1, t.dataset.split, t.method.name, t.sampler,
                                      res.weights, res.indices, dataset_root=cfg.data.dataset_root)
        if info.is_main:
            end_of_epoch(r, t, epoch + 1, record, evaluate_dev(t.model), res)
        barrier(info)
    return end_epoch


def non_finite_remedy(r: Run) -> str:
    """What is kept of a run whose loss stopped being finite, and what to try (true of this run)."""
    from npc.checkpoint import checkpoint_epoch, latest_checkpoint

    cfg = r.cfg
    kept = latest_checkpoint(r.ckpt_dir)
    lower = f"a lower --lr than {cfg.optim.lr:g}" + ("" if cfg.optim.precision == "fp32" else
                                                    f" or --precision fp32 (this run: {cfg.optim.precision})")
    if kept is None:
        return (f"No checkpoint was written (none before epoch 1 ended): run it again under the same --experiments "
                f"with {lower}")
    return (f"Its last checkpoint (epoch {checkpoint_epoch(kept)}, {kept}) is kept; a resumed run keeps its --lr: "
            f"start a new run (another --experiments) with {lower}")


@dataclass
class EpochResult:
    loss: float
    steps: int
    pairs_per_s: float
    weights: Optional[np.ndarray] = None      # NPC weights of the epoch's pairs (rank 0 gathers all ranks)
    indices: Optional[np.ndarray] = None
    skipped_images: int = 0                   # distinct unreadable images left out (--skip_unreadable_images)


def train_one_epoch(step_fn: Callable, loader, *, model, optimizers, epoch: int, start_step: int, lr_fn, device,
                    info: DistInfo, display: int = 50, writer=None, progress: bool = True) -> EpochResult:
    """One epoch of ``step_fn(batch) -> {loss, weights, grad_norm, ...}`` (the method's step); the lr of
    every optimizer in ``optimizers`` follows ``lr_fn``. Weights a step returns are gathered for the
    epoch's statistics."""
    model.train()
    step = start_step
    total, n_steps, n_pairs = 0.0, 0, 0
    weights, indices = [], []
    t0 = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not (progress and info.is_main), leave=False,
               dynamic_ncols=True)
    skipped = set()
    n_total = len(loader)
    every = max(1, math.ceil(n_total / 20))  # a progress line in the log every 5% of the epoch, at least
    for batch in bar:
        lr = lr_fn(step, epoch)
        set_lr(optimizers, lr)
        skipped.update(batch.pop("skipped_images", torch.empty(0, dtype=torch.int64)).tolist())
        batch = to_device(batch, device)
        out = step_fn(batch)
        if out.get("weights") is not None:
            weights.append(gather_no_grad(out["weights"].detach(), info).cpu())
            indices.append(gather_no_grad(batch["index"], info).cpu())
        loss, rows = mean_over_ranks(out["loss"], len(batch["index"]), info)  # the global batch's, not rank 0's
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss {loss} at epoch {epoch + 1}, step {step}; stopping")
        total += loss
        n_steps += 1
        n_pairs += rows
        step += 1
        rate = n_pairs / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", pairs_s=f"{rate:.0f}")
        if writer is not None and (step % display == 0 or n_steps == 1):
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/grad_norm", float(out["grad_norm"]), step)
            writer.add_scalar("train/pairs_per_s", rate, step)
            if out.get("weights") is not None:
                writer.add_scalar("weights/mean", float(out["weights"].mean()), step)
            if "bank_loss" in out:
                writer.add_scalar("train/bank_loss", float(out["bank_loss"]), step)
        if info.is_main and (step % display == 0 or n_steps % every == 0 or n_steps == n_total):
            log.info(f"epoch {epoch + 1} step {step} ({n_steps}/{n_total} of the epoch) loss {loss:.4f} lr {lr:.3e} "
                     f"pairs/s {rate:.0f}")
    elapsed = time.perf_counter() - t0
    if info.uneven:  # every rank's unreadable images (rank 0 reports them)
        skipped = set(gather_no_grad(torch.tensor(sorted(skipped), dtype=torch.int64), info).tolist())
    return EpochResult(loss=total / max(n_steps, 1), steps=n_steps, pairs_per_s=n_pairs / max(elapsed, 1e-9),
                       weights=torch.cat(weights).numpy() if weights else None,
                       indices=torch.cat(indices).numpy() if indices else None, skipped_images=len(skipped))


def end_of_epoch(r: Run, t: Trainer, epoch: int, record: Dict, dev_rows: Dict, res: EpochResult) -> None:
    """Rank 0: model selection on dev, metrics.jsonl and TensorBoard, then the checkpoints.

    The metrics are on disk before latest.pt moves on: a kill in between runs the epoch again on
    resume (which drops the repeated record), so an epoch's metrics can never be lost. The epoch's
    checkpoint is written whole, then published (npc/checkpoint.py publish_epoch).
    """
    dev_metrics = primary_row(dev_rows)
    record["dev"] = dev_metrics
    record["dev_mean_r1"] = mean_r1(dev_metrics)
    is_best = dev_metrics["rsum"] > t.best["rsum"]
    if is_best:
        t.best = {"rsum": dev_metrics["rsum"], "mean_r1": record["dev_mean_r1"], "epoch": epoch}
    for k, v in dev_metrics.items():
        r.writer.add_scalar(f"dev/{k}", v, t.step)
    r.writer.add_scalar("dev/mean_r1", record["dev_mean_r1"], t.step)
    r.writer.add_scalar("dev/epoch", epoch, t.step)
    r.writer.flush()
    with open(r.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())
    msg = (f"epoch {epoch}/{r.cfg.optim.epochs}: train loss {res.loss:.4f}, {res.pairs_per_s:.0f} pairs/s; "
           f"dev rsum {dev_metrics['rsum']:.1f} (mean R@1 {record['dev_mean_r1']:.1f})" + (" *best*" if is_best else ""))
    if "weights" in record:
        s = record["weights"]
        msg += f"; mean weight {s['mean_weight']:.3f}"
        if s.get("weight_auc") is None and "weight_auc" in s:
            msg += " (AUC not measurable: real noise, no ground-truth mask)"
        elif "weight_auc" in s:
            msg += (f" (clean {s['mean_weight_clean']:.3f} / noisy {s['mean_weight_noisy']:.3f}, "
                    f"AUC {s['weight_auc']:.3f})")
    log.info(msg)
    epoch_path = r.ckpt_dir / f"epoch{epoch}.pt"
    ckpt = save_checkpoint(epoch_path, model=t.model, optimizer=t.optimizer, epoch=epoch, step=t.step, best=t.best,
                           config=r.cfg.sections(), name=r.cfg.model.name, vision_model=r.cfg.model.vision_model,
                           extra={**t.estimator.state_dict(),
                                               "bank_in_force": t.bank_in_force, "fingerprints": r.fingerprints})
    publish_epoch(ckpt, epoch_path, is_best, keep=r.cfg.run.keep_checkpoints)


def final_evaluation(r: Run, t: Trainer, test_splits, preprocess, tokenizer) -> Dict:
    """The best dev checkpoint on the evaluation splits; writes results.json."""
    cfg, best = r.cfg, t.best
    if r.info.is_main and (r.ckpt_dir / "best.pt").is_file():
        load_checkpoint_weights(t.model, r.ckpt_dir / "best.pt")
        log.info(f"evaluating the best checkpoint (epoch {best['epoch']}, dev rsum {best['rsum']:.1f})")
    rows = r.eval_tables(t.model, test_splits, preprocess, tokenizer) if r.info.is_main else {}
    return _report(rows, r.run_dir, cfg, r.info, title=f"{cfg.model.name} after {cfg.optim.epochs} epochs (best dev epoch "
                                                         f"{best['epoch']})",
                   extra={"best_dev": best, "self_check": r.state.self_check,  # the verdict: null where none ran
                          **({"pair_decisions": r.decisions} if r.decisions else {})},
                   splits=test_splits)


def _report(rows, run_dir: Path, cfg, info: DistInfo, title: str, extra: Optional[Dict] = None,
            splits=()) -> Dict:
    """Print the table of ``rows``; write results.json (eval_results.json) keyed by split name."""
    if not info.is_main:
        return {}
    table = format_metrics_table(rows)
    e = cfg.evaluation
    log.info(f"{title} (encoded in {e.eval_precision}, --ties {e.ties}, --eval_batch_size {e.eval_batch_size}; ties: "
             f"queries whose ground truth scores exactly as a wrong candidate)\n{table}")
    result = {"experiments": cfg.run.experiments, "dataset": cfg.data.dataset, "noise_ratio": str(cfg.data.noise_ratio),
              "method": cfg.method.name, "eval_precision": e.eval_precision, "ties": e.ties,
              "eval_batch_size": e.eval_batch_size,
              "results": results_by_split(rows, splits),
              **(extra or {})}
    name = "eval_results.json" if cfg.run.eval else "results.json"
    atomic_write_json(run_dir / name, result)
    log.info(f"wrote {run_dir / name}")
    return result


def restore_training_state(t: Trainer, ckpt: Optional[Dict], ckpt_dir: Path, is_main: bool,
                           resume_path: Optional[Path] = None, keep: int = 0) -> None:
    """Optimizers, epoch, step, best and RNG of a checkpoint of this project (weights are already loaded);
    rank 0 finishes publishing it if a kill cut that short (best.pt, latest.pt)."""
    if ckpt is None:
        return
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT and "optimizer" in ckpt:
        t.optimizer.load_state_dict(ckpt["optimizer"])
        t.estimator.load_state_dict(ckpt)
        t.start_epoch, t.step, t.best = ckpt["epoch"], ckpt["step"], ckpt["best"]
        t.bank_in_force = ckpt.get("bank_in_force")
        set_rng_state(ckpt["rng"])
        log.info(f"resuming after epoch {t.start_epoch} (step {t.step})")
        if is_main and resume_path is not None:
            complete_publish(ckpt_dir, resume_path, ckpt, keep)
    else:
        log.info("the resumed checkpoint has weights only (e.g. the reference release's): training starts at epoch 1")


def open_logs(r: Run, t: Trainer, stack: ExitStack) -> None:
    """TensorBoard and metrics.jsonl from where the checkpoint stands: what a killed run logged after
    its last checkpoint is dropped (the epoch runs again), so nothing is counted twice."""
    if not r.info.is_main:
        return
    from torch.utils.tensorboard import SummaryWriter

    resumed = t.step > 0
    if resumed:
        wait_past_event_files(r.run_dir / "tensorboard")
    # Every event is logged at a global step; events of the earlier run after the checkpoint's step are hidden.
    r.writer = SummaryWriter(str(r.run_dir / "tensorboard"), purge_step=t.step + 1 if resumed else None)
    stack.callback(r.writer.close)
    metrics = r.run_dir / "metrics.jsonl"
    if resumed and metrics.is_file():
        kept = []
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["epoch"] <= t.start_epoch:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                pass  # a line cut short by a kill
        atomic_write_lines(metrics, kept)
