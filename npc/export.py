"""A model to take away: a checkpoint's weights in the form open_clip loads by itself.

Two forms, one model:

* a folder (the default): open_clip's own hub folder, what ``open_clip.push_to_hf_hub`` uploads and
  ``create_model_and_transforms("local-dir:FOLDER")`` / ``("hf-hub:USER/REPO")`` load. It is written by
  open_clip's ``save_for_hf``: ``open_clip_config.json`` (the whole model config and the preprocessing
  config: a demo config needs no ``add_model_config``), ``open_clip_model.safetensors`` (every weight in
  fp32 under open_clip's names) and the tokenizer's files, plus a model card (``README.md``, the Hugging
  Face convention) that says what the run did: method, base model, data and its fingerprint, noise,
  epochs, the run's command, its test table as it printed it, and the self-check of its data.
* a file (``--out mine.pt``): ``{"state_dict": ..., "model_name": ...}``, the layout of open_clip's training
  checkpoints, loaded with ``create_model_and_transforms(model_name, pretrained=FILE)``; the demo's tiny
  configs are written beside it as ``<model_name>.json`` for ``open_clip.add_model_config``.

Neither replaces anything but an earlier export of this module; a checkpoint of another model than
``--vision_model`` is refused.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

from npc.config import flags_of_saved
from npc.errors import ConfigError, DiskFullError, ExistingFileError, UserError, WriteError
from npc.model_card import model_card

EXPORT_FORMAT = "npc-export/1"
FOLDER_FORMAT = "npc-export-folder/1"
#: ``--out`` names ending so are the one-file form; any other name is a folder.
FILE_SUFFIXES = (".pt", ".pth")
#: The files a folder export holds (besides the weights and the config, the tokenizer's and the card).
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
FOLDER_FILES = ("open_clip_config.json", "open_clip_model.safetensors", "README.md", *TOKENIZER_FILES)


def checkpoint_model(ckpt) -> Optional[str]:
    """The ``--vision_model`` a checkpoint of this project (or the demo's base) records, else None."""
    if not isinstance(ckpt, dict):
        return None
    return ckpt.get("vision_model") or flags_of_saved(ckpt).get("vision_model")


def is_folder_out(out) -> bool:
    return Path(out).suffix.lower() not in FILE_SUFFIXES


def is_export(path) -> bool:
    """Whether ``path`` is a file :func:`export_open_clip` wrote (it records :data:`EXPORT_FORMAT`)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("format") == EXPORT_FORMAT
    except Exception:
        return False


def is_folder_export(folder) -> bool:
    """Whether ``folder`` is a folder :func:`export_folder` wrote: its config records :data:`FOLDER_FORMAT` and it
    holds no file of another kind."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
        names = {p.name for p in folder.iterdir()}
    except (OSError, ValueError):
        return False
    return (config.get("npc_export") or {}).get("format") == FOLDER_FORMAT and names <= set(FOLDER_FILES)


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


def check_out_folder(checkpoint: Path, out: Path) -> None:
    """A folder ``--out`` is new, empty, or an earlier folder export (replaced whole); anything else is refused:
    a file, the folder holding the checkpoint being exported, a folder of other files."""
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise ExistingFileError(f"--out {out} exists and is not an export of export_model.py (a file, where the export "
                                f"is a folder): it is left as it is; choose another --out (a new or empty folder, or "
                                f"a name ending in .pt for the one-file form)")
    if checkpoint.exists() and checkpoint.resolve().is_relative_to(out.resolve()):
        raise ExistingFileError(f"--out {out} is a folder that holds the checkpoint being exported: it is left as it "
                                f"is; choose another --out (a new or empty folder)")
    if any(out.iterdir()) and not is_folder_export(out):
        raise ExistingFileError(f"--out {out} is a folder that holds other files than an export of export_model.py: "
                                f"it is left as it is; choose another --out (a new or empty folder)")


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


# ----------------------------------------------------------------------------- the trained model

def trained_model(checkpoint: Path, vision_model: Optional[str] = None) -> Dict:
    """The checkpoint's weights in an fp32 open_clip model, with what says which model it is: ``model``,
    ``name`` (open_clip's), ``vision_model``, ``model_cfg`` (the whole config, context length included),
    ``ckpt`` (the file's content) and ``context_length`` (when the run chose one)."""
    from npc.model import CONFIG_DIR, DEMO_MODELS, create_model, load_checkpoint_weights, open_clip_name, read_checkpoint

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
    if name in DEMO_MODELS:
        cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text(encoding="utf-8"))
    else:
        cfg = open_clip_config(name)
    if context_length:
        cfg["text_cfg"]["context_length"] = int(context_length)
    _set_preprocess(model, name, saved.get("pretrained"))
    return {"model": model.eval(), "name": name, "vision_model": vision_model, "model_cfg": cfg, "ckpt": ckpt,
            "context_length": int(context_length) if context_length else None}


