"""What a run needs before it trains: processes and device, the run's folder and lock, the configuration
of a resumed run or of the checkpoint to evaluate, the checks that must pass before anything is
written, the demo's data and base model, the model and the data. ``get_memorybank.py``'s build too.

The configuration a command line gives (:func:`npc.params.parse_args`) is finished here, in one function
(:func:`finish_config`), with what setting the run up settles: nothing assigns to it afterwards.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from npc import memory_bank as mb
from npc.config import DataConfig, ModelConfig, RunConfig, RunPaths, flags_of_saved
from npc.checkpoint import (CHECKPOINT_FORMAT, check_resume_target, name_run, open_resume, reclaim_run_folder,
                            resolve_resume)
from npc.cli import cli  # noqa: F401  (the scripts and tests import it from here too)
from npc.decisions import decisions_fingerprint, load_decided_train
from npc.demo import ensure_demo_base, ensure_demo_base_for, ensure_demo_data
from npc.distributed import DistInfo, barrier, broadcast_object, cleanup, init_distributed
from npc.fingerprints import changes, data_fingerprints, demo_base_file, weights_fingerprint
from npc.io import atomic_write_text, make_dir
from npc.locks import LockedError, file_lock
from npc.model import RANDOM_INIT_SEED, create_model, load_checkpoint_weights
from npc.errors import ConfigError
from npc.paths import REPO_ROOT  # noqa: F401  (where callers have found it)
from npc.resume_rules import open_eval_checkpoint, resume_changes
from npc.sources import dataset_definition, source_for
from npc.train_utils import autocast_for, resolve_device, resolve_precision, seed_everything
from npc.evaluation import eval_tables
from npc.run_checks import (SHORT_RUN_WARMUP, data_checks, demo_to_generate, preflight,  # noqa: F401  (also here)
                            relative_warmup)

log = logging.getLogger("npc")


def show_progress(paths: RunPaths) -> bool:
    """Progress bars in a terminal; not in log files, where every refresh would add a line."""
    return not paths.no_progress and sys.stderr.isatty()


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


@dataclass
class RunState:
    """What changes while a run goes (its configuration does not)."""

    started: bool = False   # training has begun: from here on a failure keeps the run's folder (logs, checkpoints)
    self_check: Optional[Dict] = None  # the self-check's verdict (npc/self_check.py), for results.json


@dataclass
class Run:
    """What every step of a run shares: its configuration, where it writes and how it computes."""

    cfg: RunConfig
    info: DistInfo
    device: torch.device
    precision: str
    autocast: Callable
    progress: bool
    run_dir: Path
    ckpt_dir: Path
    resume_path: Optional[Path] = None
    resume_ckpt: Optional[Dict] = None  # the checkpoint read once: config, weights and training state
    writer: Optional[object] = None  # TensorBoard, rank 0 of a training run only
    fingerprints: Dict = field(default_factory=dict)  # the data and initial weights by content (checkpoints keep them)
    state: RunState = field(default_factory=RunState)
    decisions: Optional[Dict] = None  # --pair_decisions: what they did to the training split (results.json)

    def eval_tables(self, model, splits, preprocess, tokenizer) -> Dict[str, Dict[str, float]]:
        d, e = self.cfg.data, self.cfg.evaluation
        return eval_tables(model, splits, preprocess, tokenizer, dataset=d.dataset, eval_batch_size=e.eval_batch_size,
                           device=self.device, precision=e.eval_precision, ties=e.ties, num_workers=d.num_workers,
                           progress=self.progress)

    def load_resumed_weights(self, model) -> None:
        if self.resume_path is not None:
            load_checkpoint_weights(model, self.resume_path, ckpt=self.resume_ckpt)
            log.info(f"loaded weights from {self.resume_path}")


def finish_config(cfg: RunConfig, settled: Dict) -> RunConfig:
    """The command line's configuration with what setting the run up settles (the device, the checkpoint's flags,
    the data's format, the run's name, a short run's warmup, the precision), checked as the command line's are."""
    return cfg.replace_flags(**settled)


def setup_run(cfg: RunConfig, stack: ExitStack) -> Run:
    """Device and processes; the run's name and folder, locked for this process; the configuration
    of a resumed run; precision and seed; the log file. The run holds the final configuration
    (:func:`finish_config` of what was settled; ``view`` is the run as settled so far)."""
    progress = show_progress(cfg.run)
    device = resolve_device(cfg.run.device)
    info = init_distributed(str(device))
    stack.callback(cleanup, info)
    if info.enabled and cfg.data.skip_unreadable_images:
        info = replace(info, uneven=True)  # a rank's share of a step loses the pairs of unreadable images
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    settled: Dict = {"device": str(device)}
    notes = []  # logged once the run's log file is open
    if cfg.run.eval:  # the checkpoint first: it says which data and model to evaluate, and so names the folder
        changes, eval_path, eval_ckpt = open_eval_checkpoint(cfg, notes.append, info)
        settled.update(changes)
    view = finish_config(cfg, settled)
    settled.update(data_format_found(view, notes.append))
    resumed = bool(view.run.resume) and not view.run.eval
    steps = None  # the run's optimizer steps in all, as the checks count them
    if not resumed:  # a resumed run is checked once its flags are restored
        found, steps = run_checks(view, info)
        notes += found
    existed = bool(view.run.experiments) and (Path(view.run.logs) / view.run.experiments).exists()
    default_name = (f"eval_{view.data.dataset}" if view.run.eval else
                    f"{view.method.name}_{view.data.dataset}_noise{view.data.noise_ratio}")
    settled["experiments"], run_dir, ckpt_dir = name_run(view.run, default_name, info)
    state = RunState()
    if info.is_main and not existed:
        stack.push(partial(_remove_if_setup_failed, run_dir, state))
    lock_run_folder(run_dir, info, stack)
    if view.run.eval:
        resume_path, resume_ckpt = eval_path, eval_ckpt
    else:
        settled["resume"], resume_path, resume_ckpt = open_resume(view.run, run_dir, ckpt_dir, notes.append)
        if resume_path is not None:  # only the run's own latest state continues an occupied folder
            check_resume_target(run_dir, ckpt_dir, resume_path, info)
    refuse_unnamed_model(resume_path, resume_ckpt, view)
    own = isinstance(resume_ckpt, dict) and resume_ckpt.get("format") == CHECKPOINT_FORMAT and not view.run.eval
    if own:
        settled.update(resume_changes(view, flags_of_saved(resume_ckpt), f"{resume_path}"))
    view = finish_config(cfg, settled)
    if own and "optimizer" in resume_ckpt:
        done = resume_ckpt.get("epoch", 0)
        if done > view.optim.epochs:
            raise ConfigError(f"--epochs {view.optim.epochs}: {resume_path} has already trained {done} epochs; pass "
                              f"--epochs {done} or more to continue it (or evaluate it with --eval --resume)")
        if done == view.optim.epochs:
            notes.append(f"{resume_path}: the run already has its {done} epochs; nothing to train (pass a larger "
                         f"--epochs to continue it): evaluating its best checkpoint")
    if resumed:  # (a resumed run keeps the warmup its checkpoint recorded)
        notes += run_checks(view, info)[0]
    elif steps is not None and steps < view.optim.warmup and "warmup" not in cfg.explicit:
        notes.append(f"--warmup {relative_warmup(steps)}: this run has {steps} steps in all, fewer than the default "
                     f"warmup {view.optim.warmup}, so it warms up over 10% of them (pass --warmup to choose)")
        settled["warmup"] = relative_warmup(steps)
    if not view.run.resume and not view.run.eval and (run_dir / "params.txt").exists():
        reclaim_run_folder(run_dir, ckpt_dir, info)
        notes.append(f"{run_dir}: the earlier run of this name ended before its first checkpoint; starting it again")
    settled["precision"] = precision = resolve_precision(view.optim.precision, device, view.data.dataset)
    cfg = finish_config(cfg, settled)
    seed_everything(cfg.optim.seed)  # the same on every rank: random init must agree; data order comes from the sampler
    if info.is_main and not cfg.run.eval:
        make_dir(ckpt_dir, "the run's checkpoints")
    barrier(info)
    setup_logging(run_dir, info)
    for note in notes:
        (log.warning if note.startswith("warning:") else log.info)(note)
    return Run(cfg=cfg, info=info, device=device, precision=precision, autocast=autocast_for(precision, device),
               progress=progress, run_dir=run_dir, ckpt_dir=ckpt_dir, resume_path=resume_path,
               resume_ckpt=resume_ckpt, state=state)


def refuse_unnamed_model(path: Optional[Path], ckpt, cfg: RunConfig) -> None:
    """A bare state dict names no model: without --vision_model the run would build the default one (and
    fetch its weights) for weights of unknown shape."""
    if path is None or "vision_model" in cfg.explicit:
        return
    if isinstance(ckpt, dict) and any(k in ckpt for k in ("vision_model", "name", "args", "config")):
        return
    raise ConfigError(f"--resume {path} holds weights only, without the name of their model: pass --vision_model "
                      f"(the architecture they were trained as, e.g. --vision_model ViT-B/32 or npc-tiny)")


def run_checks(cfg: RunConfig, info: DistInfo) -> Tuple[List[str], Optional[int]]:
    """:func:`preflight` and :func:`data_checks` of a configuration: their warnings, and the run's optimizer steps
    in all (None when evaluating or before the demo is generated)."""
    notes, steps = preflight(cfg.data, cfg.optim, cfg.run.eval, cfg.explicit, info)
    return notes + data_checks(cfg.data, cfg.model, cfg.run.eval), steps


def lock_run_folder(run_dir: Path, info: DistInfo, stack: ExitStack) -> None:
    """Rank 0 holds the run folder's lock for the whole run (the job's one writer). If another process
    holds it, every rank stops with the same error: none is left waiting for rank 0 at a collective."""
    refusal = None
    if info.is_main:
        try:
            stack.enter_context(file_lock(
                run_dir / ".lock", f"the run folder {run_dir}", wait=False,
                hint="another process is writing this run: wait for it to end, or choose another --experiments"))
        except LockedError as e:
            refusal = str(e)
    refusal = broadcast_object(refusal, info)
    if refusal is not None:
        raise LockedError(refusal)


def data_format_found(cfg: RunConfig, note: Callable[[str], None]) -> Dict:
    """``--data_format auto`` settled as the format found on disk (one line in the log; recorded with the run).
    The demo, generated on first use, is in the release's layout."""
    source = source_for(cfg.data)
    if not demo_to_generate(cfg.data):
        note(f"data: {cfg.data.dataset} read from {source.describe()}")
    return {} if cfg.data.data_format == source.format else {"data_format": source.format}


