"""The one command-line definition shared by ``main_NPC.py``, ``main_CLIP.py`` and ``get_memorybank.py``.

Every flag of the reference release (Zhang, Li, Ye, AAAI 2024) is accepted with the same name and
meaning, so published commands run verbatim; the flags after them are additions of this project.
Flags whose sensible default depends on the dataset or the method (learning rate, model, batch
size, ...) default to ``None`` here and are filled in by :func:`resolve_defaults`: the reference
values for real datasets, small CPU-friendly values for the embedded demo. :func:`parse_args`
returns the read-only run configuration (:class:`npc.config.RunConfig`), its method resolved by
:mod:`npc.method_flags`; what a resumed run takes from its checkpoint is :mod:`npc.resume_rules`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Dict, Optional, Sequence

from npc.config import DataConfig, MethodConfig, RunConfig
from npc.csv_format import encoding_arg, separator_arg
from npc.datasets import DATASETS
from npc.errors import ConfigError  # noqa: F401  (where callers have always found it)
from npc.noise import noise_ratio_arg
from npc.paths import PRETRAINED_DIR, REPO_ROOT
from npc.sources import FILE_DATASETS, FORMAT_CHOICES

DATASET_CHOICES = tuple(DATASETS)

# Reference-release hyper-parameters (docs/method.md section 6) for the real datasets.
REAL_DEFAULTS = dict(
    vision_model="ViT-B/32",
    pretrained="openai",
    batch_size=256,
    epochs=5,
    warmup=500,
    lr={"npc": 2e-7, "clip": 5e-7},
    noise_ratio=0,  # the release's default is the integer 0, which names files "0_..."
    eval_batch_size=64,
    dev_length=5000,
    # The release's main_NPC.py clips at 10; its main_CLIP.py and OSA's main_clip.py never clip.
    grad_clip={"npc": 10.0, "clip": 0.0},
)

# The embedded demo: a tiny open_clip model on generated 64 px scenes, sized for a 2-core CPU.
# Learning rates were chosen on the demo's dev split (see bench/noisy_benchmark.py and README).
DEMO_DEFAULTS = dict(
    vision_model="npc-tiny",
    pretrained="demo-base",
    batch_size=128,
    epochs=5,
    warmup=50,
    lr={"npc": 2e-4, "clip": 2e-4},
    noise_ratio=0.4,
    eval_batch_size=256,
    dev_length=0,
    grad_clip=10.0,
)

DATASET_ROOTS = {name: spec.default_root for name, spec in DATASETS.items() if spec.default_root}
NUM_ANNS = {name: spec.num_anns or None for name, spec in DATASETS.items()}  # csv: any number per image
CSV_FLAGS = ("train_data", "dev_data", "test_data", "csv_img_key", "csv_caption_key", "csv_separator", "csv_encoding")


def _int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text}")
    return value


def _positive_int(text: str) -> int:
    return _int(text, 1)


def _non_negative_int(text: str) -> int:
    return _int(text, 0)


def _keep_count(text: str) -> int:
    return _int(text, -1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


# The report's own flags (find_noisy_pairs.py), besides the bank's.
REPORT_FLAGS = frozenset({"out", "top", "candidates", "trusted", "runs", "batch_size", "seed"})
# The flags check_data.py uses.
CHECK_FLAGS = frozenset({"dataset", "data_format", "dataset_root", "num_anns", "no_progress", "decode", *CSV_FLAGS})
# The flags get_memorybank.py uses (its --help lists only these).
BANK_FLAGS = frozenset({
    "experiments", "dataset_root", "num_anns", "dataset", "noise_ratio", "eval_batch_size",
    "num_workers", "context_length", "resume", "vision_model", "pretrained", "precision", "device", "logs",
    "noise_mode", "noise_seed", "no_progress", "pretrained_dir", "clean_threshold", "bank_seed", "bank_batch_size",
    "bank_recipe", "data_format", *CSV_FLAGS,
})


class _OnlyFlags:
    """An argument group whose ``--help`` shows only the flags named in ``keep`` (get_memorybank.py's
    subset); the others are still accepted, so a main_NPC.py command line works, and reported as ignored.

    Every ``--flag_name`` is accepted as ``--flag-name`` too (open_clip's spelling), not listed by --help."""

    def __init__(self, group, keep, given_only: bool = False):
        self.group, self.keep, self.given_only = group, keep, given_only

    def add_argument(self, *names, **kwargs):
        dest = kwargs.get("dest", names[0].lstrip("-"))
        if self.given_only:  # a parse that yields only the flags given on the command line
            kwargs["default"] = argparse.SUPPRESS
        if self.keep is not None and dest not in self.keep:
            kwargs["help"] = argparse.SUPPRESS
        self.group.add_argument(*names, **kwargs)
        aliases = [n.replace("_", "-") for n in names if "_" in n and n.replace("_", "-") not in names]
        if aliases:
            self.group.add_argument(*aliases, **{**kwargs, "dest": dest, "help": argparse.SUPPRESS,
                                                 "default": argparse.SUPPRESS})


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each default once: a help text that states its default itself, or a default of None (resolved per
    dataset and method, and stated in the text), gets no second "(default: ...)"."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or "default" in text.lower() or action.default is False:
            return text
        return super()._get_help_string(action)


def build_parser(method: str, given_only: bool = False) -> argparse.ArgumentParser:
    """``method`` is ``"npc"``, ``"clip"``, ``"bank"`` (get_memorybank.py: the flags it uses) or ``"report"``
    (find_noisy_pairs.py: the bank's flags and the report's own). ``given_only``: no defaults, so that parsing
    yields the flags given on the command line only."""
    title = {"npc": "NPC: negative pre-aware fine-tuning of CLIP under noisy correspondence",
             "clip": "Plain CLIP fine-tuning (symmetric InfoNCE), the baseline of NPC",
             "bank": "(Re)build the NPC memory bank of clean pairs of a dataset and noise ratio",
             "report": "Score every training pair of a dataset for mismatch (the memory bank's GMM p(clean), the "
                       "pair's cosine, OSA's debiased score) and write a report folder: index.html, pairs.csv, "
                       "report.json. OSA's shift is drawn from --batch_size random inputs (default: the dataset's "
                       "default batch) seeded by --seed, as a --method osa run draws them",
             "check": "Check a dataset before a long run: its format, images and captions per split against the "
                      "full dataset's counts, and every missing or unreadable image (docs/data.md)"}[method]
    p = argparse.ArgumentParser(description=title, formatter_class=_HelpFormatter, allow_abbrev=False)
    keep = {"bank": BANK_FLAGS, "report": BANK_FLAGS | REPORT_FLAGS, "check": CHECK_FLAGS}.get(method)

    def group(name):
        return _OnlyFlags(p.add_argument_group(name), keep, given_only)

    g = group("reference-release flags (same names and meanings)")
    g.add_argument("--experiments", type=str, default=None,
                   help="run name: logs and checkpoints go to <logs>/<experiments>/ "
                        "(default: <method>_<dataset>_<noise>_<timestamp>)")
    g.add_argument("--dataset_root", type=str, default=None,
                   help="dataset folder holding images/ and annotations/ (default: the repository's "
                        "dataset/<demo|MSCOCO|Flickr30K|CC120K>, wherever the command runs from)")
    g.add_argument("--num_anns", type=_positive_int, default=None,
                   help="captions per image (default: 5 for demo/coco/f30k, 1 for cc)")
    g.add_argument("--dev_length", type=_non_negative_int, default=None,
                   help="dev captions used for per-epoch model selection; 0 = the whole dev split "
                        "(default: 5000 real, 0 demo). Rounded down to whole images.")
    g.add_argument("--batch_size", type=_positive_int, default=None, help="training pairs per step (global)")
    g.add_argument("--dataset", type=str, default="demo", choices=DATASET_CHOICES,
                   help="; ".join(f"{n} = {d.description}" for n, d in DATASETS.items()))
    g.add_argument("--data_format", type=str, default="auto", choices=("auto", *FORMAT_CHOICES),
                   help="the on-disk format of --dataset_root: release = the reference release's annotations/scan_split/ "
                        "files; karpathy = Karpathy's dataset_coco.json / dataset_flickr30k.json with the images where "
                        "it says (coco, f30k); auto = whichever is there (docs/data.md)")
    g.add_argument("--noise_ratio", type=noise_ratio_arg, default=None,
                   help="fraction of training captions shuffled, in [0, 1) (default: 0 real, 0.4 demo)")
    g.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default 5)")
    g.add_argument("--eval", action="store_true", help="evaluate only (with --resume CKPT), no training")
    g.add_argument("--eval_batch_size", type=_positive_int, default=None, help="batch size for encoding at evaluation")
    g.add_argument("--display", type=_positive_int, default=50, help="log training stats every N steps")
    g.add_argument("--checkpoint_path", type=str, default=None,
                   help="folder for checkpoints (default: <logs>/<experiments>/checkpoints)")
    g.add_argument("--num_workers", type=_non_negative_int, default=2, help="data-loader worker processes")
    g.add_argument("--name", type=str, default=None, help="model name stored in checkpoints (default: the method)")
    g.add_argument("--context_length", type=_positive_int, default=None,
                   help="text tokens per caption, truncated (default: the model's own, 77 for CLIP)")
    g.add_argument("--lr", type=_positive_float, default=None,
                   help="peak learning rate (default: 2e-7 NPC / 5e-7 CLIP for real data as in the release, "
                        "tuned on dev for the demo)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1")
    g.add_argument("--beta2", type=float, default=0.98, help="AdamW beta2")
    g.add_argument("--eps", type=float, default=1e-6, help="AdamW epsilon")
    g.add_argument("--weight_decay", type=float, default=0.2, help="AdamW weight decay (on all parameters, as the release)")
    g.add_argument("--warmup", type=_non_negative_int, default=None,
                   help="linear warmup steps (default 500 real, 50 demo; a run with fewer steps in all than the "
                        "default warms up over 10%% of its steps, at least 1)")
    g.add_argument("--resume", type=str, default=None,
                   help="checkpoint to resume or evaluate: a path (this project's or the reference release's "
                        "format) or 'latest' (the latest.pt of --experiments)")
    g.add_argument("--vision_model", type=str, default=None,
                   help="CLIP architecture: ViT-B/32, ViT-B/16, ViT-L/14, RN50, ... or an open_clip name, "
                        "or the demo configs npc-tiny / npc-micro (default: ViT-B/32 real, npc-tiny demo)")
    g.add_argument("--seed", type=_non_negative_int, default=99,
                   help="random seed of training (init, data order etc.; not the memory bank's, see --bank_seed)")

    g = group("your own data: --dataset csv (open_clip's CSV convention; docs/own_data.md)")
    g.add_argument("--train_data", type=str, default=None,
                   help="CSV/TSV file of the training pairs: one row per (image, caption); rows of the same image "
                        "are one image with several captions; image paths relative to the file's folder or absolute. "
                        "--dataset webdataset: tar shards, 'DIR/{00000..00009}.tar', a .tar or a text file listing "
                        "shards (docs/shards.md)")
    g.add_argument("--dev_data", type=str, default=None,
                   help="CSV/TSV file (or webdataset shards) of the dev split (picks the best epoch)")
    g.add_argument("--test_data", type=str, default=None,
                   help="CSV/TSV file (or webdataset shards) of the test split (the final table)")
    g.add_argument("--csv_img_key", type=str, default="filepath", help="column of the image paths")
    g.add_argument("--csv_caption_key", type=str, default="title", help="column of the captions")
    g.add_argument("--csv_separator", type=separator_arg, default="\t",
                   help="column separator of the CSV files: one character, or tab (also \\t), comma, semicolon, "
                        "pipe, space (default: tab)")
    g.add_argument("--csv_encoding", type=encoding_arg, default="utf-8",
                   help="text encoding of the CSV files, e.g. cp1252 for a file saved by Excel on Windows (default: "
                        "utf-8; a byte-order mark is skipped)")

    g = group("additions of this project")
    g.add_argument("--pretrained", type=str, default=None,
                   help="initial weights: 'openai' (open_clip tag), another open_clip tag, a file path, "
                        "'demo-base' (the demo's base model, built if missing) or 'none' (random init)")
    g.add_argument("--precision", type=str, default=None, choices=("fp16", "amp_bf16", "fp32"),
                   help="training precision. fp16 = the release's numerics: fp16 weights stepped by torch's plain AdamW "
                        "whose moments are fp16 too, no master copy, no loss scaling; where (1-beta2) g^2 underflows "
                        "(|g| below about 1e-3) the step is lr * m / eps, about a thousand times an Adam step "
                        "(docs/running.md#precision). Default on CUDA for real data, whose default learning rates "
                        "were tuned in it. amp_bf16 = fp32 weights + bf16 autocast, a proper Adam step (default on "
                        "CUDA for the demo; with the release's learning rates it moves the model far less). fp32 = "
                        "the default on CPU. Evaluation uses --eval_precision")
    g.add_argument("--eval_precision", type=str, default="fp32", choices=("fp32", "fp16", "amp_bf16"),
                   help="precision of every evaluation (--eval, dev and test during training), whatever --precision "
                        "trains in: fp32; fp16 = the reference release's evaluation (fp16 weights, as published); "
                        "amp_bf16 = bf16 autocast. Recorded in results.json / eval_results.json")
    g.add_argument("--ties", type=str, default="pessimistic", choices=("pessimistic", "optimistic"),
                   help="a wrong candidate with exactly the ground truth's score ranks before it (pessimistic) or "
                        "after it (optimistic); the two bound any sort-based evaluation. The table's ties column "
                        "counts the queries where they can differ")
    g.add_argument("--device", type=str, default=None, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--logs_dir", "--logs", dest="logs", type=str, default="logs",
                   help="root folder of all runs (under torchrun write --logs_dir: torchrun mistakes --logs "
                        "for its own --logs-specs)")
    g.add_argument("--noise_mode", type=str, default="caption", choices=("caption", "image"),
                   help="caption = shuffle captions (NPC/NCR/BiCro protocol); image = shuffle whole images' "
                        "captions (DECL/RCL protocol), stored under its own file name")
    g.add_argument("--noise_seed", type=_non_negative_int, default=99,
                   help="seed of the noisy split (the release uses 99); the file name does not include it, "
                        "so one cached split serves every training seed")
    g.add_argument("--grad_clip", type=float, default=None,
                   help="gradient-norm clip, 0 = none (default: as the reference code on real data, 10 for main_NPC.py "
                        "and none for main_CLIP.py (the release's CLIP baseline and OSA's code never clip); 10 on the "
                        "demo)")
    g.add_argument("--lr_schedule", type=str, default=None, choices=("cosine", "staircase"),
                   help="cosine = warmup then cosine per iteration; staircase = the release's effective "
                        "schedule (warmup, then cosine evaluated once per epoch) (default: staircase for "
                        "--npc_variant release and, on real data, for main_CLIP.py, whose reference code uses the "
                        "same scheduler; cosine otherwise)")
    g.add_argument("--stop_after", type=_non_negative_int, default=0,
                   help="stop after this many epochs of this invocation (0 = run to --epochs); "
                        "continue later with --resume latest, e.g. to fit a job time limit")
    g.add_argument("--keep_checkpoints", type=_keep_count, default=0, metavar="K",
                   help="epoch checkpoints to keep besides latest.pt (full training state) and best.pt (weights "
                        "only): 0 = none (default), K = the last K epoch<k>.pt, -1 = all")
    g.add_argument("--eval_splits", type=str, default="test", help="comma list of splits for the final table")
    g.add_argument("--skip_unreadable_images", action="store_true",
                   help="leave out the pairs of images that cannot be decoded instead of stopping with the file's "
                        "name: training images as batches meet them (counted per epoch), dev and test images before "
                        "the first step (counted in one warning)")
    g.add_argument("--no_progress", action="store_true",
                   help="disable progress bars (they are off anyway when stderr is not a terminal)")
    g.add_argument("--pretrained_dir", type=str, default=PRETRAINED_DIR,
                   help="where the demo's base model is built and cached (default: the repository's "
                        "pre-trained_models/)")
    g.add_argument("--image_cache", type=str, default=None,
                   help="folder of a preprocessed uint8 image cache (memory-mapped), built on first use")
    g.add_argument("--torchcompile", action="store_true",
                   help="torch.compile the image and text transformers (dynamic shapes) for training; the "
                        "first steps compile for a while. Meant for GPUs: on CPU it made the demo slower")

    if method in ("npc", "clip"):
        from npc.methods import DEFAULT_METHOD, METHODS, script_methods

        g = group("method (docs/methods.md)")
        g.add_argument("--method", type=str, default=DEFAULT_METHOD[method], choices=script_methods(method),
                       metavar="NAME",
                       help="the method, by name: " + "; ".join(f"{n} = {METHODS[n].summary}"
                                                                for n in script_methods(method))
                            + ". The flags of the next group override its parts")
        g.add_argument("--method_opt", action="append", default=None, metavar="KEY=VALUE",
                       help="an option of the method's weight estimator, e.g. --method_opt tau=0.3 (repeat for several; "
                            "docs/methods.md lists each estimator's options); recorded with the run")
        g.add_argument("--bank_update", type=_non_negative_int, default=None, metavar="N",
                       help="rebuild the memory bank (GMM p(clean) and clean neighbours) from the current model "
                            "every N epochs, into the run's folder; 0 = the bank of the initial model throughout "
                            "(the paper). Default: the method's (1 for the *_bank_update methods, else 0)")
    if method in ("npc", "bank", "report"):
        g = group("NPC (overrides of the method's parts; the reference release's and earlier versions' flags)")
        g.add_argument("--npc_variant", type=str, default="paper", choices=("paper", "release"),
                       help="paper = per-sample weights and a memory-bank loss that trains the model "
                            "(the method as published); release = what the authors' code does "
                            "(mean weight x batch-mean loss, bank loss without gradient, doubled siamese "
                            "gradient, staircase lr)")
        g.add_argument("--npc_impl", type=str, default="efficient", choices=("efficient", "naive"),
                       help="efficient = reuse the model's forward for the siamese gradient and bank "
                            "losses before the step; naive = the straightforward sequence of forwards. "
                            "Same results.")
        g.add_argument("--npc_weights", type=str, default="on", choices=("on", "off"),
                       help="off = ablation: per-pair weights fixed to 1 (still computed and logged), so the "
                            "memory-bank loss is the only change from plain CLIP fine-tuning")
        g.add_argument("--npc_estimator", type=str, default="siamese", choices=("siamese", "first_order"),
                       help="how each pair's bank losses after learning it are obtained: siamese = A' takes one "
                            "optimizer step on the batch (the paper); first_order = no siamese: the first-order "
                            "change of each bank pair's loss when its pair is learnt, through feature gradients, "
                            "centred on the batch median (npc/negative_impact.py: first_order_impact, "
                            "first_order_after)")
        g.add_argument("--siamese_state", type=str, default="persistent", choices=("persistent", "fresh"),
                       help="optimizer state of the siamese A': persistent across steps (the release) or "
                            "emptied every step")
    else:
        g = group("baselines on the memory bank's GMM")
        g.add_argument("--clean_prior", type=str, default="none", choices=("none", "gmm_filter", "pclean_weight"),
                       help="the same as --method (kept from earlier versions): none = clip; gmm_filter = train on "
                            "the memory bank's clean set "
                            "only (p(clean) > --clean_threshold); pclean_weight = loss mean_i(p_i l_i) with p_i "
                            "the GMM's p(clean) (both from the memory bank's build, built if missing)")
    g.add_argument("--clean_threshold", type=float, default=0.9,
                   help="memory bank: pairs whose GMM clean probability exceeds this are clean")
    g.add_argument("--bank_seed", type=_non_negative_int, default=99,
                   help="seed of the memory bank's GMM (the release's 99), recorded in the bank's info file: "
                        "the bank does not depend on the training --seed of whichever run builds it first")
    g.add_argument("--bank_batch_size", type=_positive_int, default=None,
                   help="batch of the memory bank's loss pass (its GMM's input), recorded with the bank: a run with "
                        "another --batch_size reuses the bank (default: the dataset's default batch, 256 real, 128 "
                        "demo)")
    g.add_argument("--bank_recipe", default="project", choices=("project", "release"),
                   help="project = GMM on min-max scaled losses, neighbours by cosine (docs/method.md section 3); "
                        "release = the release's bank bit for bit (GMM on raw losses, unnormalized neighbours)")
    g.add_argument("--trust_pickle", action="store_true",
                   help="load memory-bank files with arbitrary pickles (only for files you trust; the "
                        "release's dict files load without it through a restricted loader)")
    g.add_argument("--rebuild_bank", action="store_true", help="rebuild the memory bank even if its files exist")
    if method == "check":
        g = group("the check")
        g.add_argument("--decode", action="store_true",
                       help="decode every image in full (finds files cut short after their header); slower")
    if method == "report":
        g = group("the report")
        g.add_argument("--out", type=str, default="noise_report",
                       help="the report folder; an earlier report there is replaced, any other folder is refused")
        g.add_argument("--top", type=_non_negative_int, default=50, help="the most suspicious pairs shown in index.html")
        g.add_argument("--candidates", type=_non_negative_int, default=5,
                       help="for each pair shown, the k captions of the whole training set that fit its image best")
        g.add_argument("--trusted", type=_non_negative_int, default=8, help="the most trusted pairs shown for contrast")
        g.add_argument("--run", dest="runs", type=str, action="append", default=None, metavar="DIR",
                       help="a training run's folder (repeatable): a column with the weight its method gave each "
                            "pair (its pair_weights.npz), and its detection numbers")
    return p