def _set_preprocess(model, name: str, pretrained: Optional[str]) -> None:
    """The preprocessing the run used: that of its ``--pretrained`` tag where open_clip knows one (its mean, std,
    interpolation), else open_clip's default, which the run's model had too."""
    import open_clip
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained and not os.path.isfile(pretrained) else {}
    cfg = merge_preprocess_dict(PreprocessCfg(size=model.visual.image_size), tag_cfg or {})
    open_clip.model.set_model_preprocess_cfg(model, cfg)


def fp32_state(model) -> Dict:
    return {k: (v.float() if v.is_floating_point() else v).detach().clone().contiguous()
            for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- the one-file form

def export_open_clip(checkpoint, out, vision_model: Optional[str] = None) -> Dict[str, str]:
    """Write ``checkpoint``'s weights to ``out`` for open_clip; returns ``model_name``, ``file`` and, for a
    demo config, ``config`` (the config file to register). ``vision_model``: the architecture, needed for a
    file that does not record it (a bare state dict, the release's); one that contradicts the checkpoint is
    refused by name."""
    from npc.io import atomic_torch_save, atomic_write_text
    from npc.model import DEMO_MODELS

    checkpoint, out = Path(checkpoint), Path(out)
    check_out(checkpoint, out)  # before anything is read or written
    t = trained_model(checkpoint, vision_model)
    name, ckpt, context_length = t["name"], t["ckpt"], t["context_length"]
    result = {"model_name": name, "file": str(out)}
    default_length = ((open_clip_config(name) or {}).get("text_cfg") or {}).get("context_length")
    if context_length and name not in DEMO_MODELS and context_length != default_length:
        result["context_length"] = context_length  # open_clip must be told: force_context_length
    cfg = None
    if name in DEMO_MODELS:
        cfg = t["model_cfg"]
        config_path = out.parent / f"{name}.json"
        check_config(config_path, cfg)
        atomic_write_text(config_path, json.dumps(cfg, indent=4) + "\n")
        result["config"] = str(config_path)
    atomic_torch_save({"format": EXPORT_FORMAT, "model_name": name, "model_cfg": cfg,
                       "context_length": int(t["model"].context_length), "vision_model": t["vision_model"],
                       "source": checkpoint.name, "epoch": ckpt.get("epoch") if isinstance(ckpt, dict) else None,
                       "state_dict": fp32_state(t["model"])}, out)
    return result


# ----------------------------------------------------------------------------- the folder form

class ClipTokenizerFiles:
    """The tokenizer of open_clip's CLIP models (its ``SimpleTokenizer``: OpenAI's byte-level BPE) as the files
    a Hugging Face ``CLIPTokenizer`` saves: ``vocab.json`` and ``merges.txt`` written from open_clip's own
    vocabulary file, with the special tokens under the names OpenAI's hub tokenizers give them. open_clip's
    ``save_for_hf`` calls :meth:`save_pretrained` as it does for its HF tokenizers; ``push_to_hf_hub`` uploads
    the same files for a CLIP model (it takes them from ``openai/clip-vit-large-patch14``, which needs the
    network). ``get_tokenizer("local-dir:...")`` itself reads the config: no ``hf_tokenizer_name``, so open_clip's
    SimpleTokenizer with the config's context length."""

    SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}

    def __init__(self, context_length: int):
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = int(context_length)
        self.tokenizer = SimpleTokenizer(context_length=self.context_length)

    def save_pretrained(self, dest) -> None:
        from npc.io import atomic_write_text

        dest = Path(dest)
        vocab = {self.SPECIAL.get(k, k): v for k, v in self.tokenizer.encoder.items()}
        merges = sorted(self.tokenizer.bpe_ranks, key=self.tokenizer.bpe_ranks.get)
        bos, eos = self.SPECIAL["<start_of_text>"], self.SPECIAL["<end_of_text>"]
        special = {"bos_token": bos, "eos_token": eos, "pad_token": eos, "unk_token": eos}
        config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": self.context_length, "do_lower_case": True,
                  "errors": "replace", "add_prefix_space": False, "clean_up_tokenization_spaces": True, **special}
        atomic_write_text(dest / "vocab.json", json.dumps(vocab, ensure_ascii=False) + "\n")
        atomic_write_text(dest / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        atomic_write_text(dest / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
        atomic_write_text(dest / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")


def export_folder(checkpoint, out, vision_model: Optional[str] = None) -> Dict[str, str]:
    """Write ``checkpoint`` as open_clip's hub folder ``out`` (built beside it, renamed into place: complete or
    absent); returns ``model_name`` (``local-dir:OUT``), ``folder`` and ``card``."""
    from open_clip.push_to_hf_hub import save_for_hf

    from npc.io import atomic_write_json, atomic_write_text

    checkpoint, out = Path(checkpoint), Path(out)
    check_out_folder(checkpoint, out)  # before anything is read or written
    t = trained_model(checkpoint, vision_model)
    ckpt = t["ckpt"] if isinstance(t["ckpt"], dict) else {}
    model = t["model"]  # fp32: built so, the checkpoint's tensors cast into it
    card = model_card(checkpoint, t, out)

    def build(tmp: Path) -> None:
        save_for_hf(model, ClipTokenizerFiles(model.context_length), t["model_cfg"], tmp, safe_serialization=True)
        config = json.loads((tmp / "open_clip_config.json").read_text(encoding="utf-8"))
        config["npc_export"] = {"format": FOLDER_FORMAT, "vision_model": t["vision_model"], "source": checkpoint.name,
                                "epoch": ckpt.get("epoch"), "method": (flags_of_saved(ckpt) or {}).get("method")}
        atomic_write_json(tmp / "open_clip_config.json", config)
        atomic_write_text(tmp / "README.md", card)

    publish_folder(out, build)
    return {"model_name": f"local-dir:{out}", "folder": str(out), "card": str(out / "README.md")}


def publish_folder(out: Path, build) -> None:
    """Run ``build(tmp)`` in a temporary folder beside ``out``, then rename it to ``out`` (an earlier export or an
    empty folder there is replaced)."""
    from npc.io import full_disk

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise WriteError(e.errno, f"cannot write the export: {e.strerror}", str(out)) from None
    try:
        build(tmp)
        mask = os.umask(0)
        os.umask(mask)
        for f in tmp.iterdir():  # the usual permissions (temporary files are made 0600)
            os.chmod(f, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if os.path.lexists(out):
            old = tmp.with_name(tmp.name[:-4] + ".old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        # safetensors reports a failed write as its own error, naming the OS's ("File too large (os error 27)")
        if full_disk(e) or (type(e).__name__ == "SafetensorError" and re.search(r"os error (28|27|122)\b", str(e))):
            raise DiskFullError(f"cannot write the export {out}: disk full or file too large; free some space and run "
                                f"it again (an earlier export there is kept)") from None
        if isinstance(e, OSError) and not isinstance(e, UserError):
            raise WriteError(e.errno, f"cannot write the export: {e.strerror}", str(out)) from None
        raise


# ----------------------------------------------------------------------------- loading

def export(checkpoint, out, vision_model: Optional[str] = None) -> Dict[str, str]:
    """The folder form, or the one-file form for an ``out`` ending in .pt / .pth."""
    if is_folder_out(out):
        return export_folder(checkpoint, out, vision_model)
    return export_open_clip(checkpoint, out, vision_model)


def usage(result: Dict[str, str]) -> str:
    """The Python lines that load an export with open_clip alone."""
    lines = ["import open_clip"]
    if "folder" in result:
        lines.append(f"model, _, preprocess = open_clip.create_model_and_transforms({result['model_name']!r})")
        lines.append(f"tokenizer = open_clip.get_tokenizer({result['model_name']!r})")
        return "\n".join(lines)
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

    if "folder" in result:
        model, _, preprocess = open_clip.create_model_and_transforms(result["model_name"], device=device)
        return model.eval(), preprocess, open_clip.get_tokenizer(result["model_name"])
    if "config" in result:
        open_clip.add_model_config(result["config"])
    length = result.get("context_length")
    model, _, preprocess = open_clip.create_model_and_transforms(result["model_name"], pretrained=result["file"],
                                                                 device=device, force_context_length=length)
    return model.eval(), preprocess, open_clip.get_tokenizer(result["model_name"], context_length=length)


def open_clip_config(name: str) -> Optional[Dict]:
    import open_clip

    return open_clip.get_model_config(name)

