#!/usr/bin/env python
"""Build (or reuse) the noisy training captions of a dataset, in any format the data sources read.

    python construct_noise.py --dataset_root dataset/MSCOCO --noise_ratio 0.2
    python construct_noise.py --train_data mydata/train.csv --noise_ratio 0.4
    python construct_noise.py --dataset coco --dataset_root DIR_WITH_dataset_coco.json --noise_ratio 0.2

writes the noisy split where training reads it (the release's layout:
``dataset/MSCOCO/annotations/scan_split/0.2_noise_train_caps.txt``, byte-identical to the reference
release's file for the same seed; other formats: beside their files, docs/data.md) and its noise mask.
The flags are the training scripts' (npc/params.py); without ``--dataset`` the dataset is the one found
where ``--dataset_root`` or ``--train_data`` points. An existing file is reused unless ``--force`` is
given. Training calls the same function, so running this first is optional; it is useful to inspect the
noise before training.
"""
from __future__ import annotations

import sys
from typing import List, Optional

from npc.cli import one_line
from npc.errors import UserError
from npc.noise import DEFAULT_SEED


def build_parser():
    from npc import params

    p = params.build_parser("noise")
    p.prog = "construct_noise.py"
    for action in p._actions:
        if action.dest == "seed":  # the release's construct_noise.py names the noise's seed --seed
            action.help = f"seed of the noise (the same as --noise_seed; default {DEFAULT_SEED}, the reference release's)"
    return p


def data_config(args, explicit):
    """The data section (:class:`npc.config.DataConfig`) of the command line: the dataset named, or found where
    the files are."""
    from dataclasses import replace

    from npc.config import DataConfig
    from npc.sources import dataset_of

    seed = args.seed if "seed" in explicit and "noise_seed" not in explicit else args.noise_seed
    data = DataConfig(dataset=args.dataset, data_format=args.data_format, dataset_root=args.dataset_root,
                      train_data=args.train_data, csv_img_key=args.csv_img_key, csv_caption_key=args.csv_caption_key,
                      csv_separator=args.csv_separator, csv_encoding=args.csv_encoding, num_anns=args.num_anns,
                      noise_ratio=float(args.noise_ratio), noise_mode=args.noise_mode, noise_seed=seed)
    # the file's name is str(float(ratio)), as the release's construct_noise.py names it (0 -> 0.0_...)
    return data if "dataset" in explicit else replace(data, dataset=dataset_of(data))


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = frozenset(vars(build_parser_given_only().parse_args(argv)))
    if args.noise_ratio is None:
        parser.error("the following arguments are required: --noise_ratio")
    if (args.dataset_root is None) == (args.train_data is None):
        parser.error("give one of --dataset_root (a dataset's folder) or --train_data (the training split's files)")
    try:
        from npc.sources import source_for

        source = source_for(data_config(args, explicit))
        # the mask of a ratio > 0 is the noise this script made; at 0 the data is used as is
        path, mask = source.build_noise(log=lambda *_: None, force=args.force)
    except UserError as e:  # a missing or bad file, a read-only folder, a full disk
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
    n = int(mask.size)
    k = int(mask.sum())
    frac = k / n if n else 0.0
    print(f"noisy captions: {path}")
    print(f"noisy lines: {k} / {n} ({100.0 * frac:.2f}%), {args.noise_mode}-level noise")
    return 0


def build_parser_given_only():
    """The parser that yields only the flags given (which seed the command line names)."""
    from npc import params

    return params.build_parser("noise", given_only=True)


if __name__ == "__main__":
    sys.exit(main())
