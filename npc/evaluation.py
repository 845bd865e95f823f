"""Encode a split and rank: the evaluation path (metrics themselves live in evaluation_metrics).

Each image is decoded and encoded once (not once per caption); captions are tokenized and encoded
in batches. Everything runs in eval mode under ``no_grad``, on CPU or GPU, in the precision chosen
for evaluation (:func:`eval_precision`), which is independent of the training precision.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import torch
from open_clip.model import convert_weights_to_lp
from tqdm import tqdm

from npc.datasets import DATASETS
from npc.data import Split
from npc.loaders import image_loader
from npc.distributed import DistInfo, gather_rows
from npc.errors import ConfigError, UserError
from npc.evaluation_metrics import fold_metrics, retrieval_metrics
from npc.model import encode, model_dtype

class NoFP16Kernel(UserError, RuntimeError):
    """This torch has no CPU fp16 kernel for an operation the model needs; the message names the flag."""


#: ``--eval_precision`` values: how features are computed for evaluation.
EVAL_PRECISIONS = ("fp32", "fp16", "amp_bf16")


@contextmanager
def _no_tf32(device: torch.device) -> Iterator[None]:
    """fp32 matmuls and convolutions without TF32 on CUDA (cuDNN convolutions use TF32 by default)."""
    if torch.device(device).type != "cuda":
        yield
        return
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@contextmanager
def eval_precision(model, precision: str, device) -> Iterator[Tuple[torch.nn.Module, Callable]]:
    """The model to encode with and its autocast context for ``precision``; ``model`` is untouched.

    * ``fp32``: fp32 weights and arithmetic (TF32 off on CUDA). Weights stored in fp16 are upcast
      exactly, so a checkpoint published in fp16 is evaluated at (at least) its own precision.
    * ``fp16``: the reference release's evaluation: weights in fp16 the way OpenAI's CLIP converts
      them (linear, convolution and attention weights; LayerNorm computes in fp32), no autocast.
    * ``amp_bf16``: fp32 weights under bf16 autocast (the default training regime on CUDA).

    When ``model``'s weights are not already in the dtype ``precision`` needs, a converted copy is
    yielded, so training goes on with exactly the weights it had (an fp32 -> fp16 -> fp32 round trip
    in place would round them). Pure fp16 runs on CPU too (slowly) with this project's torch; where
    an operation has no CPU fp16 kernel, the error names the flag.
    """
    if precision not in EVAL_PRECISIONS:
        raise ConfigError(f"--eval_precision must be one of {EVAL_PRECISIONS}, got {precision!r}")
    dtype = model_dtype(model)
    if precision == "fp16":
        if dtype != torch.float16:
            model = copy.deepcopy(model)
            convert_weights_to_lp(model, torch.float16)
        try:
            yield model, nullcontext
        except RuntimeError as e:   # e.g. "... not implemented for 'Half'" from an op without a CPU fp16 kernel
            if "Half" not in str(e) or torch.device(device).type == "cuda":
                raise
            raise NoFP16Kernel(f"--eval_precision fp16 on {device}: this torch lacks an fp16 operation the model "
                               f"needs ({e}); evaluate on a GPU or with --eval_precision fp32") from e
        return
    if dtype != torch.float32:
        model = copy.deepcopy(model).float()   # exact: every fp16 / bf16 value is an fp32 value
    if precision == "amp_bf16":
        yield model, partial(torch.autocast, device_type=torch.device(device).type, dtype=torch.bfloat16)
        return
    with _no_tf32(device):
        yield model, nullcontext


def shard_bounds(n: int, batch_size: int, rank: int, world_size: int) -> Tuple[int, int]:
    """The items ``[start, stop)`` of ``rank``'s share: a contiguous run of whole batches of ``batch_size``,
    so every batch holds the same items as in one process (features agree bit for bit)."""
    n_batches = -(-n // batch_size)
    first, last = rank * n_batches // world_size, (rank + 1) * n_batches // world_size
    return min(first * batch_size, n), min(last * batch_size, n)


@torch.no_grad()
def encode_split(model, split: Split, preprocess, tokenizer, *, batch_size: int = 256, device="cpu",
                 autocast=None, num_workers: int = 0, progress: bool = True, desc: str = "encode",
                 image_batches: Optional[Iterable[torch.Tensor]] = None,
                 info: Optional[DistInfo] = None, report: Optional[Callable[[str], None]] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalized features: (n_images, d) and (n_captions, d), fp32, on ``device``.

    ``report``: called with a progress line every 5% of the images and of the captions (log files).

    ``image_batches`` replaces decoding the split's image files, e.g. uint8 batches read from an
    image cache, in the split's image order.

    ``info`` of several processes: each rank encodes its share of the images and of the captions
    (:func:`shard_bounds`), and every rank gets all features, in the split's order (all-gather).
    """
    autocast = autocast or nullcontext
    sharded = info is not None and info.enabled
    rank, world = (info.rank, info.world_size) if sharded else (0, 1)
    if sharded and image_batches is not None:
        raise ValueError("encode_split: image_batches cannot be sharded over processes")
    was_training = model.training
    model.eval()
    img_feats, txt_feats = [], []
    if image_batches is not None:
        loader, (i0, i1) = image_batches, (0, split.num_images)
    else:
        i0, i1 = shard_bounds(split.num_images, batch_size, rank, world)
        loader = image_loader(split, preprocess, batch_size, num_workers,
                              items=range(i0, i1) if sharded else None)
    tell = _progress_lines(report, desc, split)
    done = 0
    for images in tqdm(loader, desc=f"{desc} images ({split.name})", disable=not progress, leave=False):
        with autocast():
            img_feats.append(encode(model, images=images.to(device, non_blocking=True))[0].float())
        done += len(images)
        tell("images", done, i1 - i0)
    c0, c1 = shard_bounds(len(split.captions), batch_size, rank, world)
    for start in tqdm(range(c0, c1, batch_size), desc=f"{desc} captions ({split.name})",
                      disable=not progress, leave=False):
        tokens = tokenizer(split.captions[start:min(start + batch_size, c1)]).to(device)
        with autocast():
            txt_feats.append(encode(model, texts=tokens)[1].float())
        tell("captions", min(start + batch_size, c1) - c0, c1 - c0)
    model.train(was_training)
    img, txt = (torch.cat(f) if f else torch.empty((0, 0), device=device) for f in (img_feats, txt_feats))
    if sharded:
        img, txt = gather_rows(img, info), gather_rows(txt, info)
    return img, txt


