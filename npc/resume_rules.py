"""What a resumed run or an evaluated checkpoint takes from the flags it was saved with.

``--resume`` (latest, or a checkpoint of this project) takes the flags that define the experiment
from the run's checkpoint; one given on the command line with another value is refused by name.
``--eval --resume CKPT`` takes the dataset and the model the checkpoint was trained with, unless
given (:func:`open_eval_checkpoint` reads it). Each returns the changes to make to the configuration's flags
(npc.run_setup.finish_config applies them); they belong to building the configuration, so they take the whole of it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, Tuple

from npc.errors import ConfigError
from npc.flags import EVAL_DATA_FLAGS, EVAL_MODEL_FLAGS, EVAL_SETTINGS_FLAGS, INVOCATION_FLAGS, RESUME_MAY_CHANGE
from npc.params import DATASET_CHOICES, DATASET_ROOTS, flag_name, refuse_csv_files_without_csv
from npc.paths import REPO_ROOT

# Each flag's rule is its declaration's (npc/flags.py: ``resume``, ``eval_takes``). Every saved flag defines the
# experiment unless it is a flag of this invocation only (INVOCATION_FLAGS: never taken from the run) or one the
# run keeps unless the command changes it (RESUME_MAY_CHANGE: --epochs extends or shortens a run).
# ``--eval --resume CKPT`` takes what the checkpoint was trained with from its saved flags, unless given: the data
# (EVAL_DATA_FLAGS, only when --dataset is not given or is the run's), the model (EVAL_MODEL_FLAGS) and how the
# run evaluated (EVAL_SETTINGS_FLAGS), so that its printed table is reproduced: the batch of encoding (with repeated
# captions, float noise between encoding batches decides ties), the precision and the tie rule.
__all__ = ["EVAL_DATA_FLAGS", "EVAL_MODEL_FLAGS", "EVAL_SETTINGS_FLAGS", "INVOCATION_FLAGS", "RESUME_MAY_CHANGE",
           "eval_changes", "resume_changes"]


def _same_script(a: str, b: str) -> bool:
    from npc import methods as M

    scripts = {M.METHODS[M.base_name(n)].script if M.base_name(n) in M.METHODS else n for n in (a, b)}
    return len(scripts) == 1


def eval_changes(cfg, saved: Dict) -> Tuple[Dict[str, object], Dict[str, object]]:
    """The evaluation's dataset and model from a checkpoint's saved flags: (the changes to ``cfg``, what was
    taken from the checkpoint). Flags given on the command line win; another --dataset takes none of the
    run's data flags."""
    from npc.method_flags import saved_method_fields

    explicit, now = cfg.explicit, cfg.flat()
    if saved.get("method") in ("npc", "clip") or ("method" in saved and "method_opt" not in saved):
        saved = {**saved, **saved_method_fields(saved)}  # saved by an earlier version
    taken = {}
    if "dataset" not in explicit and saved.get("dataset") in DATASET_CHOICES:
        taken["dataset"] = saved["dataset"]
    dataset = taken.get("dataset", cfg.data.dataset)
    keys = (EVAL_DATA_FLAGS if dataset == saved.get("dataset") else ()) + EVAL_MODEL_FLAGS + EVAL_SETTINGS_FLAGS
    for key in keys:
        if key in saved and key not in explicit and key in now and saved[key] != now[key]:
            taken[key] = tuple(saved[key]) if isinstance(saved[key], list) else saved[key]
    changes = dict(taken)
    if dataset in DATASET_ROOTS and not changes.get("dataset_root", cfg.data.dataset_root):
        changes["dataset_root"] = str(REPO_ROOT / DATASET_ROOTS[dataset])
    refuse_csv_files_without_csv(cfg.replace_flags(**changes).data, "the checkpoint's run")
    return changes, taken