def resolve_defaults(values: Dict, method: str, explicit: frozenset = frozenset()) -> Dict:
    """``values`` (parsed flags) with the ``None`` defaults that depend on the dataset and the method filled
    (``explicit``: the flags given on the command line)."""
    v = dict(values)
    table = DEMO_DEFAULTS if v["dataset"] == "demo" else REAL_DEFAULTS
    for key, value in table.items():
        if key in v and v[key] is None:
            v[key] = value[method if method in ("npc", "clip") else "npc"] if isinstance(value, dict) else value
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
    if v.get("pretrained_dir") == PRETRAINED_DIR:
        v["pretrained_dir"] = str(REPO_ROOT / PRETRAINED_DIR)
    if v["num_anns"] is None:
        v["num_anns"] = NUM_ANNS[v["dataset"]]
    if v.get("bank_batch_size", 0) is None:
        v["bank_batch_size"] = table["batch_size"]
    if v.get("name", "") is None:
        v["name"] = method.upper()
    v["script"] = method
    if not 0 < v["clean_threshold"] < 1:
        raise ConfigError(f"--clean_threshold must be in (0, 1), got {v['clean_threshold']}")
    if v.get("dev_length", 0) < 0:
        raise ConfigError(f"--dev_length must be >= 0, got {v['dev_length']}")
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