def check_fingerprints(r: "Run", pretrained: str, base_path: Optional[Path]) -> Dict:
    """The run's data and initial weights by content (its checkpoints record them); a resumed run's must be
    those its checkpoint recorded, or it is refused naming what changed (as a changed flag is)."""
    cfg = r.cfg
    if cfg.run.eval:
        return {}
    now = {**data_fingerprints(cfg.data), "pretrained": weights_fingerprint(pretrained, cfg.model.vision_model,
                                                                             base_path)}
    if cfg.data.pair_decisions:
        now["pair_decisions"] = decisions_fingerprint(cfg.data.pair_decisions)
    own = isinstance(r.resume_ckpt, dict) and r.resume_ckpt.get("format") == CHECKPOINT_FORMAT
    if not own:
        return now
    saved = r.resume_ckpt.get("fingerprints")
    if not saved:
        log.info(f"{r.resume_path} records no fingerprints of its data and weights (an earlier version): resuming "
                 f"without checking that they are unchanged")
        return now
    was, decided = saved.get("pair_decisions"), now.get("pair_decisions")
    if was is not None and decided is not None and was.get("sha256") != decided.get("sha256"):
        raise ConfigError(f"resuming {r.resume_path}: --pair_decisions {cfg.data.pair_decisions} changed since the run "
                          f"started (sha256 {was['sha256'][:12]}... then, {decided['sha256'][:12]}... now: "
                          f"{was['wrong']} wrong / {was['right']} right then, {decided['wrong']} / {decided['right']} "
                          f"now). A resumed run keeps the decisions it started with: restore the file, or start a new "
                          f"run under another --experiments")
    flags = source_for(cfg.data).fingerprint_flags([s for s in now if s not in ("pretrained", "pair_decisions")])
    changed = changes(saved, now, {**flags, "pretrained": f"--pretrained {cfg.model.pretrained}"})
    if changed:
        raise ConfigError(f"resuming {r.resume_path}: {'; '.join(changed)}. A resumed run keeps the data and weights "
                          f"it started with: restore them, or start a new run under another --experiments")
    return now


