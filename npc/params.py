"""The command lines of every script, generated from the flags' declarations (:mod:`npc.flags`).

``main_NPC.py``, ``main_CLIP.py``, ``get_memorybank.py``, ``find_noisy_pairs.py`` and ``check_data.py``
share one parser, built here from the declarations: every flag of the reference release (Zhang, Li, Ye,
AAAI 2024) keeps its name and meaning, so published commands run verbatim. Flags whose sensible default
depends on the dataset or the method (learning rate, model, batch size, ...) are left unset by the parser
and finished by :func:`finish_flags` (the declarations' per-dataset overlay). :func:`parse_args` returns
the read-only run configuration (:class:`npc.config.RunConfig`), its method resolved by
:mod:`npc.method_flags`; what a resumed run takes from its checkpoint is :mod:`npc.resume_rules`.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, Optional, Sequence

from npc.config import DataConfig, MethodConfig, RunConfig
from npc.datasets import DATASETS, NUM_ANNS, DEFAULT_ROOTS as DATASET_ROOTS  # live views of the sources' datasets
from npc.errors import ConfigError  # noqa: F401  (where callers have always found it)
from npc.flags import (BY_NAME, CSV_FLAGS, FLAGS, GROUPS, LEGACY_METHOD_FLAGS, METHOD_FLAGS, TRAIN, Flag, dataset_defaults,
                       used_by)
from npc.paths import PRETRAINED_DIR, REPO_ROOT
from npc.sources import FILE_DATASETS

DATASET_CHOICES = DATASETS.keys()  # live: a data source registered after this import adds its datasets
__all__ = ["CSV_FLAGS", "ConfigError", "build_parser", "parse_args"]

TITLES = {
    "npc": "NPC: negative pre-aware fine-tuning of CLIP under noisy correspondence",
    "clip": "Plain CLIP fine-tuning (symmetric InfoNCE), the baseline of NPC",
    "bank": "(Re)build the NPC memory bank of clean pairs of a dataset and noise ratio",
    "report": "Score every training pair of a dataset for mismatch (the memory bank's GMM p(clean), the pair's cosine, "
              "OSA's debiased score) and write a report folder: index.html, pairs.csv, report.json. OSA's shift is "
              "drawn from --batch_size random inputs (default: the dataset's default batch) seeded by --seed, as a "
              "--method osa run draws them",
    "check": "Check a dataset before a long run: its format, images and captions per split against the full "
             "dataset's counts, and every missing or unreadable image (docs/data.md)",
    "noise": "Create the noisy copy of a dataset's training captions used for noisy-correspondence training (or report "
             "the existing one), for any format --dataset reads"}
IGNORED = {"bank": ("get_memorybank.py", "not used to build the bank; its GMM's seed is --bank_seed"),
           "report": ("find_noisy_pairs.py", "training flags; the report uses the dataset, model and memory-bank flags"),
           "check": ("check_data.py", "the check reads the data flags only")}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each default once: a help text that states its default itself, or a default of None (resolved per
    dataset and method, and stated in the text), gets no second "(default: ...)"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or "default" in text.lower() or action.default is False:
            return text
        return super()._get_help_string(action)


def _argparse_type(flag: Flag):
    def parse(text: str):
        try:
            return flag.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    parse.__name__ = flag.name
    return parse


def _method_type(script: str):
    """``--method``: a method of the script, registered or composed from one (``npc_paper[bank_weight=0.5]``)."""
    def parse(text: str):
        from npc.methods import base_name, script_methods

        names = script_methods(script)
        if base_name(text) not in names or ("[" in text and not text.endswith("]")):
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(map(repr, names))}, "
                                             f"or one of them with [part=value,...])")
        return text
    return parse


def _method_help(script: str, flag: Flag) -> str:
    from npc.methods import METHODS, script_methods

    return (flag.help_text() + ": " + "; ".join(f"{n} = {METHODS[n].summary}" for n in script_methods(script))
            + ". The flags of the next group override its parts")


def add_flag(group, flag: Flag, script: str, listed: bool, given_only: bool) -> None:
    """``flag`` in ``group``, as its declaration says; every ``--flag_name`` is accepted as ``--flag-name`` too
    (open_clip's spelling), not listed by --help. ``given_only``: no default (the flags given only)."""
    kwargs = dict(dest=flag.name, help=flag.help_text().replace("%", "%%") if listed else argparse.SUPPRESS)
    if flag.kind is bool:
        kwargs["action"] = "store_true"
    else:
        kwargs.update(type=str if flag.kind is list else _argparse_type(flag), metavar=flag.metavar)
        if flag.kind is list:
            kwargs["action"] = "append"
        if flag.kind == "method":
            kwargs["type"] = _method_type(script)
            if listed:
                kwargs["help"] = _method_help(script, flag)
        elif flag.choice_values() and flag.convert is None:
            kwargs["choices"] = flag.choice_values()
    if flag.name == "method":
        from npc.methods import DEFAULT_METHOD

        kwargs["default"] = DEFAULT_METHOD[script]
    elif flag.kind is bool:
        kwargs["default"] = False
    else:
        kwargs["default"] = None if flag.real is not None or flag.settled or flag.kind is list else flag.default
    if given_only:
        kwargs["default"] = argparse.SUPPRESS
    group.add_argument(*flag.spellings, **kwargs)
    aliases = [n.replace("_", "-") for n in flag.spellings if "_" in n and n.replace("_", "-") not in flag.spellings]
    if aliases:
        group.add_argument(*aliases, **{**kwargs, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS})


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose "unrecognized arguments" says why when they are values, not flags: the shell
    expanded an unquoted pattern (``DIR/{00000..00009}.tar``, ``*.tar``) into several files."""

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            extra = message.split(":", 1)[1].split()
            if extra and not any(a.startswith("-") for a in extra):
                message += (" (values where a flag was expected: the shell expanded an unquoted pattern into several "
                            "files, a brace pattern such as DIR/{00000..00009}.tar or a wildcard: quote it, e.g. "
                            "--train_data 'DIR/{00000..00009}.tar')")
        super().error(message)


def build_parser(script: str, given_only: bool = False) -> argparse.ArgumentParser:
    """The parser of ``script``: ``"npc"``, ``"clip"``, ``"bank"`` (get_memorybank.py), ``"report"``
    (find_noisy_pairs.py) or ``"check"`` (check_data.py), from the declarations: the flags it accepts, its
    --help listing those it uses. ``given_only``: no defaults, so that parsing yields the flags given only."""
    p = _Parser(description=TITLES[script], formatter_class=_HelpFormatter, allow_abbrev=False)
    uses = used_by(script)
    for title in GROUPS:
        flags = [f for f in FLAGS if f.group == title and script in f.accepted]
        if flags:
            group = p.add_argument_group(title)
            for flag in flags:
                add_flag(group, flag, script, flag.name in uses or script in TRAIN, given_only)
    return p


def _real(dataset: str) -> bool:
    """Whether ``dataset`` takes the real datasets' defaults (its definition says so: the demo's are for a CPU)."""
    return DATASETS[dataset].default_flags == "real"


def finish_flags(values: Dict, script: str, explicit: frozenset = frozenset(), objective: Optional[str] = None) -> Dict:
    """``values`` (parsed flags) with every flag the parser left unset finished, in one place: the dataset's
    defaults (the declarations' overlay: the demo's, or the real datasets'), the dataset's folder and captions per
    image, the memory bank's batch (the dataset's default batch), the model's name, and the schedule that goes
    with the method's ``objective`` (``explicit``: the flags given on the command line)."""
    v = dict(values)
    for key, value in dataset_defaults(_real(v["dataset"]), script).items():
        if key in v and v[key] is None:
            v[key] = value
    given = [f for f in ("train_data", "dev_data", "test_data") if v.get(f)]
    if v["dataset"] in FILE_DATASETS or (given and _dataset_from_checkpoint(v, explicit)):
        if v["dataset_root"] is not None:
            raise ConfigError(f"--dataset {v['dataset']} reads --train_data, --dev_data and --test_data; "
                              f"--dataset_root is not used")
        for f in given:  # absolute, so that a checkpoint's flags name the files from anywhere
            v[f] = os.path.abspath(v[f])
    elif given:
        raise ConfigError(f"--{given[0]} is for --dataset {' or '.join(FILE_DATASETS)} (this run has --dataset "
                          f"{v['dataset']})")
    elif v["dataset_root"] is None:  # the repository's, wherever the command runs from
        v["dataset_root"] = str(REPO_ROOT / DATASET_ROOTS[v["dataset"]])
    if v.get("pretrained_dir") in (None, PRETRAINED_DIR):
        v["pretrained_dir"] = str(REPO_ROOT / PRETRAINED_DIR)
    if v["num_anns"] is None:
        v["num_anns"] = NUM_ANNS[v["dataset"]]
    if v.get("bank_batch_size", 0) is None:
        v["bank_batch_size"] = dataset_defaults(_real(v["dataset"]), script)["batch_size"]
    if v.get("name", "") is None:
        v["name"] = script.upper()
    if v.get("lr_schedule", "") is None:  # the reference code's effective schedule goes with its objective
        reference = objective == "release" or (script == "clip" and _real(v["dataset"]))
        v["lr_schedule"] = "staircase" if reference else "cosine"
    return v


