"""A model to take away: write a checkpoint's weights as a file open_clip loads by itself.

    python export_model.py logs/mine/checkpoints/best.pt --out mine.pt
    python export_model.py pre-trained_models/npc_coco_0.2.pt --vision_model ViT-B/32 --out npc_coco.pt

Then, with open_clip alone (the script prints these lines for the file it wrote):

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained="mine.pt")

The file holds every weight in fp32 under open_clip's names (``state_dict``) and says which open_clip
model it is (``model_name``). The demo's tiny models are this project's configs: their config is
written beside the file, to register with ``open_clip.add_model_config``. docs/own_data.md shows
retrieval with it.
"""
import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description="Write a checkpoint's weights as a file that "
                                            "open_clip.create_model_and_transforms(NAME, pretrained=FILE) loads")
    p.add_argument("checkpoint", help="a checkpoint of this project (best.pt, latest.pt), the reference release's, "
                                      "or a state dict")
    p.add_argument("--out", required=True, help="the file to write (e.g. mine.pt); an existing file is replaced "
                                                "only when it is an earlier export of this script")
    p.add_argument("--vision_model", default=None,
                   help="the architecture (ViT-B/32, ...): needed only for a file that does not record it; a "
                        "checkpoint of another model is refused")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)  # before importing torch: --help answers at once
    from npc.export import export_open_clip, usage

    result = export_open_clip(args.checkpoint, args.out, vision_model=args.vision_model)
    print(f"wrote {result['file']} (open_clip model {result['model_name']}"
          + (f", config {result['config']}" if "config" in result else "") + "); load it with:\n" + usage(result))
    return result


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
