#!/usr/bin/env python
"""Build (or reuse) the noisy training captions of a dataset.

    python construct_noise.py --dataset_root dataset/MSCOCO --noise_ratio 0.2

writes ``dataset/MSCOCO/annotations/scan_split/0.2_noise_train_caps.txt`` (byte-identical to the
reference release's file for the same seed) and its noise mask ``0.2_noise_train_caps_mask.npy``.
An existing file is reused unless ``--force`` is given. Training calls the same function, so
running this first is optional; it is useful to inspect the noise before training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from npc.cli import one_line
from npc.errors import UserError
from npc.csv_format import encoding_arg, separator_arg
from npc.noise import DEFAULT_SEED, NOISE_MODES, ensure_noisy_split, noise_ratio_arg


def _noise_ratio(text: str) -> float:
    """argparse type: the project's --noise_ratio check, as a float: the file name is str(float(text)), as the
    release's construct_noise.py names it (``--noise_ratio 0.2`` -> ``0.2_...``, ``--noise_ratio 0`` -> ``0.0_...``)."""
    return float(noise_ratio_arg(text))


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False,
        description="Create the noisy copy of train_caps.txt used for noisy-correspondence "
                    "training (or report the existing one).")
    p.add_argument("--dataset_root", type=Path,
                   help="dataset folder containing annotations/scan_split/train_caps.txt, "
                        "e.g. dataset/MSCOCO (or --train_data for your own CSV data)")
    p.add_argument("--train_data", type=Path,
                   help="your own data (main_NPC.py --dataset csv): the training CSV/TSV file; the noisy copy "
                        "is written beside it as <stem>.<r>_noise_train_caps.txt (docs/own_data.md)")
    p.add_argument("--csv_img_key", default="filepath", help="with --train_data: column of the image paths")
    p.add_argument("--csv_caption_key", default="title", help="with --train_data: column of the captions")
    p.add_argument("--csv_separator", default="\t", type=separator_arg,
                   help="with --train_data: column separator: one character, or tab (also \\t), comma, semicolon, "
                        "pipe, space (default: tab)")
    p.add_argument("--csv_encoding", default="utf-8", type=encoding_arg,
                   help="with --train_data: text encoding of the file (default: utf-8)")
    p.add_argument("--noise_ratio", required=True, type=_noise_ratio,
                   help="fraction of noisy training data, in [0, 1) (e.g. 0.2); "
                        "0 means the clean captions")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the noise (default {DEFAULT_SEED}, the reference release's)")
    p.add_argument("--noise_mode", choices=NOISE_MODES, default="caption",
                   help="'caption': shuffle a fraction of caption lines (NPC/NCR protocol, file "
                        "<r>_noise_train_caps.txt); 'image': give a fraction of images the "
                        "captions of other images (DECL/RCL protocol, file "
                        "<r>_imgnoise_train_caps.txt). Results under the two are not comparable. "
                        "Default: caption")
    p.add_argument("--num_anns", type=_positive_int, default=5,
                   help="captions per image (5 for MSCOCO/Flickr30K, 1 for CC120K); "
                        "used by --noise_mode image. Default: 5")
    p.add_argument("--force", action="store_true",
                   help="rebuild the noisy file even if it exists (atomically replacing it)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.dataset_root is None) == (args.train_data is None):
        parser.error("give one of --dataset_root (a dataset in the SCAN layout) or --train_data (a CSV file)")
    try:
        if args.train_data is not None:
            from dataclasses import replace

            from npc.config import DataConfig
            from npc.sources import source_for
            from npc.sources.csv_files import construct_noise_command, derived_prefix

            data = DataConfig(dataset="csv", train_data=str(args.train_data), csv_img_key=args.csv_img_key,
                              csv_caption_key=args.csv_caption_key, csv_separator=args.csv_separator,
                              csv_encoding=args.csv_encoding, noise_ratio=args.noise_ratio, noise_seed=args.seed,
                              noise_mode=args.noise_mode)
            # the captions in split order (ratio 0: no noisy split is read, so --force can replace any)
            split, _ = source_for(replace(data, noise_ratio=0)).noisy_train(log=lambda *_: None, check_images=True)
            # the mask of a ratio > 0 is the noise this script made; at 0 the data is used as is
            path, mask = ensure_noisy_split(split.caps_file.parent, args.noise_ratio, seed=args.seed,
                                            mode=args.noise_mode, num_anns=split.uniform_num_anns or 1,
                                            force=args.force, prefix=derived_prefix(data),
                                            rebuild_command=construct_noise_command(data))
        else:
            ann_dir = args.dataset_root / "annotations" / "scan_split"
            path, mask = ensure_noisy_split(ann_dir, args.noise_ratio, seed=args.seed,
                                            mode=args.noise_mode, num_anns=args.num_anns,
                                            force=args.force)
    except UserError as e:  # a missing or bad file, a read-only folder, a full disk
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    n = int(mask.size)
    k = int(mask.sum())
    frac = k / n if n else 0.0
    print(f"noisy captions: {path}")
    print(f"noisy lines: {k} / {n} ({100.0 * frac:.2f}%), {args.noise_mode}-level noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
