"""(Re)build the NPC memory bank of clean pairs for a dataset and noise ratio (docs/method.md section 3).

    python get_memorybank.py                                          # the demo at its default 40% noise
    python get_memorybank.py --dataset coco --dataset_root dataset/MSCOCO --noise_ratio 0.2
    python get_memorybank.py --dataset f30k --noise_ratio 0.4 --pretrained pre-trained_models/ViT-B-32.pt

Writes annotations/memory_bank/<r>_mbank_{img,txt}_idx.npy under the dataset root, where
main_NPC.py reads them (main_NPC.py also builds them itself when missing, the same way: the GMM's
seed is --bank_seed, not the training --seed). Takes the flags of main_NPC.py that the bank depends
on (--help lists them). --resume CKPT builds the bank with a trained model. Under torchrun every
process encodes its share of the training set and rank 0 writes the same files as one process.
"""
import sys

from npc.params import parse_args


def main(argv=None):
    cfg = parse_args(argv, "bank")  # before importing torch: --help and flag errors answer at once
    from npc.run_setup import build_bank_only

    return build_bank_only(cfg)


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
