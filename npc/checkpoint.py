"""A run's folder and checkpoints: naming, locking, resuming, and what survives a kill.

Each run writes ``<logs>/<experiments>/`` (docs/running.md). Every file is written atomically; the
epoch checkpoint is complete before ``best.pt`` (its weights) is written and it becomes ``latest.pt``
(renamed, or copied when ``--keep_checkpoints`` keeps epoch files), so a run stopped anywhere resumes
(docs/failure.md). By default a run keeps two files: ``latest.pt`` (the full training state) and
``best.pt`` (weights only).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from npc.config import RunPaths
from npc.distributed import DistInfo, barrier
from npc.errors import ConfigError, ExistingFileError, MissingFileError
from npc.io import atomic_copy, atomic_torch_save, make_dir
from npc.model import read_checkpoint
from npc.train_utils import rng_state

CHECKPOINT_FORMAT = "npc-reimpl/1"
log = logging.getLogger("npc")


def checkpoint_dict(*, model, optimizer, epoch: int, step: int, best: Dict, config: Dict, name: str,
                    vision_model: str, extra: Optional[Dict] = None) -> Dict:
    """Weights, optimizer, epoch, step, best, RNG and the run's configuration (``config``: its sections as
    plain values, :meth:`npc.config.RunConfig.sections`); ``extra``: the estimator's state."""
    return {"format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "name": name, "vision_model": vision_model,
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "best": best, "rng": rng_state(),
            "config": config, **(extra or {})}


# What a run says when a checkpoint cannot be written for want of space (its earlier checkpoints are whole).
FULL_DISK_REMEDY = ("the run's earlier checkpoints are kept: free some space (or raise the file-size limit, "
                    "ulimit -f), then continue the run with --resume latest")


def save_checkpoint(path: Path, **kwargs) -> Dict:
    """Write :func:`checkpoint_dict` atomically to ``path``; returns it. A full disk is one line naming ``path``
    (:class:`~npc.errors.DiskFullError`); the files already there stay as they were."""
    ckpt = checkpoint_dict(**kwargs)
    atomic_torch_save(ckpt, path, what="checkpoint", remedy=FULL_DISK_REMEDY)
    return ckpt


# What evaluation needs of a checkpoint: best.pt keeps these (no optimizer states, no RNG).
WEIGHTS_KEYS = ("format", "epoch", "step", "name", "vision_model", "state_dict", "best", "config", "args",
                "fingerprints")


def write_best(ckpt: Dict, path: Path) -> None:
    """``best.pt``: the weights of the best epoch, its epoch, dev scores and the run's flags (no optimizer
    states: evaluation and ``--eval --resume`` need none, and they are 2-4 times the weights' size)."""
    atomic_torch_save({k: ckpt[k] for k in WEIGHTS_KEYS if k in ckpt}, path, what="checkpoint", remedy=FULL_DISK_REMEDY)


def epoch_files(ckpt_dir: Path) -> Dict[int, Path]:
    """``epoch<k>.pt`` files of a checkpoint folder by epoch."""
    return {int(p.stem[5:]): p for p in Path(ckpt_dir).glob("epoch*.pt") if p.stem[5:].isdigit()}


def checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint of this project records (-1 when unreadable); reads only that entry (mmap)."""
    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["epoch"])
    except Exception:
        return -1


def publish_epoch(ckpt: Dict, epoch_path: Path, is_best: bool, keep: int = 0) -> None:
    """Publish the complete epoch file ``epoch_path`` (written from ``ckpt``): ``best.pt`` (weights only,
    when the epoch is the best so far), then ``latest.pt``, then drop the epoch files beyond ``keep``.

    ``keep`` 0 renames the epoch file to latest.pt (no copy; atomic), K > 0 copies it and keeps the
    last K epoch files, -1 keeps all. A kill before latest.pt moves on resumes from the epoch file
    (:func:`latest_checkpoint`), and :func:`complete_publish` finishes what this did not.
    """
    ckpt_dir = epoch_path.parent
    if is_best:
        write_best(ckpt, ckpt_dir / "best.pt")
    latest = ckpt_dir / "latest.pt"
    if keep == 0:
        os.replace(epoch_path, latest)
        _fsync_dir(ckpt_dir)
    else:
        atomic_copy(epoch_path, latest)
    prune_epoch_files(ckpt_dir, ckpt["epoch"], keep)


def prune_epoch_files(ckpt_dir: Path, epoch: int, keep: int) -> None:
    """After epoch ``epoch`` is in latest.pt: delete the epoch files older than the last ``keep`` (-1: none)."""
    if keep < 0:
        return
    for k, p in epoch_files(ckpt_dir).items():
        if k <= epoch - keep:
            p.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def latest_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    """The checkpoint of the last finished epoch: ``latest.pt``, or an ``epoch<k>.pt`` of a later epoch.

    Every file is complete (written atomically), and an epoch file is written before it becomes
    latest.pt (renamed or copied), so a run stopped between the two (a kill, a full disk) resumes
    from the epoch file.
    """
    epochs = epoch_files(ckpt_dir)
    latest = Path(ckpt_dir) / "latest.pt"
    if latest.is_file() and (not epochs or checkpoint_epoch(latest) >= max(epochs)):
        return latest
    return epochs[max(epochs)] if epochs else None


def resolve_resume(resume: Optional[str], ckpt_dir: Path) -> Optional[Path]:
    if not resume:
        return None
    path = (latest_checkpoint(ckpt_dir) or ckpt_dir / "latest.pt") if resume == "latest" else Path(resume)
    if not path.is_file():
        raise MissingFileError(f"--resume {resume}: checkpoint not found: {path}")
    return path


def name_run(paths: RunPaths, default_name: str, info: DistInfo):
    """The run's name, folder and checkpoint folder (a new run without --experiments gets ``default_name`` and a
    timestamp)."""
    experiments = paths.experiments
    if not experiments:
        if paths.resume == "latest":
            raise ConfigError("--resume latest needs --experiments NAME (the run to continue)")
        experiments = f"{default_name}_{time.strftime('%Y_%m_%d-%H_%M_%S')}"
        if info.enabled:  # the clock may tick between ranks: everyone takes rank 0's name
            import torch.distributed as dist

            name = [experiments]
            dist.broadcast_object_list(name, src=0)
            experiments = name[0]
    if Path(experiments).name != experiments or experiments in (".", "..") or Path(experiments).is_absolute():
        raise ConfigError(f"--experiments {experiments}: a run's name is a plain folder name inside --logs_dir "
                          f"{paths.logs} (no / or ..); to write elsewhere, pass --logs_dir")
    run_dir = Path(paths.logs) / experiments
    ckpt_dir = Path(paths.checkpoint_path) if paths.checkpoint_path else run_dir / "checkpoints"
    if paths.resume == "latest" and not paths.eval and not run_dir.exists() and latest_checkpoint(ckpt_dir) is None:
        raise no_run_to_continue(run_dir, ckpt_dir)  # before any folder is made (every rank sees the same)
    if info.is_main:
        make_dir(run_dir, f"the run folder {run_dir.name} (--experiments)")
    barrier(info)
    return experiments, run_dir, ckpt_dir


def no_run_to_continue(run_dir: Path, ckpt_dir: Path) -> MissingFileError:
    return MissingFileError(f"--resume latest: {run_dir} holds no run to continue (no checkpoint in {ckpt_dir}); "
                             f"check --experiments")


def open_resume(paths: RunPaths, run_dir: Path, ckpt_dir: Path, note: Callable[[str], None]):
    """``--resume`` as the run takes it (None when there is nothing to resume after all), and the checkpoint
    to resume (path and content), or (None, None).

    ``--resume latest`` on a run that died before its first checkpoint starts it again (a run folder
    must never get stuck); on a name that holds no run at all it is an error (a typo).
    """
    resume = paths.resume
    if resume == "latest" and not paths.eval and latest_checkpoint(ckpt_dir) is None:
        if not (run_dir / "params.txt").exists():
            raise no_run_to_continue(run_dir, ckpt_dir)
        note(f"--resume latest: {run_dir} has no checkpoint yet (its run ended before the first one): "
             f"starting it again with this command's flags")
        resume = None
    path = resolve_resume(resume, ckpt_dir)
    return resume, *((path, read_checkpoint(path)) if path is not None else (None, None))


def reclaim_run_folder(run_dir: Path, ckpt_dir: Path, info: DistInfo) -> None:
    """Start a run folder again if its run ended before its first checkpoint; refuse if it holds one."""
    if latest_checkpoint(ckpt_dir) is not None or (run_dir / "results.json").exists():
        raise ConfigError(f"{run_dir} already holds a run; continue it with --resume latest or choose "
                         f"another --experiments")
    if info.is_main:  # the dead run's partial logs would mix with this run's
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def check_resume_target(run_dir: Path, ckpt_dir: Path, resume_path: Path, info: DistInfo) -> None:
    """A run may resume into its folder only from that folder's latest state (``--resume latest``, or the
    path of its newest checkpoint). A folder that holds a run (a checkpoint or results) is refused any
    other checkpoint (the same run's best.pt or an older epoch file, another run's): resuming it would
    replace the run's checkpoints and mix both histories in its metrics, TensorBoard and pair weights.
    A folder whose run ended before its first checkpoint is reclaimed, as a fresh run reclaims it."""
    own = latest_checkpoint(ckpt_dir)
    if own is not None and Path(resume_path).resolve() == own.resolve():
        return
    if own is not None or (run_dir / "results.json").exists():
        held = f"its latest checkpoint {own}" if own is not None else "its results.json"
        raise ExistingFileError(f"--resume {resume_path}: {run_dir} already holds a run ({held}); resuming another "
                                f"checkpoint into it would replace that run's checkpoints and mix both histories: "
                                f"continue it with --resume latest, or start from {resume_path} under another "
                                f"--experiments")
    if (run_dir / "params.txt").exists():
        reclaim_run_folder(run_dir, ckpt_dir, info)


def repair_best(ckpt_dir: Path, ckpt: Dict) -> None:
    """Make best.pt the epoch the resumed checkpoint ``ckpt`` names as best (a kill may have cut its write)."""
    best = ckpt.get("best", {})
    if best.get("epoch", -1) < 1:
        return
    dst = ckpt_dir / "best.pt"
    if dst.is_file():
        try:
            held = torch.load(dst, map_location="cpu", mmap=True, weights_only=True)
            if held.get("epoch") == best["epoch"] and held.get("best") == best:
                return
        except Exception:
            pass
    if ckpt.get("epoch") == best["epoch"]:
        write_best(ckpt, dst)
        log.info(f"restored {dst} from the resumed checkpoint (the best epoch so far, {best['epoch']})")
    elif (src := ckpt_dir / f"epoch{best['epoch']}.pt").is_file():
        write_best(read_checkpoint(src), dst)
        log.info(f"restored {dst} from {src.name} (the best epoch so far)")
    else:
        log.warning(f"{dst} does not hold the best epoch ({best['epoch']}) and no checkpoint of that epoch is "
                    f"left to restore it from")


def remove_stale_temporaries(ckpt_dir: Path) -> None:
    """Temporary files of checkpoint writes a kill cut short (the run's lock is held: no writer is live)."""
    for p in Path(ckpt_dir).glob(".*.pt.*.tmp"):
        p.unlink(missing_ok=True)


def complete_publish(ckpt_dir: Path, resumed: Path, ckpt: Dict, keep: int) -> None:
    """On resume (rank 0): finish the publishing of the resumed checkpoint that a kill or a full disk cut
    short (best.pt; latest.pt when it is an epoch file newer than latest.pt; the epoch files beyond
    ``keep``) and remove the temporary files of cut writes."""
    remove_stale_temporaries(ckpt_dir)
    repair_best(ckpt_dir, ckpt)
    resumed, latest = Path(resumed), Path(ckpt_dir) / "latest.pt"
    if resumed.parent.resolve() != Path(ckpt_dir).resolve() or resumed.name == "latest.pt" \
            or resumed.name not in {p.name for p in epoch_files(ckpt_dir).values()}:
        return
    if latest.is_file() and checkpoint_epoch(latest) >= ckpt["epoch"]:
        return
    if keep == 0:
        os.replace(resumed, latest)
        _fsync_dir(Path(ckpt_dir))
    else:
        atomic_copy(resumed, latest)
    log.info(f"published {resumed.name} as {latest} (the earlier run stopped before it did)")
    prune_epoch_files(ckpt_dir, ckpt["epoch"], keep)


def wait_past_event_files(logdir: Path) -> None:
    """Wait until the clock has left the second in which the newest event file of ``logdir`` was made.

    TensorBoard reads a run's event files in name order, and a name starts with the second its file
    was created in. A resumed run's file must sort after the earlier ones, or its ``purge_step``
    hides the wrong events; within the same second the order would fall to the process ids.
    """
    made = [int(f.name.split(".")[3]) for f in logdir.glob("events.out.tfevents.*")
            if len(f.name.split(".")) > 4 and f.name.split(".")[3].isdigit()]
    if made:
        time.sleep(max(0.0, max(made) + 1 - time.time()))
