"""A run's folder and checkpoints: naming, locking, resuming, and what survives a kill.

Each run writes ``<logs>/<experiments>/`` (docs/running.md). Every file is written atomically; the
epoch checkpoint is complete before ``latest.pt`` and ``best.pt`` are copied from it, so a run
stopped anywhere resumes (docs/failure.md).
"""
from __future__ import annotations

import filecmp
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from npc.distributed import DistInfo, barrier
from npc.io import atomic_copy, atomic_torch_save
from npc.model import read_checkpoint
from npc.train_utils import rng_state

CHECKPOINT_FORMAT = "npc-reimpl/1"
log = logging.getLogger("npc")


def save_checkpoint(path: Path, *, model, optimizer, epoch: int, step: int, best: Dict, args,
                    extra: Optional[Dict] = None) -> None:
    """Weights, optimizer, epoch, step, best, RNG and the run's flags; ``extra``: the estimator's state."""
    ckpt = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "step": step, "name": args.name,
            "vision_model": args.vision_model, "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(), "best": best, "rng": rng_state(),
            "args": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))},
            **(extra or {})}
    atomic_torch_save(ckpt, path)


def publish_epoch(epoch_path: Path, is_best: bool) -> None:
    """``best.pt`` (when the epoch is the best so far), then ``latest.pt``, copied from the complete
    epoch file: a kill at either copy resumes from the epoch file (``repair_best`` mends best.pt)."""
    if is_best:
        atomic_copy(epoch_path, epoch_path.parent / "best.pt")
    atomic_copy(epoch_path, epoch_path.parent / "latest.pt")


def latest_checkpoint(ckpt_dir: Path) -> Optional[Path]:
    """The checkpoint of the last finished epoch: the highest ``epoch<k>.pt``, else ``latest.pt``.

    Every epoch file is complete (written atomically), and it is written before latest.pt is
    copied from it, so a run stopped between the two (a kill, a full disk) still resumes.
    """
    epochs = [(int(p.stem[5:]), p) for p in Path(ckpt_dir).glob("epoch*.pt") if p.stem[5:].isdigit()]
    if epochs:
        return max(epochs)[1]
    latest = Path(ckpt_dir) / "latest.pt"
    return latest if latest.is_file() else None


def resolve_resume(resume: Optional[str], ckpt_dir: Path) -> Optional[Path]:
    if not resume:
        return None
    path = (latest_checkpoint(ckpt_dir) or ckpt_dir / "latest.pt") if resume == "latest" else Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume {resume}: checkpoint not found: {path}")
    return path


def name_run(args, info: DistInfo):
    """The run's folder and checkpoint folder (a new run without --experiments gets a timestamped name)."""
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
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    return run_dir, ckpt_dir


def open_resume(args, run_dir: Path, ckpt_dir: Path, note: Callable[[str], None]):
    """The checkpoint to resume (path and content), or (None, None).

    ``--resume latest`` on a run that died before its first checkpoint starts it again (a run folder
    must never get stuck); on a name that holds no run at all it is an error (a typo).
    """
    if args.resume == "latest" and not args.eval and latest_checkpoint(ckpt_dir) is None:
        if not (run_dir / "params.txt").exists():
            raise FileNotFoundError(f"--resume latest: {run_dir} holds no run to continue (no checkpoint in "
                                    f"{ckpt_dir}); check --experiments")
        note(f"--resume latest: {run_dir} has no checkpoint yet (its run ended before the first one): "
             f"starting it again with this command's flags")
        args.resume = None
    path = resolve_resume(args.resume, ckpt_dir)
    return (path, read_checkpoint(path)) if path is not None else (None, None)


def reclaim_run_folder(run_dir: Path, ckpt_dir: Path, info: DistInfo) -> None:
    """Start a run folder again if its run ended before its first checkpoint; refuse if it holds one."""
    if latest_checkpoint(ckpt_dir) is not None or (run_dir / "results.json").exists():
        raise SystemExit(f"error: {run_dir} already holds a run; continue it with --resume latest or choose "
                         f"another --experiments")
    if info.is_main:  # the dead run's partial logs would mix with this run's
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def repair_best(ckpt_dir: Path, best: Dict) -> None:
    """Make best.pt the epoch the resumed checkpoint names as best (a kill may have cut its copy)."""
    if best.get("epoch", -1) < 1:
        return
    src, dst = ckpt_dir / f"epoch{best['epoch']}.pt", ckpt_dir / "best.pt"
    if not src.is_file():
        log.warning(f"{src} is gone: cannot check that {dst} holds the best epoch ({best['epoch']})")
    elif not dst.is_file() or not filecmp.cmp(src, dst, shallow=False):
        atomic_copy(src, dst)
        log.info(f"restored {dst} from {src.name} (the best epoch so far)")


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