def resume_changes(cfg, saved: Dict, source: str) -> Dict[str, object]:
    """The flags of a resumed run from its saved flags, as described above: the changes to ``cfg``.

    Saved keys this version does not know are ignored; flags the checkpoint lacks (added later)
    keep this command's values, except the method's fields, which are derived from the saved method.
    Conflicts are one :class:`ConfigError` naming every flag.
    """
    from npc.method_flags import saved_method_fields

    explicit, flat = cfg.explicit, cfg.flat()
    if saved.get("method") in ("npc", "clip") or "method_opt" not in saved:  # saved by an earlier version
        saved = {**saved, **saved_method_fields(saved)}
    conflicts, changes = [], {}
    for key, value in saved.items():
        if key in INVOCATION_FLAGS or key.startswith("_") or key not in flat:
            continue
        now = flat[key]
        if isinstance(now, tuple) and isinstance(value, list):
            value = tuple(value)
        if key in explicit and (key in RESUME_MAY_CHANGE or now == value):
            continue  # a permitted change, or the run's value (spelled as given: 0 vs 0.0 name files)
        if key == "method" and now != value and not _same_script(now, value):
            conflicts.append(f"{flag_name(key)} {now} (the run has {value})")
        elif key in explicit:
            conflicts.append(f"{flag_name(key)} {now} (the run has {value})")
        elif now != value:
            changes[key] = value
    if conflicts:
        allowed = ", ".join(flag_name(k) for k in sorted(RESUME_MAY_CHANGE | INVOCATION_FLAGS - {"eval", "resume"}))
        raise ConfigError(f"resuming {source}: {'; '.join(conflicts)}. A resumed run keeps the flags that "
                          f"define it: drop these, or start a new run under another --experiments. Flags a "
                          f"resumed run may change: {allowed}")
    return changes


def open_eval_checkpoint(cfg, note: Callable[[str], None], info=None):
    """``--eval``: the changes to ``cfg`` that take its run's dataset and model from the checkpoint (unless given)
    and give the evaluation its own folder (never the training run's), the checkpoint's path and content (or None,
    None)."""
    from npc.checkpoint import CHECKPOINT_FORMAT, resolve_resume
    from npc.config import flags_of_saved
    from npc.model import read_checkpoint

    run_of_latest = None
    if cfg.run.resume == "latest":
        if not cfg.run.experiments:
            raise ConfigError("--eval --resume latest needs --experiments NAME (the run to evaluate)")
        run_of_latest = Path(cfg.run.logs) / cfg.run.experiments
    ckpt_dir = (Path(cfg.run.checkpoint_path) if cfg.run.checkpoint_path
                else Path(cfg.run.logs) / str(cfg.run.experiments) / "checkpoints")
    path = resolve_resume(cfg.run.resume, ckpt_dir)
    ckpt = read_checkpoint(path) if path is not None else None
    changes = {}
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        changes, taken = eval_changes(cfg, flags_of_saved(ckpt))  # (refuses split files the run's dataset lacks)
        if taken:
            note(f"--eval: taken from the flags {path} was trained with: "
                 + ", ".join(f"--{k} {v}" for k, v in taken.items()) + " (flags given here override them)")
    else:
        refuse_csv_files_without_csv(cfg.data, "this evaluation")
    if path is not None:
        changes["resume"] = str(path)
        run_dir = Path(path).parent.parent  # <logs>/<run>/checkpoints/best.pt: the evaluation goes beside its run
        if ("logs" not in cfg.explicit and Path(path).parent.name == "checkpoints"
                and (run_dir / "params.txt").is_file()):
            changes["logs"] = str(run_dir.parent)
    trained_here = Path(cfg.run.logs) / str(cfg.run.experiments) / "params.txt"
    if cfg.run.experiments and (run_of_latest is not None or trained_here.exists()):
        name = f"{cfg.run.experiments}_eval_{time.strftime('%Y_%m_%d-%H_%M_%S')}"  # not the training run's folder
        if info is not None and info.enabled:  # the clock may tick between ranks: everyone takes rank 0's name
            import torch.distributed as dist

            names = [name]
            dist.broadcast_object_list(names, src=0)
            name = names[0]
        changes["experiments"] = name
    changes["checkpoint_path"] = None
    note(f"--eval: dataset {changes.get('dataset', cfg.data.dataset)}, model "
         f"{changes.get('vision_model', cfg.model.vision_model)}, weights {path or cfg.model.pretrained}")
    return changes, path, ckpt
