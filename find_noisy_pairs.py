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

from npc.errors import ConfigError

# Taken from a checkpoint's run with its dataset and model: what its memory bank and OSA's shift used.
RUN_FLAGS = ("clean_threshold", "bank_batch_size", "bank_seed", "batch_size", "seed")


def parse_args(argv):
    """The report's configuration (:class:`npc.config.RunConfig`, its ``report`` section the report's own flags),
    and the checkpoint of --resume (path, content), with its run's dataset and model taken unless given."""
    from npc.params import parse_args as parse

    return open_checkpoint(parse(argv, "report"))


def open_checkpoint(cfg):
    """The configuration with --resume's checkpoint (read once) applied, its path and content: a checkpoint of
    this project sets the dataset and model flags not given (as --eval does) and is refused when
    --vision_model names another model."""
    from pathlib import Path

    from npc.checkpoint import CHECKPOINT_FORMAT, resolve_resume
    from npc.config import flags_of_saved
    from npc.model import read_checkpoint
    from npc.resume_rules import eval_changes

    path = resolve_resume(cfg.run.resume, Path(cfg.run.logs) / str(cfg.run.experiments) / "checkpoints")
    if path is None:
        return cfg, None, None
    ckpt = read_checkpoint(path)
    if isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT:
        saved = flags_of_saved(ckpt)
        trained = saved.get("vision_model", ckpt.get("vision_model"))
        if "vision_model" in cfg.explicit and trained and trained != cfg.model.vision_model:
            raise ConfigError(f"--resume {path} is a checkpoint of {trained} (--vision_model {trained}), not of "
                             f"--vision_model {cfg.model.vision_model}")
        changes, taken = eval_changes(cfg, saved)
        now = cfg.flat()
        for key in RUN_FLAGS:  # the run's memory bank and OSA shift, unless given
            if key in saved and key not in cfg.explicit and saved[key] != now[key]:
                changes[key] = taken[key] = saved[key]
        cfg = cfg.replace_flags(**changes)
        if taken:
            print("find_noisy_pairs.py: taken from the flags the checkpoint was trained with: "
                  + ", ".join(f"--{k} {v}" for k, v in taken.items()) + " (flags given here override them)")
    return cfg, path, ckpt


def main(argv=None):
    cfg, ckpt_path, ckpt = parse_args(argv)  # --help and flag errors answer before torch is imported
    import shlex

    from npc.noise_report import run

    command = shlex.join(["python", "find_noisy_pairs.py", *(sys.argv[1:] if argv is None else argv)])
    return run(cfg, ckpt_path=ckpt_path, ckpt=ckpt, command=command)


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