def _dataset_from_checkpoint(values: Dict, explicit: frozenset) -> bool:
    """``--eval --resume CKPT`` without --dataset: the checkpoint names the dataset (npc.resume_rules), and a
    CSV file given (``--test_data other.csv``) replaces its run's."""
    return bool(values.get("eval") and values.get("resume")) and "dataset" not in explicit


def refuse_csv_files_without_csv(data: DataConfig, whose: str) -> None:
    """Split files given for a dataset whose source does not read them (the one ``whose`` run has) are an error
    naming the flag."""
    given = [f for f, v in data.split_files().items() if v]
    if given and data.dataset not in FILE_DATASETS:
        raise ConfigError(f"--{given[0]}_data is for --dataset {' or '.join(FILE_DATASETS)} ({whose} has --dataset "
                          f"{data.dataset})")


def parse_args(argv: Optional[Sequence[str]], script: str) -> RunConfig:
    """The run configuration of a command line: flags parsed, finished (:func:`finish_flags`), the method settled.
    Its ``explicit`` holds the names of the flags given on the command line (a flag that names part of the
    method counts as ``method``)."""
    from npc.method_flags import resolve_method

    values = vars(build_parser(script).parse_args(argv))
    explicit = frozenset(vars(build_parser(script, given_only=True).parse_args(argv)))
    if script in IGNORED and explicit - used_by(script):
        who, why = IGNORED[script]
        print(f"{who}: ignoring {', '.join(flag_name(k) for k in sorted(explicit - used_by(script)))} ({why})",
              file=sys.stderr)
    section = MethodConfig.of(resolve_method(values, script, explicit)) if script in TRAIN else None
    values = finish_flags(values, script, explicit, section.objective if section else None)
    if explicit & {*LEGACY_METHOD_FLAGS, *METHOD_FLAGS}:
        explicit |= {"method"}
    flags = {k: v for k, v in values.items() if k not in (*LEGACY_METHOD_FLAGS, *METHOD_FLAGS)}
    return RunConfig.from_flags(flags, script, section, explicit)


def flag_name(key: str) -> str:
    """How an error names the flag ``key``: its first spelling (``--logs_dir``)."""
    if key == "method":
        return "--method (and the script: main_NPC.py / main_CLIP.py)"
    return BY_NAME[key].spellings[0] if key in BY_NAME else f"--{key}"
