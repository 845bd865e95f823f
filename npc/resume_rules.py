"""What a resumed run or an evaluated checkpoint takes from the flags it was saved with.

``--resume`` (latest, or a checkpoint of this project) takes the flags that define the experiment
from the run's checkpoint; one given on the command line with another value is refused by name.
``--eval --resume CKPT`` takes the dataset and the model the checkpoint was trained with, unless
given. Both return the changes to make to the configuration's flags (:meth:`npc.config.RunConfig.replace_flags`);
both belong to building the configuration, so they take the whole of it.
"""
from __future__ import annotations

from typing import Dict, Tuple

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