# Flags of the reference release and earlier versions that name parts of the method: the configuration
# holds the method they resolve to (npc.method_flags), not them.
LEGACY_METHOD_FLAGS = ("npc_variant", "npc_impl", "npc_weights", "npc_estimator", "siamese_state", "clean_prior")


def parse_args(argv: Optional[Sequence[str]], method: str) -> RunConfig:
    """The run configuration of a command line: flags parsed, defaults resolved, the method settled.
    Its ``explicit`` holds the names of the flags given on the command line (a flag that names part of the
    method counts as ``method``)."""
    from npc.method_flags import resolve_method

    values = vars(build_parser(method).parse_args(argv))
    explicit = frozenset(vars(build_parser(method, given_only=True).parse_args(argv)))
    used = {"bank": (BANK_FLAGS, "get_memorybank.py", "not used to build the bank; its GMM's seed is --bank_seed"),
            "report": (BANK_FLAGS | REPORT_FLAGS, "find_noisy_pairs.py",
                       "training flags; the report uses the dataset, model and memory-bank flags"),
            "check": (CHECK_FLAGS, "check_data.py", "the check reads the data flags only")}.get(method)
    if used and explicit - used[0]:
        print(f"{used[1]}: ignoring {', '.join(flag_name(k) for k in sorted(explicit - used[0]))} ({used[2]})",
              file=sys.stderr)
    values = resolve_defaults(values, method, explicit)
    section = None
    if method in ("npc", "clip"):
        section = MethodConfig.of(resolve_method(values, method, explicit))
    if values.get("lr_schedule", "") is None:  # the reference code's effective schedule goes with its objective
        reference = (section is not None and section.objective == "release") or (method == "clip"
                                                                                   and values["dataset"] != "demo")
        values["lr_schedule"] = "staircase" if reference else "cosine"
    if explicit & {*LEGACY_METHOD_FLAGS, "method_opt", "bank_update"}:
        explicit |= {"method"}
    flags = {k: v for k, v in values.items() if k not in (*LEGACY_METHOD_FLAGS, "method", "method_opt", "bank_update")}
    flags.pop("script")
    return RunConfig.from_flags(flags, method, section, explicit)


def flag_name(key: str) -> str:
    return {"logs": "--logs_dir", "method": "--method (and the script: main_NPC.py / main_CLIP.py)"}.get(key, f"--{key}")
