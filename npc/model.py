"""CLIP models through open_clip: reference names, demo configs, weight loading.

* ``--vision_model`` accepts the reference release's names (``ViT-B/32`` ...), open_clip names, and
  the tiny demo configs in ``npc/model_configs`` (registered with open_clip's own config registry).
* ``--pretrained`` is an open_clip tag (``openai``), a file, ``demo-base`` or ``none``.
* Checkpoints of this project and of the reference release (a dict whose ``state_dict`` holds
  OpenAI-CLIP parameter names, fp16) load into the same open_clip model: open_clip's ``CLIP``
  class uses OpenAI's parameter names.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import socket
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import open_clip
import torch
from open_clip.transformer import text_global_pool

from npc.errors import BadFileError, ConfigError, MissingFileError, UserError

CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(CONFIG_DIR)
DEMO_MODELS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))

# The reference release's names -> open_clip names. OpenAI's weights were trained with QuickGELU,
# so the names resolve to the -quickgelu configs that match them exactly.
VISION_ALIASES: Dict[str, str] = {
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
    "RN50": "RN50-quickgelu",
    "RN101": "RN101-quickgelu",
    "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu",
    "RN50x64": "RN50x64-quickgelu",
}

# Keys of OpenAI's state dicts that are not parameters.
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")


class WeightsUnavailable(UserError, RuntimeError):
    """Pretrained weights are neither cached nor downloadable from here."""


def open_clip_name(vision_model: str) -> str:
    name = VISION_ALIASES.get(vision_model, vision_model)
    if name not in open_clip.list_models():
        known = ", ".join(list(VISION_ALIASES) + list(DEMO_MODELS))
        raise ConfigError(f"unknown --vision_model {vision_model!r}: use one of {known} or an open_clip model name")
    return name


def _hf_online(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_pretrained_tag(model_name: str, tag: str, cache_dir: Optional[str] = None) -> str:
    """Path of the cached weights for an open_clip tag, or the tag itself if they can be downloaded.

    Offline, open_clip's downloader retries for most of a minute before failing with a long
    traceback; this checks the Hugging Face cache first and fails at once with instructions.
    """
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ConfigError(f"--pretrained {tag!r} is not a file and not an open_clip tag of {model_name} "
                         f"(tags: {tags})")
    repo = cfg.get("hf_hub", "").rstrip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    if _hf_online():
        return tag
    raise WeightsUnavailable(
        f"the {tag!r} weights of {model_name} are not in the local cache and the Hugging Face hub cannot be "
        f"reached from here.\n  On a machine with internet run:\n"
        f"    python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{tag}')\"\n"
        f"  then either copy ~/.cache/huggingface to this machine, or save the weights to a file and pass "
        f"--pretrained PATH (e.g. pre-trained_models/ViT-B-32-openai.pt):\n"
        f"    python -c \"import open_clip, torch; m = open_clip.create_model('{model_name}', pretrained='{tag}'); "
        f"torch.save(m.state_dict(), 'ViT-B-32-openai.pt')\"")


def extract_state_dict(obj) -> Dict[str, torch.Tensor]:
    """The parameter dict of any checkpoint we accept, with OpenAI/open_clip parameter names."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError("not a state dict nor a checkpoint dict with a 'state_dict' entry")
    sd = {}
    for k, v in obj.items():
        if k in _OPENAI_META_KEYS:
            continue
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        sd[k] = v
    return sd


def read_checkpoint(path):
    """The object saved in a checkpoint file (read with ``weights_only=True``); clear errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, TorchScript archives
        raise BadFileError(not_a_checkpoint(path, e)) from None


def not_a_checkpoint(path: Path, e: Exception) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused (torch's own message spans lines and
    suggests ``weights_only=False``, which would run code from the file)."""
    text = str(e)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"cannot read checkpoint {path}: {err.strerror}"
    if not head:
        return f"{path} is not a checkpoint (empty file)"
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return (f"{path} is not a checkpoint this project loads: it holds Python objects ({unsupported.group(1)}), and "
                f"checkpoints are read with weights_only=True (tensors and plain values only)")
    if head.startswith(b"PK"):
        why = re.search(r"PytorchStreamReader failed ([^.]*)", text)
        return (f"{path} is not a checkpoint (a damaged or cut-short zip archive"
                + (f": {why.group(0)}" if why else "") + "): copy or write it again")
    if "Weights only load failed" in text or isinstance(e, (EOFError, pickle.UnpicklingError)):
        return f"{path} is not a checkpoint (neither a zip archive nor a pickle written by torch.save)"
    return f"{path} is not a checkpoint ({text.strip().splitlines()[0] if text.strip() else type(e).__name__})"


