"""Plain CLIP fine-tuning (symmetric InfoNCE), the baseline of NPC, or evaluate a checkpoint.

    python main_CLIP.py                                   # the embedded demo, end to end, on CPU
    python main_CLIP.py --dataset coco --dataset_root dataset/MSCOCO --noise_ratio 0.2
    python main_CLIP.py --dataset coco --eval --resume pre-trained_models/clip_coco_0.2.pt
"""
import sys

from npc.params import parse_args


def main(argv=None):
    cfg = parse_args(argv, "clip")  # before importing torch: --help and flag errors answer at once
    from npc.engine import run

    return run(cfg)


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
