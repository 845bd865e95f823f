#!/usr/bin/env python
"""Check a dataset before a long run: its format, images and captions per split, missing or unreadable images.

    python check_data.py --dataset coco --dataset_root dataset/MSCOCO            # the release's layout or dataset_coco.json
    python check_data.py --dataset f30k --dataset_root dataset/Flickr30K --decode  # read every image in full
    python check_data.py --dataset csv --train_data train.csv --dev_data dev.csv --test_data test.csv

Exits 0 when every split reads and every image is there (and, with --decode, decodes), else 1
(docs/data.md).
"""
import sys


def main(argv=None) -> int:
    from npc.check_data import run
    from npc.cli import cli
    from npc.params import parse_args

    code = []  # a mistyped flag is argparse's error (exit status 2); a wrong value, one line (1)
    return cli(lambda argv: code.append(run(parse_args(argv, "check"))), argv) or code[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