def load_checkpoint_weights(model: torch.nn.Module, path, strict: bool = True, ckpt=None) -> Dict:
    """Load weights from this project's checkpoint, the release's, or a bare state dict.

    ``ckpt``: what :func:`read_checkpoint` already returned for ``path`` (it is not read twice).

    Tensors are cast to the dtype of the parameter they land in (the release stores fp16).
    Returns the whole checkpoint object (for resuming optimizer state etc.).
    """
    path = Path(path)
    if ckpt is None:
        ckpt = read_checkpoint(path)
    try:
        sd = extract_state_dict(ckpt)
    except ValueError as e:
        raise BadFileError(f"{path}: {e}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape_mismatch = [k for k in set(sd) & set(own) if sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or shape_mismatch):
        raise ConfigError(
            f"{path} does not fit this model (--vision_model?): {len(missing)} missing keys {missing[:4]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:4]}, shape mismatches {shape_mismatch[:4]}")
    with torch.no_grad():
        for k, v in sd.items():
            if k in own and v.shape == own[k].shape:
                own[k].copy_(v.to(own[k].dtype))
    return ckpt if isinstance(ckpt, dict) else {"state_dict": ckpt}


#: The seed of ``--pretrained none`` weights in runs and bank builds: a randomly initialised model is the
#: same in every process and every build, so "pretrained: none" names its weights (bank provenance).
RANDOM_INIT_SEED = 0


def create_model(vision_model: str, pretrained: Optional[str] = "openai", *, precision: str = "fp32",
                 device="cpu", context_length: Optional[int] = None, demo_base_path=None,
                 init_seed: Optional[int] = None):
    """Model, preprocessing transform (CLIP's, no augmentation) and tokenizer.

    ``precision="fp16"`` gives the release's pure-fp16 weights; otherwise weights are fp32 (with
    ``amp_bf16`` autocast applied by the training loop). ``init_seed``: random initial weights
    (``pretrained`` none) drawn from this seed, leaving the global random state as it was; without
    it they come from the global random state.
    """
    name = open_clip_name(vision_model)
    oc_precision = "fp16" if precision == "fp16" else "fp32"
    tag_or_file = None
    weights_file = None
    if pretrained in (None, "", "none"):
        pass
    elif pretrained == "demo-base":
        if demo_base_path is None:
            raise ConfigError("--pretrained demo-base: the demo's base model is not built (a run with --pretrained "
                             "demo-base builds it)")
        weights_file = demo_base_path
    elif os.path.isfile(pretrained):
        weights_file = pretrained
    else:
        resolved = resolve_pretrained_tag(name, pretrained)
        tag_or_file = resolved
    root_logger = logging.getLogger()
    level = root_logger.level
    if tag_or_file is None:
        # open_clip warns "initialized randomly" although the weights are loaded right below.
        root_logger.setLevel(logging.ERROR)
    seeded = init_seed is not None and tag_or_file is None and weights_file is None
    try:
        with torch.random.fork_rng(devices=[], enabled=seeded):
            if seeded:
                torch.manual_seed(init_seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=tag_or_file, precision=oc_precision, device="cpu",
                force_context_length=context_length, pretrained_text=False, pretrained_image=False)
    except RuntimeError as e:
        if context_length and "positional_embedding" in str(e):
            own = (open_clip.get_model_config(name) or {}).get("text_cfg", {}).get("context_length")
            raise ConfigError(f"--context_length {context_length}: the {pretrained} weights of {name} hold text "
                             f"positions for exactly {own} tokens; pass --context_length {own} or leave it out") from None
        raise
    finally:
        root_logger.setLevel(level)
    if weights_file is not None:
        ckpt = read_checkpoint(weights_file)
        own = extract_state_dict(ckpt).get("positional_embedding")
        if context_length and own is not None and own.shape[0] != context_length:
            raise ConfigError(f"--context_length {context_length}: the weights {weights_file} hold text positions for "
                             f"exactly {own.shape[0]} tokens; pass --context_length {own.shape[0]} or leave it out")
        load_checkpoint_weights(model, weights_file, ckpt=ckpt)
    tokenizer = open_clip.get_tokenizer(name, context_length=context_length or model.context_length)
    return model.to(device), preprocess, tokenizer


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype images must have: that of the vision tower's first weight matrix (its patch/stem conv).

    Under open_clip's pure fp16 some parameters (e.g. logit_scale) stay fp32, so the first
    parameter of the model says nothing.
    """
    for m in model.visual.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            return m.weight.dtype
    return next(model.parameters()).dtype


def encode(model, images: Optional[torch.Tensor] = None, texts: Optional[torch.Tensor] = None
           ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """L2-normalized image and text features (either may be ``None``)."""
    img = txt = None
    if images is not None:
        if images.dtype == torch.uint8:  # from the image cache: NHWC pixels, normalized here on the device
            cfg = model.visual.preprocess_cfg
            images = normalize_uint8(images, cfg["mean"], cfg["std"])
        img = model.encode_image(images.to(model_dtype(model)), normalize=True)
    if texts is not None:
        txt = encode_text_parts(model, texts)[0]
    return img, txt


def encode_text_parts(model, texts: torch.Tensor, parts: Optional[Sequence[torch.Tensor]] = None
                      ) -> List[torch.Tensor]:
    """L2-normalized features of ``texts[p]`` for each row set ``p`` of ``parts`` (default: all rows).

    This is open_clip's ``CLIP.encode_text``, step by step, with two savings that change no result:

    * Each part runs through the text transformer only up to its longest caption: in a causal
      tower pooled at the end-of-text token, the padding after it cannot reach the feature (MSCOCO
      captions fill about a third of CLIP's 77 positions).
    * Each part runs through the transformer in a forward call (and so an autograd graph) of its
      own, while the token embedding is looked up once for all parts: a backward pass then builds
      the dense gradient of the (vocabulary x width) embedding table once, not once per part.

    Text towers of other classes (``CustomTextCLIP``) are encoded part by part, as they are.
    """
    if parts is None:
        parts = [torch.arange(texts.shape[0], device=texts.device)]
    if not hasattr(model, "token_embedding"):
        return [model.encode_text(texts[p], normalize=True) for p in parts]
    pooled_at = _pooled_positions(model, texts)
    if pooled_at is None:
        lengths = [texts.shape[1]] * len(parts)
    else:  # one host sync for all parts
        lengths = (torch.stack([pooled_at[p].max() for p in parts]) + 1).tolist()
    cast_dtype = model.transformer.get_cast_dtype()
    rows = torch.cat(list(parts)) if len(parts) > 1 else parts[0]
    x = model.token_embedding(texts[rows]).to(cast_dtype) + model.positional_embedding.to(cast_dtype)
    out = []
    for chunk, p, n in zip(x.split([len(p) for p in parts]), parts, lengths):
        mask = model.attn_mask[:n, :n] if model.attn_mask is not None else None
        h = model.ln_final(model.transformer(chunk[:, :n], attn_mask=mask))
        h = text_global_pool(h, texts[p][:, :n], model.text_pool_type,
                             eos_token_id=getattr(model, "text_eos_id", None))
        if model.text_projection is not None:
            h = model.text_projection(h) if isinstance(model.text_projection, torch.nn.Linear) \
                else h @ model.text_projection
        out.append(torch.nn.functional.normalize(h, dim=-1))
    return out


def _pooled_positions(model, texts: torch.Tensor) -> Optional[torch.Tensor]:
    """Per caption, the position its feature is read from, if that position sees no later one
    (causal attention, end-of-text pooling); ``None`` if every position can matter."""
    if getattr(model, "attn_mask", None) is None or texts.shape[0] == 0:
        return None
    if model.text_pool_type == "argmax":  # the end-of-text token has the largest id
        return texts.argmax(dim=-1)
    if model.text_pool_type == "eos" and getattr(model, "text_eos_id", None) is not None:
        return (texts == model.text_eos_id).int().argmax(dim=-1)
    return None


def compile_towers(model, backend: str = "inductor") -> None:
    """``torch.compile`` the image and text transformers in place, for any batch size.

    ``nn.Module.compile`` keeps the parameter names, so checkpoints are unchanged. Compiled backward
    functions with donated buffers refuse a second backward pass through one graph, which the
    efficient NPC step makes (``retain_graph=True``): donation is switched off.
    """
    import torch._functorch.config as functorch_config

    functorch_config.donated_buffer = False
    text_tower = model.transformer if hasattr(model, "token_embedding") else model.text
    for tower in (model.visual, text_tower):
        tower.compile(dynamic=True, backend=backend)


def logit_scale(model) -> torch.Tensor:
    # CLIP clamps the learned temperature at 100; keep that so the loss cannot blow up.
    return model.logit_scale.exp().clamp(max=100.0)


def normalize_uint8(images: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    """uint8 NHWC -> normalized float NCHW, on whatever device ``images`` is on."""
    x = images.permute(0, 3, 1, 2).to(dtype).div_(255)
    m = torch.tensor(mean, device=x.device, dtype=dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=dtype).view(1, -1, 1, 1)
    return (x - m) / s
