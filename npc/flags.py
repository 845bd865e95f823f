"""Every command-line flag, declared once: its type, default, help, allowed values and rules.

One :class:`Flag` per flag says everything the project knows about it: the configuration section that
holds it (npc/config.py builds the sections' fields, defaults and checks from these), its type and
allowed range or choices (the command line's and the sections' one check), its help and group, the
scripts that use it (their ``--help`` lists those), what a resumed run does with it, whether it names
derived files, whether the memory bank records it, and its default on the real datasets where that
differs from the demo's (the one per-dataset overlay). Every list of flags elsewhere is derived here.
Imports nothing heavy: ``--help`` answers at once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from npc.errors import ConfigError
from npc.paths import PRETRAINED_DIR

TRAIN = ("npc", "clip")                  # main_NPC.py, main_CLIP.py
BANK = (*TRAIN, "bank", "report")        # ... get_memorybank.py, find_noisy_pairs.py
DATA = (*BANK, "check")                  # ... check_data.py
NOISE = "noise"                          # construct_noise.py
SCRIPTS = (*DATA, NOISE)
DATA_NOISE = (*DATA, NOISE)              # the data flags, which construct_noise.py uses too
BANK_NOISE = (*BANK, NOISE)              # the noise's flags

# The --help groups, in their order.
RELEASE = "reference-release flags (same names and meanings)"
CSV = "your own data: --dataset csv (open_clip's CSV convention; docs/own_data.md)"
ADDED = "additions of this project"
METHOD = "method (docs/methods.md)"
NPC = "NPC (overrides of the method's parts; the reference release's and earlier versions' flags)"
BASELINES = "baselines on the memory bank's GMM"
BANK_GROUP = "the memory bank"
CHECK = "the check"
REPORT = "the report"
NOISE_GROUP = "the noisy split"
GROUPS = (RELEASE, CSV, ADDED, METHOD, NPC, BASELINES, BANK_GROUP, CHECK, REPORT, NOISE_GROUP)


def _dataset_names() -> Tuple[str, ...]:
    from npc.datasets import DATASETS

    return tuple(DATASETS)


def _dataset_help() -> str:
    from npc.datasets import DATASETS

    return "; ".join(f"{n} = {d.description}" for n, d in DATASETS.items())


def _data_formats() -> Tuple[str, ...]:
    from npc.sources import source_classes

    return ("auto", *source_classes())  # live: a format registered later is a choice


def _separator(text: str) -> str:
    from npc.csv_format import parse_separator

    return parse_separator(text)


def _encoding(text: str) -> str:
    from npc.csv_format import check_encoding

    return check_encoding(text)


@dataclass(frozen=True)
class Flag:
    """One flag. ``kind``: int, float, str, bool (given or not), ``number`` (an int or a float kept as typed: a
    noise ratio's text names files), ``list`` (repeatable) or ``method`` (a method's name, checked by the
    script's methods). ``default``: the demo's and the section's; ``real``: the real datasets' where it differs
    (per script: ``{"npc": .., "clip": ..}``); ``settled``: the command line leaves it unset (None) and the
    configuration is finished with a value derived from others (npc.params.finish_flags)."""

    name: str
    section: Optional[str]                  # the RunConfig section; "method": read into the method section
    kind: Any
    default: Any
    help: Union[str, Callable[[], str]]
    group: str = ADDED
    scripts: Tuple[str, ...] = TRAIN        # the scripts that use it: their --help lists it
    accepted: Tuple[str, ...] = SCRIPTS     # the scripts whose command line accepts it
    choices: Union[Tuple, Callable[[], Tuple], None] = None
    minimum: Optional[float] = None         # inclusive
    above: Optional[float] = None           # exclusive lower bound
    below: Optional[float] = None           # exclusive upper bound
    convert: Optional[Callable[[str], Any]] = None  # text -> value, ValueError if bad (also checks a value)
    real: Any = None
    settled: bool = False
    resume: str = "run"       # run: taken from the run, refused if changed; invocation: this command's; may_change
    eval_takes: str = ""      # --eval --resume CKPT takes it from the checkpoint: data, model or settings
    names_files: str = ""     # the derived files it names: csv (a CSV's derived files' prefix), noisy_split
    bank_records: bool = False  # recorded with the memory bank: a bank built with another value is refused
    options: Tuple[str, ...] = ()           # its spellings when not --<name> (the first is listed)
    metavar: Optional[str] = None

    @property
    def spellings(self) -> Tuple[str, ...]:
        return self.options or (f"--{self.name}",)

    def choice_values(self) -> Optional[Tuple]:
        return self.choices() if callable(self.choices) else self.choices

    def help_text(self) -> str:
        return self.help() if callable(self.help) else self.help

    def problem(self, value: Any) -> Optional[str]:
        """What is wrong with ``value`` (a typed value) for this flag, or None."""
        kind = self.kind
        if kind is bool:
            return None if isinstance(value, bool) else f"expected True or False, got {value!r}"
        if kind in (list, "method") or kind is str:
            items = value if kind is list else (value,)
            if kind is list and not isinstance(value, (list, tuple)):
                return f"expected a list of texts, got {value!r}"
            if not all(isinstance(v, str) for v in items):
                return f"expected text, got {value!r}"
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"expected an integer, got {value!r}"
        elif kind in (float, "number"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                return f"expected a number, got {value!r}"
            if not math.isfinite(value) and (self.above is not None or self.below is not None):
                return f"expected a finite number, got {value!r}"
        what = "an integer" if kind is int else "a number"
        if self.minimum is not None and value < self.minimum:
            return f"expected {what} >= {self.minimum:g}, got {value}"
        if self.above is not None and not value > self.above:
            return f"expected {what} > {self.above:g}" + (f" and < {self.below:g}" if self.below is not None else "") \
                + f", got {value}"
        if self.below is not None and not value < self.below:
            low = f">= {self.minimum:g} and " if self.minimum is not None else ""
            return f"expected {what} {low}< {self.below:g}, got {value}"
        choices = self.choice_values()
        if choices and value not in choices:
            return f"invalid choice: {value!r} (choose from {', '.join(map(repr, choices))})"
        if self.convert is not None:
            try:
                self.convert(value)
            except ValueError as e:
                return str(e)
        return None

    def parse(self, text: str) -> Any:
        """The value of the command-line ``text``; ValueError (its message says why) if not allowed."""
        if self.convert is not None:
            value = self.convert(text)
        elif self.kind is int:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"expected an integer, got {text!r}") from None
        elif self.kind in (float, "number"):
            try:
                value = int(text) if self.kind == "number" and text.strip().lstrip("+-").isdigit() else float(text)
            except ValueError:
                raise ValueError(f"expected a number, got {text!r}") from None
        else:
            value = text
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def check(self, value: Any) -> None:
        """A section's value: the flag's error if it is not allowed."""
        if value is None and (self.default is None or self.settled):
            return
        problem = self.problem(value)
        if problem:
            raise ConfigError(f"{self.spellings[0]} {value!r}: {problem}")


F = Flag
FLAGS: Tuple[Flag, ...] = (
    # --- data (DataConfig, in its fields' order)
    F("dataset", "data", str, "demo", _dataset_help, RELEASE, DATA_NOISE, choices=_dataset_names),
    F("data_format", "data", str, "auto", "the on-disk format of --dataset_root: release = the reference release's "
      "annotations/scan_split/ files; karpathy = Karpathy's dataset_coco.json / dataset_flickr30k.json with the images "
      "where it says (coco, f30k); auto = whichever is there (docs/data.md)", RELEASE, DATA_NOISE, choices=_data_formats,
      eval_takes="data"),
    F("dataset_root", "data", str, None, "dataset folder holding images/ and annotations/ (default: the repository's "
      "dataset/<demo|MSCOCO|Flickr30K|CC120K>, wherever the command runs from)", RELEASE, DATA_NOISE, settled=True,
      eval_takes="data"),
    F("train_data", "data", str, None, "CSV/TSV file of the training pairs: one row per (image, caption); rows of the "
      "same image are one image with several captions; image paths relative to the file's folder or absolute. "
      "--dataset webdataset: tar shards, 'DIR/{00000..00009}.tar', a .tar or a text file listing shards "
      "(docs/shards.md)", CSV, DATA_NOISE, eval_takes="data"),
    F("dev_data", "data", str, None, "CSV/TSV file (or webdataset shards) of the dev split (picks the best epoch)",
      CSV, DATA_NOISE, eval_takes="data"),
    F("test_data", "data", str, None, "CSV/TSV file (or webdataset shards) of the test split (the final table)",
      CSV, DATA_NOISE, eval_takes="data"),
    F("csv_img_key", "data", str, "filepath", "column of the image paths", CSV, DATA_NOISE, eval_takes="data",
      names_files="csv"),
    F("csv_caption_key", "data", str, "title", "column of the captions", CSV, DATA_NOISE, eval_takes="data",
      names_files="csv"),
    F("csv_separator", "data", str, "\t", "column separator of the CSV files: one character, or tab (also \\t), "
      "comma, semicolon, pipe, space (default: tab)", CSV, DATA_NOISE, convert=_separator, eval_takes="data",
      names_files="csv"),
    F("csv_encoding", "data", str, "utf-8", "text encoding of the CSV files, e.g. cp1252 for a file saved by Excel on "
      "Windows (default: utf-8; a byte-order mark is skipped)", CSV, DATA_NOISE, convert=_encoding, eval_takes="data",
      names_files="csv"),
    F("num_anns", "data", int, None, "captions per image (default: 5 for demo/coco/f30k, 1 for cc)", RELEASE, DATA_NOISE,
      minimum=1, settled=True, eval_takes="data"),
    F("noise_ratio", "data", "number", 0.4, "fraction of training captions shuffled, in [0, 1) (default: 0 real, 0.4 "
      "demo)", RELEASE, BANK_NOISE, minimum=0, below=1, real=0, eval_takes="model", names_files="noisy_split"),
    # (the release's real-data default is the integer 0, which names files "0_...")
    F("noise_mode", "data", str, "caption", "caption = shuffle captions (NPC/NCR/BiCro protocol); image = shuffle "
      "whole images' captions (DECL/RCL protocol), stored under its own file name", ADDED, BANK_NOISE,
      choices=("caption", "image"), eval_takes="model", names_files="noisy_split"),
    F("noise_seed", "data", int, 99, "seed of the noisy split (the release uses 99); the file name does not include "
      "it, so one cached split serves every training seed", ADDED, BANK_NOISE, minimum=0),
    F("dev_length", "data", int, 0, "dev captions used for per-epoch model selection; 0 = the whole dev split "
      "(default: 5000 real, 0 demo). Rounded down to whole images.", RELEASE, minimum=0, real=5000),
    F("eval_splits", "data", str, "test", "comma list of splits for the final table", resume="may_change"),
    F("skip_unreadable_images", "data", bool, False, "leave out the pairs of images that cannot be read (any file PIL "
      "cannot open or decode, whatever its name) instead of stopping with the file's name: training images as batches "
      "meet them (counted per epoch), dev and test images before the first step (counted in one warning)",
      resume="invocation"),
    F("image_cache", "data", str, None, "folder of a preprocessed uint8 image cache (memory-mapped), built on first "
      "use", resume="invocation"),
    F("num_workers", "data", int, 2, "data-loader worker processes", RELEASE, BANK, minimum=0, resume="invocation"),
    F("pair_decisions", "data", str, None, "decisions.csv downloaded from the noise report's page (docs/own_data.md): "
      "the pairs marked wrong leave the training split, the pairs marked right count as clean in the memory bank "
      "(a bank of its own); its sha256 is recorded with the run, and a resumed run refuses a changed file", ADDED,
      DATA, metavar="FILE"),
    # --- model (ModelConfig)
    F("vision_model", "model", str, "npc-tiny", "CLIP architecture: ViT-B/32, ViT-B/16, ViT-L/14, RN50, ... or an "
      "open_clip name, or the demo configs npc-tiny / npc-micro (default: ViT-B/32 real, npc-tiny demo)", RELEASE,
      BANK, real="ViT-B/32", eval_takes="model", bank_records=True),
    F("pretrained", "model", str, "demo-base", "initial weights: 'openai' (open_clip tag), another open_clip tag, a "
      "file path, 'demo-base' (the demo's base model, built if missing) or 'none' (random init)", ADDED, BANK,
      real="openai", eval_takes="model", bank_records=True),
    F("pretrained_dir", "model", str, PRETRAINED_DIR, "where the demo's base model is built and cached "
      "(default: the repository's pre-trained_models/)", ADDED, BANK, settled=True, resume="invocation"),
    F("context_length", "model", int, None, "text tokens per caption, truncated (default: the model's own, 77 for "
      "CLIP)", RELEASE, BANK, minimum=1, eval_takes="model"),
    F("name", "model", str, None, "model name stored in checkpoints (default: the method)", RELEASE, settled=True,
      eval_takes="model"),
    F("torchcompile", "model", bool, False, "torch.compile the image and text transformers (dynamic shapes) for "
      "training; the first steps compile for a while. Meant for GPUs: on CPU it made the demo slower",
      resume="may_change"),
    # --- the memory bank (BankConfig)
    F("clean_threshold", "bank", float, 0.9, "memory bank: pairs whose GMM clean probability exceeds this are clean",
      BANK_GROUP, BANK, above=0, below=1, bank_records=True),
    F("bank_seed", "bank", int, 99, "seed of the memory bank's GMM (the release's 99), recorded in the bank's info "
      "file: the bank does not depend on the training --seed of whichever run builds it first", BANK_GROUP, BANK,
      minimum=0, bank_records=True),
    F("bank_batch_size", "bank", int, 128, "batch of the memory bank's loss pass (its GMM's input), recorded with "
      "the bank: a run with another --batch_size reuses the bank (default: the dataset's default batch, 256 real, "
      "128 demo)", BANK_GROUP, BANK, minimum=1, real=256, bank_records=True),
    F("bank_recipe", "bank", str, "project", "project = GMM on min-max scaled losses, neighbours by cosine "
      "(docs/method.md section 3); release = the release's bank bit for bit (GMM on raw losses, unnormalized "
      "neighbours)", BANK_GROUP, BANK, choices=("project", "release")),
    F("trust_pickle", "bank", bool, False, "load memory-bank files with arbitrary pickles (only for files you trust; "
      "the release's dict files load without it through a restricted loader)", BANK_GROUP, resume="invocation"),
    F("rebuild_bank", "bank", bool, False, "rebuild the memory bank even if its files exist", BANK_GROUP,
      resume="invocation"),
    # --- the training recipe (OptimConfig)
    F("batch_size", "optim", int, 128, "training pairs per step (global)", RELEASE, (*TRAIN, "report"), minimum=1,
      real=256),
    F("epochs", "optim", int, 5, "training epochs (default 5)", RELEASE, minimum=1, resume="may_change"),
    F("lr", "optim", float, 2e-4, "peak learning rate (default: 2e-7 NPC / 5e-7 CLIP for real data as in the "
      "release, tuned on dev for the demo)", RELEASE, above=0, real={"npc": 2e-7, "clip": 5e-7}),
    # (the demo's learning rate was chosen on its dev split: bench/noisy_benchmark.py and README)
    F("beta1", "optim", float, 0.9, "AdamW beta1", RELEASE),
    F("beta2", "optim", float, 0.98, "AdamW beta2", RELEASE),
    F("eps", "optim", float, 1e-6, "AdamW epsilon", RELEASE),
    F("weight_decay", "optim", float, 0.2, "AdamW weight decay (on all parameters, as the release)", RELEASE),
    F("warmup", "optim", int, 50, "linear warmup steps (default 500 real, 50 demo; a run with fewer steps in all than "
      "the default warms up over 10% of its steps, at least 1)", RELEASE, minimum=0, real=500),
    F("lr_schedule", "optim", str, "cosine", "cosine = warmup then cosine per iteration; staircase = the release's "
      "effective schedule (warmup, then cosine evaluated once per epoch) (default: staircase for --npc_variant "
      "release and, on real data, for main_CLIP.py, whose reference code uses the same scheduler; cosine otherwise)",
      choices=("cosine", "staircase"), settled=True),
    F("grad_clip", "optim", float, 10.0, "gradient-norm clip, 0 = none (default: as the reference code on real data, "
      "10 for main_NPC.py and none for main_CLIP.py (the release's CLIP baseline and OSA's code never clip); 10 on "
      "the demo)", real={"npc": 10.0, "clip": 0.0}),
    F("seed", "optim", int, 99, "random seed of training (init, data order etc.; not the memory bank's, see "
      "--bank_seed)", RELEASE, (*TRAIN, "report", NOISE), minimum=0),
    F("precision", "optim", str, None, "training precision. fp16 = the release's numerics: fp16 weights stepped by "
      "torch's plain AdamW whose moments are fp16 too, no master copy, no loss scaling; where (1-beta2) g^2 underflows "
      "(|g| below about 1e-3) the step is lr * m / eps, about a thousand times an Adam step "
      "(docs/running.md#precision). Default on CUDA for real data, whose default learning rates were tuned in it. "
      "amp_bf16 = fp32 weights + bf16 autocast, a proper Adam step (default on CUDA for the demo; with the release's "
      "learning rates it moves the model far less). fp32 = the default on CPU. Evaluation uses --eval_precision",
      ADDED, BANK, choices=("fp16", "amp_bf16", "fp32")),
    # --- evaluation (EvalConfig)
    F("eval_batch_size", "evaluation", int, 256, "batch size for encoding at evaluation", RELEASE, BANK, minimum=1,
      real=64, resume="may_change", eval_takes="settings"),
    F("eval_precision", "evaluation", str, "fp32", "precision of every evaluation (--eval, dev and test during "
      "training), whatever --precision trains in: fp32; fp16 = the reference release's evaluation (fp16 weights, as "
      "published); amp_bf16 = bf16 autocast. Recorded in results.json / eval_results.json",
      choices=("fp32", "fp16", "amp_bf16"), resume="may_change", eval_takes="settings"),
    F("ties", "evaluation", str, "pessimistic", "a wrong candidate with exactly the ground truth's score ranks before "
      "it (pessimistic) or after it (optimistic); the two bound any sort-based evaluation. The table's ties column "
      "counts the queries where they can differ", choices=("pessimistic", "optimistic"), resume="may_change",
      eval_takes="settings"),
    # --- where the run writes, what this invocation does (RunPaths)
    F("experiments", "run", str, None, "run name: logs and checkpoints go to <logs>/<experiments>/ (default: "
      "<method>_<dataset>_<noise>_<timestamp>)", RELEASE, BANK, resume="invocation"),
    F("logs", "run", str, "logs", "root folder of all runs (under torchrun write --logs_dir: torchrun mistakes --logs "
      "for its own --logs-specs)", ADDED, BANK, options=("--logs_dir", "--logs"), resume="invocation"),
    F("checkpoint_path", "run", str, None, "folder for checkpoints (default: <logs>/<experiments>/checkpoints)",
      RELEASE, resume="invocation"),
    F("resume", "run", str, None, "checkpoint to resume or evaluate: a path (this project's or the reference "
      "release's format) or 'latest' (the latest.pt of --experiments)", RELEASE, BANK, resume="invocation"),
    F("eval", "run", bool, False, "evaluate only (with --resume CKPT), no training", RELEASE, resume="invocation"),
    F("device", "run", str, None, "torch device (default: cuda if available, else cpu)", ADDED, BANK,
      resume="invocation"),
    F("display", "run", int, 50, "log training stats every N steps", RELEASE, minimum=1, resume="may_change"),
    F("stop_after", "run", int, 0, "stop after this many epochs of this invocation (0 = run to --epochs); continue "
      "later with --resume latest, e.g. to fit a job time limit", minimum=0, resume="invocation"),
    F("keep_checkpoints", "run", int, 0, "epoch checkpoints to keep besides latest.pt (full training state) and "
      "best.pt (weights only): 0 = none (default), K = the last K epoch<k>.pt, -1 = all", minimum=-1, metavar="K",
      resume="may_change"),
    F("no_progress", "run", bool, False, "disable progress bars (they are off anyway when stderr is not a terminal)",
      ADDED, DATA, resume="invocation"),
    # --- the method (read into MethodConfig at the command line's edge: npc.method_flags)
    F("method", "method", "method", None, "the method, by name (a registered one, or one composed from it as "
      "NAME[part=value,...], as the README's tables name them)", METHOD, accepted=TRAIN, metavar="NAME",
      eval_takes="model"),
    F("method_opt", "method", list, None, "an option of the method's weight estimator, e.g. --method_opt tau=0.3 "
      "(repeat for several; docs/methods.md lists each estimator's options); recorded with the run", METHOD,
      accepted=TRAIN, metavar="KEY=VALUE", eval_takes="model"),
    F("bank_update", "method", int, None, "rebuild the memory bank (GMM p(clean) and clean neighbours) from the "
      "current model every N epochs, into the run's folder; 0 = the bank of the initial model throughout (the "
      "paper). Default: the method's (1 for the *_bank_update methods, else 0)", METHOD, accepted=TRAIN, minimum=0,
      metavar="N", eval_takes="model"),
    # --- flags of the reference release and earlier versions naming parts of the method (npc.method_flags)
    F("npc_variant", None, str, "paper", "paper = per-sample weights and a memory-bank loss that trains the model (the "
      "method as published); release = what the authors' code does (mean weight x batch-mean loss, bank loss "
      "without gradient, doubled siamese gradient, staircase lr)", NPC, ("npc",), ("npc", "bank", "report"),
      choices=("paper", "release")),
    F("npc_impl", None, str, "efficient", "efficient = reuse the model's forward for the siamese gradient and bank "
      "losses before the step; naive = the straightforward sequence of forwards. Same results.", NPC, ("npc",),
      ("npc", "bank", "report"), choices=("efficient", "naive")),
    F("npc_weights", None, str, "on", "off = ablation: per-pair weights fixed to 1 (still computed and logged), so the "
      "memory-bank loss is the only change from plain CLIP fine-tuning", NPC, ("npc",), ("npc", "bank", "report"),
      choices=("on", "off")),
    F("npc_estimator", None, str, "siamese", "how each pair's bank losses after learning it are obtained: siamese = "
      "A' takes one optimizer step on the batch (the paper); first_order = no siamese: the first-order change of each "
      "bank pair's loss when its pair is learnt, through feature gradients, centred on the batch median "
      "(npc/negative_impact.py: first_order_impact, first_order_after)", NPC, ("npc",), ("npc", "bank", "report"),
      choices=("siamese", "first_order")),
    F("siamese_state", None, str, "persistent", "optimizer state of the siamese A': persistent across steps (the "
      "release) or emptied every step", NPC, ("npc",), ("npc", "bank", "report"), choices=("persistent", "fresh")),
    F("clean_prior", None, str, "none", "the same as --method (kept from earlier versions): none = clip; gmm_filter = "
      "train on the memory bank's clean set only (p(clean) > --clean_threshold); pclean_weight = loss mean_i(p_i l_i) "
      "with p_i the GMM's p(clean) (both from the memory bank's build, built if missing)", BASELINES, ("clip",),
      ("clip", "check"), choices=("none", "gmm_filter", "pclean_weight")),
    # --- check_data.py's own (CheckConfig)
    F("decode", "check", bool, False, "decode every image in full (finds files cut short after their header); slower",
      CHECK, ("check",), ("check",)),
    F("write_cleaned", "check", str, None, "with --pair_decisions: write the training split without the pairs marked "
      "wrong, in the data's own format, to PATH (a CSV beside the training CSV; a Karpathy .json; for shards a .npy "
      "keep-list of keys, and a .txt; for the release's layout a new folder); never over the data's files",
      CHECK, ("check",), ("check",), metavar="PATH"),
    # --- construct_noise.py's own
    F("force", "noise", bool, False, "rebuild the noisy file even if it exists (atomically replacing it)", NOISE_GROUP,
      (NOISE,), (NOISE,)),
    # --- find_noisy_pairs.py's own (ReportConfig)
    F("out", "report", str, "noise_report", "the report folder; an earlier report there is replaced, any other folder "
      "is refused", REPORT, ("report",), ("report",)),
    F("top", "report", int, 50, "the most suspicious pairs shown in index.html", REPORT, ("report",), ("report",),
      minimum=0),
    F("candidates", "report", int, 5, "for each pair shown, the k captions of the whole training set that fit its "
      "image best", REPORT, ("report",), ("report",), minimum=0),
    F("trusted", "report", int, 8, "the most trusted pairs shown for contrast", REPORT, ("report",), ("report",),
      minimum=0),
    F("runs", "report", list, None, "a training run's folder (repeatable): a column with the weight its method gave "
      "each pair (its pair_weights.npz), and its detection numbers", REPORT, ("report",), ("report",),
      options=("--run",), metavar="DIR"),
)
del F

BY_NAME: Dict[str, Flag] = {f.name: f for f in FLAGS}


def section_flags(section: str) -> Tuple[Flag, ...]:
    return tuple(f for f in FLAGS if f.section == section)


def names(**where: Any) -> Tuple[str, ...]:
    """The names of the flags whose attributes have the given values, in declaration order."""
    return tuple(f.name for f in FLAGS if all(getattr(f, k) == v for k, v in where.items()))


def used_by(script: str) -> frozenset:
    """The flags ``script`` uses (its --help lists them; others given are reported as ignored)."""
    return frozenset(f.name for f in FLAGS if script in f.scripts)


CSV_FLAGS = names(group=CSV)
CSV_READING_FLAGS = names(names_files="csv")       # a CSV's derived files are named by these when not the defaults
NOISY_SPLIT_FLAGS = names(names_files="noisy_split")
BANK_RECORDED_FLAGS = names(bank_records=True)
INVOCATION_FLAGS = frozenset(names(resume="invocation"))
RESUME_MAY_CHANGE = frozenset(names(resume="may_change"))
EVAL_DATA_FLAGS = names(eval_takes="data")
EVAL_MODEL_FLAGS = names(eval_takes="model")
EVAL_SETTINGS_FLAGS = names(eval_takes="settings")
METHOD_FLAGS = names(section="method")            # the method section's flat view
LEGACY_METHOD_FLAGS = names(section=None)         # earlier versions' flags naming parts of the method


def dataset_defaults(real: bool, script: str) -> Dict[str, Any]:
    """The defaults of the flags the real datasets set otherwise (``real``), or the demo's: the one overlay."""
    out = {}
    for f in FLAGS:
        if f.real is None:
            continue
        value = f.real if real else f.default
        out[f.name] = value[script if script in TRAIN else "npc"] if isinstance(value, dict) else value
    return out


def check_section(obj) -> None:
    """A section's ``__post_init__``: every field that is a flag holds a value the flag allows."""
    for name in obj.__dataclass_fields__:
        flag = BY_NAME.get(name)
        if flag is not None and flag.section == type(obj).SECTION:
            flag.check(getattr(obj, name))