def _remove_if_setup_failed(run_dir: Path, state: RunState, exc_type, exc, tb) -> bool:
    """A run folder this invocation made is removed when the run fails before training starts (the error
    is printed on stderr): a failed setup leaves nothing behind."""
    if exc_type is not None and not state.started and run_dir.is_dir():
        for h in list(log.handlers):
            if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == run_dir.resolve():
                h.close()
                log.removeHandler(h)
        shutil.rmtree(run_dir, ignore_errors=True)
    return False


def eval_init_weights(model: ModelConfig, evaluating: bool, resume_path: Optional[Path], resume_ckpt) -> str:
    """The ``pretrained`` to build the model with: a checkpoint of this project replaces every weight, so
    a file or the demo base is not loaded (nor built) first; an open_clip tag still sets the architecture."""
    own = isinstance(resume_ckpt, dict) and resume_ckpt.get("format") == CHECKPOINT_FORMAT
    if evaluating and resume_path is not None and own and (model.pretrained == "demo-base"
                                                            or os.path.isfile(str(model.pretrained))):
        return "none"
    return model.pretrained


def build_model(r: Run):
    """The demo's data and base if needed and the model (initial weights); writes params.txt."""
    cfg, info = r.cfg, r.info
    pretrained = eval_init_weights(cfg.model, cfg.run.eval, r.resume_path, r.resume_ckpt)
    base_path = (prepare_demo(cfg.data, cfg.model, cfg.run.device, r.progress, base=pretrained == "demo-base")
                 if info.is_main else None)
    barrier(info)
    if base_path is None and pretrained == "demo-base":
        base_path = demo_base_file(cfg.data, cfg.model)
    r.fingerprints = check_fingerprints(r, pretrained, base_path)
    # --eval holds the weights in fp32 (an fp16 checkpoint loads exactly) and encodes at --eval_precision.
    model, preprocess, tokenizer = create_model(cfg.model.vision_model, pretrained,
                                                precision="fp32" if cfg.run.eval else r.precision,
                                                device=r.device, context_length=cfg.model.context_length,
                                                demo_base_path=base_path, init_seed=RANDOM_INIT_SEED)
    if info.is_main:
        decided = r.fingerprints.get("pair_decisions")
        atomic_write_text(r.run_dir / ("eval_params.txt" if cfg.run.eval else "params.txt"), cfg.params_text()
                          + (f"data.pair_decisions_sha256: {decided['sha256']}\n" if decided else ""))
    return model, preprocess, tokenizer


