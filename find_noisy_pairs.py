"""Which of my training pairs are mismatched? A noise report of a dataset (docs/own_data.md).

    python find_noisy_pairs.py --out noise_report                          # the demo (40% noise)
    python find_noisy_pairs.py --dataset csv --train_data mydata/train.csv --out mydata_report
    python find_noisy_pairs.py --resume logs/mine/checkpoints/best.pt --run logs/mine --out after_training

Scores every training pair with the detectors that need no training (the memory bank's GMM p(clean),
the pair's cosine, OSA's debiased score), with the model of --pretrained or --resume, and writes a
folder: index.html (one self-contained page: histograms, the GMM's fit, the most suspicious pairs with
their images and the captions that fit them best, the most trusted pairs), pairs.csv (every pair,
most suspicious first) and report.json. Takes the dataset flags of main_NPC.py (--dataset, the CSV
flags, --noise_ratio) and those the memory bank's GMM depends on; --resume with a checkpoint of this
project takes its run's dataset and model unless flags say otherwise. --run DIR adds what a training
run's method did to each pair (its pair_weights.npz).
"""
import sys

REPORT_FLAGS = frozenset({"out", "top", "candidates", "trusted", "run", "batch_size", "seed"})
# Taken from a checkpoint's run with its dataset and model: what its memory bank and OSA's shift used.
RUN_FLAGS = ("clean_threshold", "bank_batch_size", "bank_seed", "batch_size", "seed")


def build_parser(given_only: bool = False):
    """get_memorybank.py's flags (the dataset, the model, the GMM's), and the report's own. ``given_only``: no
    defaults (a parse then yields the flags given on the command line)."""
    import argparse

    from npc.params import build_parser as npc_parser, _non_negative_int

    p = npc_parser("bank", given_only=given_only)
    p.description = ("Score every training pair of a dataset for mismatch (the memory bank's GMM p(clean), the "
                     "pair's cosine, OSA's debiased score) and write a report folder: index.html, pairs.csv, "
                     "report.json. OSA's shift is drawn from --batch_size random inputs (default: the dataset's "
                     "default batch) seeded by --seed, as a --method osa run draws them")
    g = p.add_argument_group("the report")
    default = (lambda value: argparse.SUPPRESS) if given_only else (lambda value: value)
    g.add_argument("--out", type=str, default=default("noise_report"),
                   help="the report folder; an earlier report there is replaced, any other folder is refused")
    g.add_argument("--top", type=_non_negative_int, default=default(50),
                   help="the most suspicious pairs shown in index.html")
    g.add_argument("--candidates", type=_non_negative_int, default=default(5),
                   help="for each pair shown, the k captions of the whole training set that fit its image best")
    g.add_argument("--trusted", type=_non_negative_int, default=default(8),
                   help="the most trusted pairs shown for contrast")
    g.add_argument("--run", type=str, action="append", default=default(None), metavar="DIR",
                   help="a training run's folder (repeatable): a column with the weight its method gave each pair "
                        "(its pair_weights.npz), and its detection numbers")
    return p


def parse_args(argv):
    """The report's configuration (read-only, :class:`npc.config.RunConfig`): flags with the dataset's defaults,
    and the checkpoint of --resume (path, content), with its run's dataset and model taken unless given."""
    from npc.config import RunConfig
    from npc.params import BANK_FLAGS, flag_name, resolve_defaults

    values = vars(build_parser().parse_args(argv))
    explicit = frozenset(vars(build_parser(given_only=True).parse_args(argv)))
    ignored = explicit - BANK_FLAGS - REPORT_FLAGS
    if ignored:
        print(f"find_noisy_pairs.py: ignoring {', '.join(flag_name(k) for k in sorted(ignored))} (training flags; "
              f"the report uses the dataset, model and memory-bank flags)", file=sys.stderr)
    args = RunConfig(**resolve_defaults(values, "bank", explicit), _explicit=explicit)
    return open_checkpoint(args)


def open_checkpoint(args):
    """The configuration with --resume's checkpoint (read once) applied, its path and content: a checkpoint of
    this project sets the dataset and model flags not given (as --eval does) and is refused when
    --vision_model names another model."""
    from pathlib import Path

    from npc.checkpoint import CHECKPOINT_FORMAT, resolve_resume
    from npc.model import read_checkpoint
    from npc.resume_rules import eval_changes

    path = resolve_resume(args.resume, Path(args.logs) / str(args.experiments) / "checkpoints")
    if path is None:
        return args, None, None
    ckpt = read_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        saved = ckpt.get("args", {})
        trained = saved.get("vision_model", ckpt.get("vision_model"))
        if "vision_model" in args._explicit and trained and trained != args.vision_model:
            raise ValueError(f"--resume {path} is a checkpoint of {trained} (--vision_model {trained}), not of "
                             f"--vision_model {args.vision_model}")
        changes, taken = eval_changes(args, saved)
        for key in RUN_FLAGS:  # the run's memory bank and OSA shift, unless given
            if key in saved and key not in args._explicit and saved[key] != getattr(args, key):
                changes[key] = taken[key] = saved[key]
        args = args.replace(**changes)
        if taken:
            print("find_noisy_pairs.py: taken from the flags the checkpoint was trained with: "
                  + ", ".join(f"--{k} {v}" for k, v in taken.items()) + " (flags given here override them)")
    return args, path, ckpt


def main(argv=None):
    args, ckpt_path, ckpt = parse_args(argv)  # --help and flag errors answer before torch is imported
    import shlex

    from npc.noise_report import run

    command = shlex.join(["python", "find_noisy_pairs.py", *(sys.argv[1:] if argv is None else argv)])
    return run(args, ckpt_path=ckpt_path, ckpt=ckpt, command=command)


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