def _progress_lines(report, desc: str, split: Split):
    """``tell(what, done, total)``: a line through ``report`` each time another 5% of ``total`` is done."""
    last = {}

    def tell(what: str, done: int, total: int) -> None:
        if report is None or total <= 0:
            return
        step = done * 20 // total
        if step > last.get(what, 0) or (done == total and last.get(what) != 20):
            last[what] = step
            report(f"{desc}: encoded {done}/{total} {what} of the {split.name} split ({100 * done // total}%)")
    return tell


def evaluate_split(model, split: Split, preprocess, tokenizer, *, folds_1k: bool = False,
                   ties: str = "pessimistic", **kw) -> Dict[str, Dict[str, float]]:
    """Recall table rows for one split: the full split, and for MSCOCO test also the 1K folds.

    ``ties`` is the rule for exact ties (:func:`npc.evaluation_metrics.retrieval_metrics`); ``kw``
    go to :func:`encode_split`.
    """
    img, txt = encode_split(model, split, preprocess, tokenizer, **kw)
    with _no_tf32(img.device):
        sims = img @ txt.t()
    n = split.num_images
    rows = {}
    label = row_label(split)
    k = split.uniform_num_anns
    if k:  # the SCAN layout: k consecutive captions per image
        rows[label] = retrieval_metrics(sims, k, ties)
    else:  # any number of captions per image (a CSV dataset): caption j belongs to image caption_image[j]
        rows[label] = retrieval_metrics(sims, ties=ties, caption_image=split.caption_image)
    if folds_1k and k and n % 1000 == 0 and n > 1000:
        rows[fold_label(split)] = fold_metrics(sims, split.num_anns, folds=n // 1000, ties=ties)
    return rows


def row_label(split: Split) -> str:
    """The table's name of a split's row: ``test 5K``, ``test (20 images)``."""
    n = split.num_images
    return f"{split.name} {n // 1000}K" if n % 1000 == 0 and n >= 1000 else f"{split.name} ({n} images)"


def fold_label(split: Split) -> str:
    return f"{split.name} 1K ({split.num_images // 1000}-fold mean)"


def _rounded(metrics: Dict) -> Dict:
    """Floats rounded to 10 decimals: 48.56, not 48.559999999999995 (percentages of whole counts)."""
    return {k: round(v, 10) if isinstance(v, float) else v for k, v in metrics.items()}


def results_by_split(rows: Dict[str, Dict], splits) -> Dict[str, Dict]:
    """results.json's form of the table ``rows`` of ``splits``: keyed by split name (the MSCOCO 1K fold
    mean as ``<split>_1k``), the image count as a field, floats without float noise."""
    out = {}
    for split in splits:
        if row_label(split) in rows:
            out[split.name] = {"images": split.num_images, **_rounded(rows[row_label(split)])}
        if fold_label(split) in rows:
            out[f"{split.name}_1k"] = {"images": 1000, "folds": split.num_images // 1000,
                                       **_rounded(rows[fold_label(split)])}
    return out


def mean_r1(metrics: Dict[str, float]) -> float:
    """The release's model-selection score: (i2t R@1 + t2i R@1) / 2."""
    return (metrics["i2t_r1"] + metrics["t2i_r1"]) / 2


def primary_row(rows: Dict[str, Dict[str, float]]) -> Optional[Dict[str, float]]:
    return next(iter(rows.values()), None)


def eval_tables(model, splits, preprocess, tokenizer, *, dataset: str, eval_batch_size: int, device, precision: str,
                ties: str, num_workers: int, progress: bool) -> Dict[str, Dict[str, float]]:
    """Recall rows of ``splits``, encoded at the evaluation ``precision`` (not the training one)."""
    rows = {}
    with eval_precision(model, precision, device) as (eval_model, autocast):
        for split in splits:
            rows.update(evaluate_split(eval_model, split, preprocess, tokenizer, ties=ties,
                                       folds_1k=DATASETS[dataset].folds_1k and split.name == "test",
                                       batch_size=eval_batch_size, device=device, autocast=autocast,
                                       num_workers=num_workers, progress=progress))
    return rows
