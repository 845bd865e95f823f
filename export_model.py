"""A model to take away: a checkpoint as open_clip's hub folder (or one .pt file), loaded by open_clip alone.

    python export_model.py logs/mine/checkpoints/best.pt --out mine
    python export_model.py pre-trained_models/npc_coco_0.2.pt --vision_model ViT-B/32 --out npc_coco
    python export_model.py logs/mine/checkpoints/best.pt --out mine.pt     # the one-file form

The folder is open_clip's own (what ``open_clip.push_to_hf_hub`` uploads): ``open_clip_config.json`` (the
model and preprocessing config), ``open_clip_model.safetensors`` (every weight in fp32 under open_clip's
names), the tokenizer's files and a model card (``README.md``: method, base model, data and its fingerprint,
noise, epochs, the run's command, its test table, the data's self-check). Then, with open_clip alone:

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:mine")
    tokenizer = open_clip.get_tokenizer("local-dir:mine")

An ``--out`` ending in .pt or .pth is the one-file form (``{"state_dict": ..., "model_name": ...}``), loaded with
``create_model_and_transforms(model_name, pretrained=FILE)``; the demo's tiny configs are written beside it for
``open_clip.add_model_config``. The script prints the lines that load what it wrote. docs/own_data.md shows
retrieval with it.
"""
import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False, description="Write a checkpoint as open_clip's hub folder, which "
                                "open_clip.create_model_and_transforms('local-dir:FOLDER') loads (or as one .pt file)")
    p.add_argument("checkpoint", help="a checkpoint of this project (best.pt, latest.pt), the reference release's, "
                                      "or a state dict")
    p.add_argument("--out", required=True, help="the folder to write (e.g. mine), or a file ending in .pt for the "
                                                "one-file form; an existing folder or file is replaced only when it "
                                                "is an earlier export of this script (or an empty folder)")
    p.add_argument("--vision_model", default=None,
                   help="the architecture (ViT-B/32, ...): needed only for a file that does not record it; a "
                        "checkpoint of another model is refused")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)  # before importing torch: --help answers at once
    from npc.export import export, usage

    result = export(args.checkpoint, args.out, vision_model=args.vision_model)
    if "folder" in result:
        print(f"wrote {result['folder']} (open_clip's hub folder, model card {result['card']}); load it with:\n"
              + usage(result))
    else:
        print(f"wrote {result['file']} (open_clip model {result['model_name']}"
              + (f", config {result['config']}" if "config" in result else "") + "); load it with:\n" + usage(result))
    return result


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
