"""A model to take away: a checkpoint's weights as a file that open_clip loads by itself.

:func:`export_open_clip` writes ``{"state_dict": ..., "model_name": ..., ...}``: every parameter in
fp32 under open_clip's (= OpenAI CLIP's) names, the layout of open_clip's own training checkpoints,
which ``open_clip.create_model_and_transforms(model_name, pretrained=FILE)`` loads as it is. The other
entries say what the file holds (the open_clip model name and config, the context length, the source).

open_clip knows the real architectures by name (``ViT-B/32`` of this project is open_clip's
``ViT-B-32-quickgelu``: OpenAI's weights use QuickGELU). The demo's tiny configs (``npc-tiny``,
``npc-micro``) are this project's: their config file is written beside the export as
``<model_name>.json``, which ``open_clip.add_model_config(path)`` registers under that name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

from npc.config import flags_of_saved
from npc.errors import ConfigError, ExistingFileError

EXPORT_FORMAT = "npc-export/1"


def checkpoint_model(ckpt) -> Optional[str]:
    """The ``--vision_model`` a checkpoint of this project (or the demo's base) records, else None."""
    if not isinstance(ckpt, dict):
        return None
    return ckpt.get("vision_model") or flags_of_saved(ckpt).get("vision_model")


def is_export(path) -> bool:
    """Whether ``path`` is a file :func:`export_open_clip` wrote (it records :data:`EXPORT_FORMAT`)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("format") == EXPORT_FORMAT
    except Exception:
        return False


def check_out(checkpoint: Path, out: Path) -> None:
    """Refuse an ``--out`` that would replace a file this script did not write: the checkpoint being exported,
    a folder, or any existing file that is not an earlier export (a training checkpoint, a user's file)."""
    if not os.path.lexists(out):
        return
    if out.is_dir():
        raise ExistingFileError(f"--out {out} is a folder: give the file to write (e.g. {out / 'model.pt'})")
    if checkpoint.exists() and os.path.samefile(checkpoint, out):
        raise ExistingFileError(f"--out {out} is the checkpoint being exported: choose another --out")
    if not is_export(out):
        raise ExistingFileError(f"--out {out} exists and is not an export of export_model.py (a training "
                                f"checkpoint or another file): it is left as it is; choose another --out, or move "
                                f"the file away first")


def check_config(path: Path, cfg: Dict) -> None:
    """Refuse to replace a config file beside the export that holds something else than ``cfg`` (a user's file,
    or the config of an earlier export of another context length, which would stop loading)."""
    if not os.path.lexists(path):
        return
    try:
        held = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        held = None
    if held != cfg:
        raise ExistingFileError(f"{path} exists and holds another file than this export's model config: it is left "
                                f"as it is; export to another folder (--out), or move the file away first")


def export_open_clip(checkpoint, out, vision_model: Optional[str] = None) -> Dict[str, str]:
    """Write ``checkpoint``'s weights to ``out`` for open_clip; returns ``model_name``, ``file`` and, for a
    demo config, ``config`` (the config file to register). ``vision_model``: the architecture, needed for a
    file that does not record it (a bare state dict, the release's); one that contradicts the checkpoint is
    refused by name."""
    from npc.io import atomic_torch_save, atomic_write_text
    from npc.model import CONFIG_DIR, DEMO_MODELS, create_model, load_checkpoint_weights, open_clip_name, read_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    check_out(checkpoint, out)  # before anything is read or written
    ckpt = read_checkpoint(checkpoint)
    trained = checkpoint_model(ckpt)
    if vision_model and trained and open_clip_name(vision_model) != open_clip_name(trained):
        raise ConfigError(f"{checkpoint} is a checkpoint of {trained} (--vision_model {trained}), not of "
                         f"--vision_model {vision_model}")
    vision_model = vision_model or trained
    if not vision_model:
        raise ConfigError(f"{checkpoint} does not record its model: pass --vision_model (e.g. ViT-B/32)")
    saved = flags_of_saved(ckpt) if isinstance(ckpt, dict) else {}
    context_length = saved.get("context_length")
    model, _, _ = create_model(vision_model, "none", precision="fp32", context_length=context_length)
    load_checkpoint_weights(model, checkpoint, ckpt=ckpt)  # strict: a file of another model is refused, named
    name = open_clip_name(vision_model)
    state = {k: (v.float() if v.is_floating_point() else v).detach().clone().contiguous()
             for k, v in model.state_dict().items()}
    result = {"model_name": name, "file": str(out)}
    default_length = ((open_clip_config(name) or {}).get("text_cfg") or {}).get("context_length")
    if context_length and name not in DEMO_MODELS and int(context_length) != default_length:
        result["context_length"] = int(context_length)  # open_clip must be told: force_context_length
    cfg = None
    if name in DEMO_MODELS:
        cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text(encoding="utf-8"))
        if context_length:
            cfg["text_cfg"]["context_length"] = int(context_length)
        config_path = out.parent / f"{name}.json"
        check_config(config_path, cfg)
        atomic_write_text(config_path, json.dumps(cfg, indent=4) + "\n")
        result["config"] = str(config_path)
    atomic_torch_save({"format": EXPORT_FORMAT, "model_name": name, "model_cfg": cfg,
                       "context_length": int(model.context_length), "vision_model": vision_model,
                       "source": checkpoint.name, "epoch": ckpt.get("epoch") if isinstance(ckpt, dict) else None,
                       "state_dict": state}, out)
    return result


def usage(result: Dict[str, str]) -> str:
    """The Python lines that load an export with open_clip alone."""
    lines = ["import open_clip"]
    if "config" in result:
        lines.append(f"open_clip.add_model_config({result['config']!r})  # this project's demo config")
    force = f", force_context_length={result['context_length']}" if "context_length" in result else ""
    lines.append(f"model, _, preprocess = open_clip.create_model_and_transforms({result['model_name']!r}, "
                 f"pretrained={result['file']!r}{force})")
    force = f", context_length={result['context_length']}" if "context_length" in result else ""
    lines.append(f"tokenizer = open_clip.get_tokenizer({result['model_name']!r}{force})")
    return "\n".join(lines)


def open_clip_model(result: Dict[str, str], device="cpu"):
    """Load an export the way a user would, through open_clip only (for tests and examples)."""
    import open_clip

    if "config" in result:
        open_clip.add_model_config(result["config"])
    length = result.get("context_length")
    model, _, preprocess = open_clip.create_model_and_transforms(result["model_name"], pretrained=result["file"],
                                                                 device=device, force_context_length=length)
    return model.eval(), preprocess, open_clip.get_tokenizer(result["model_name"], context_length=length)


def open_clip_config(name: str) -> Optional[Dict]:
    import open_clip

    return open_clip.get_model_config(name)

