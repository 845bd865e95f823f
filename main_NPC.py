"""Train CLIP with NPC (negative pre-aware re-weighting + memory bank), or evaluate a checkpoint.

    python main_NPC.py                                   # the embedded demo, end to end, on CPU
    python main_NPC.py --dataset coco --dataset_root dataset/MSCOCO --noise_ratio 0.2
    python main_NPC.py --dataset coco --eval --resume pre-trained_models/npc_coco_0.2.pt
"""
import sys

from npc.params import parse_args


def main(argv=None):
    cfg = parse_args(argv, "npc")  # before importing torch: --help and flag errors answer at once
    from npc.engine import run

    return run(cfg)


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