def load_train_data(r: Run):
    """The noisy training split (built on first use), its noise mask, and the dev split."""
    cfg = r.cfg
    source = source_for(cfg.data)
    train_split, noise_mask, r.decisions = load_decided_train(source, cfg.data, log=log.info)
    dev = source.load_split("dev")
    if cfg.data.dev_length:
        dev = dev.subset_captions(cfg.data.dev_length)
    wrong = "real noise, not measurable" if noise_mask is None else f"{int(noise_mask.sum())} wrong captions"
    log.info(f"train: {len(train_split)} pairs / {train_split.num_images} images "
             f"(noise {cfg.data.noise_ratio}, {cfg.data.noise_mode}: {wrong}); "
             f"dev: {dev.num_images} images; device {r.device}, precision {r.precision}, "
             f"{r.info.world_size} process(es)")
    return train_split, noise_mask, dev


def prepare_demo(data: DataConfig, model: ModelConfig, device: Optional[str], progress: bool,
                 base: bool = True) -> Optional[Path]:
    """Generate the demo data and (``base``: when the run starts from it) its base model when missing;
    returns the base model's path. Another dataset with ``base``: the demo's base (built once if missing)."""
    if not dataset_definition(data.dataset).generated:
        if not base:
            return None
        return ensure_demo_base_for(data.dataset, model.vision_model, Path(model.pretrained_dir), device=device,
                                    log=log.info, progress=progress)
    ensure_demo_data(data.dataset_root, log=log.info, progress=progress)
    if not base:
        return None
    return ensure_demo_base(data.dataset_root, model.vision_model, Path(model.pretrained_dir), device=device,
                            log=log.info, progress=progress)


def bank_inputs(cfg: RunConfig) -> "mb.BankInputs":
    """What the run's memory bank is built from (its sections)."""
    return mb.BankInputs(cfg.data, cfg.model, cfg.bank, cfg.evaluation.eval_batch_size, cfg.data.num_workers)


def build_bank_only(cfg: RunConfig) -> Dict:
    """``get_memorybank.py``: (re)build the memory bank of a dataset and noise ratio, nothing else.

    Under torchrun every rank encodes its share of the training set; rank 0 fits the GMM and writes.
    """
    progress = show_progress(cfg.run)
    device = resolve_device(cfg.run.device)
    info = init_distributed(str(device))
    try:
        if info.enabled and device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        precision = resolve_precision(cfg.optim.precision, device, cfg.data.dataset)
        cfg = finish_config(cfg, dict(device=str(device), precision=precision, rebuild_bank=True))
        autocast = autocast_for(precision, device)
        setup_logging(None, info)
        base_path = (prepare_demo(cfg.data, cfg.model, cfg.run.device, progress and info.is_main,
                                  base=cfg.model.pretrained == "demo-base") if info.is_main else None)
        barrier(info)
        if base_path is None and cfg.model.pretrained == "demo-base":
            base_path = demo_base_file(cfg.data, cfg.model)
        model, preprocess, tokenizer = create_model(cfg.model.vision_model, cfg.model.pretrained, precision=precision,
                                                    device=device, context_length=cfg.model.context_length,
                                                    demo_base_path=base_path, init_seed=RANDOM_INIT_SEED)
        weights = resolve_resume(cfg.run.resume, Path(cfg.run.logs) / str(cfg.run.experiments) / "checkpoints")
        if weights is not None:
            load_checkpoint_weights(model, weights)
        train_split, noise_mask, _ = load_decided_train(source_for(cfg.data), cfg.data, log=log.info)
        bank = mb.ensure_bank(bank_inputs(cfg), model, train_split, noise_mask, preprocess, tokenizer, device, autocast,
                              progress and info.is_main, weights=weights, info=info)
        return {"image_bank": bank.image_bank, "text_bank": bank.text_bank}
    finally:
        cleanup(info)
