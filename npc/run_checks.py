"""The checks a run passes before anything is written: the splits are there, the batch fits, the warmup fits the
run, the evaluation images decode, and what a user's splits share with the training split.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from npc import data as D
from npc.config import DataConfig, ModelConfig, OptimConfig
from npc.distributed import DistInfo
from npc.errors import ConfigError
from npc.model import DEMO_MODELS, open_clip_name
from npc.sources import dataset_definition, source_for


def demo_to_generate(data: DataConfig) -> bool:
    """The demo, not generated yet: it is, on first use, at its default size (nothing of it to check)."""
    return dataset_definition(data.dataset).generated and not (Path(data.dataset_root) / "demo_info.json").is_file()


def preflight(data: DataConfig, optim: OptimConfig, evaluating: bool, explicit: frozenset,
              info: DistInfo) -> Tuple[List[str], Optional[int]]:
    """The checks that can fail on the flags and the data's sizes, before anything (a folder, a noisy split,
    a bank, the demo's base) is written: the splits are there, the batch fits the training pairs. Returns
    warnings (a warmup longer than the run; the real-data defaults on a small dataset) and the run's optimizer
    steps in all, as the sampler counts them: the training pairs // --batch_size (the last, incomplete batch
    dropped) x --epochs (None when evaluating or before the demo is generated)."""
    if demo_to_generate(data):
        return [], None
    source = source_for(data)
    for s in data.eval_split_names:
        source.load_split(s, check_images=False)
    if evaluating:
        return [], None
    source.load_split("dev", check_images=False)
    n = len(source.load_split("train", check_images=False))
    world = info.world_size
    if optim.batch_size % world:
        raise ConfigError(f"--batch_size {optim.batch_size} is not divisible by the {world} processes")
    if optim.batch_size > n:
        raise ConfigError(f"--batch_size {optim.batch_size} is larger than the {n} training pairs: pass a "
                         f"--batch_size of at most {n}")
    steps = n // optim.batch_size * optim.epochs
    if optim.warmup <= steps:
        return [], steps
    if dataset_definition(data.dataset).default_flags == "real" and not {"lr", "warmup"} & explicit:
        return [f"warning: the real-data defaults (--lr {optim.lr:g}, --warmup {optim.warmup}) are the release's for "
                f"MSCOCO-size data, and this run has {steps} steps in all ({n} pairs / --batch_size "
                f"{optim.batch_size} x {optim.epochs} epochs): the warmup becomes {relative_warmup(steps)} steps (10% "
                f"of the run); pass a larger --lr (docs/own_data.md)"], steps
    if "warmup" not in explicit:
        return [], steps  # the default warmup becomes relative (setup_run), said in the log
    return [f"warning: --warmup {optim.warmup} is longer than the whole run ({steps} steps: {n} pairs / --batch_size "
            f"{optim.batch_size} x {optim.epochs} epochs): the learning rate never reaches --lr {optim.lr:g}"], steps


#: A run shorter than its default warmup warms up over this share of its steps instead.
SHORT_RUN_WARMUP = 0.1


def relative_warmup(steps: int) -> int:
    return max(1, int(SHORT_RUN_WARMUP * steps))


def data_checks(data: DataConfig, model: ModelConfig, evaluating: bool) -> List[str]:
    """The checks of the data's content before anything is written: the demo's base is asked for with one of
    the demo's models; every image of the evaluation splits (dev, test) decodes (or, with
    --skip_unreadable_images, how many are left out); how many images of dev and test are training images too
    (for sources whose splits a user made). Returns warnings, one line each."""
    if demo_to_generate(data):
        return []
    if (model.pretrained == "demo-base" and not dataset_definition(data.dataset).ships_base
            and open_clip_name(model.vision_model) not in DEMO_MODELS):
        raise ConfigError(f"--pretrained demo-base is the base of the demo's models ({', '.join(DEMO_MODELS)}); this "
                          f"run has --vision_model {model.vision_model}: pass --vision_model npc-tiny (the demo's), or "
                          f"other weights")
    source = source_for(data)
    names = list(data.eval_split_names) + ([] if evaluating else ["dev"])
    notes, splits = [], {}
    for name in dict.fromkeys(names):
        split = splits[name] = source.load_split(name, check_images=False)
        kept, dropped = D.readable_split(split, skip=data.skip_unreadable_images)
        if dropped:
            i = dropped[0]
            notes.append(f"warning: the {name} split: left out {len(dropped)} unreadable image(s) and their "
                         f"{len(split) - len(kept)} caption(s) (--skip_unreadable_images), e.g. "
                         f"{split.image_paths[i]} ({split.describe_image(i)}): {D.decode_error(split.image_paths[i])}")
    if evaluating or not source.may_share_images:
        return notes  # the published datasets' splits are disjoint
    train = source.load_split("train", check_images=False)
    for name, split in {"train": train, **splits}.items():  # a split a user made may list an image twice
        twice = D.duplicate_images(split)
        if twice:
            i, j = twice[0]
            notes.append(f"warning: {len(twice)} image(s) of {source.where(name)} {split.source_file} are another of "
                         f"its images again (the same file or the same bytes under another name), e.g. "
                         f"{split.image_paths[i]} ({split.describe_image(i)}) is {split.image_paths[j]}: each is an "
                         f"image of its own with its own captions (list the captions under one name to pool them)")
    for name, split in splits.items():
        shared = D.shared_images(train, split)
        if shared:
            key = split.key_label(int(np.searchsorted(split.caption_image, shared[0])))
            notes.append(f"warning: {len(shared)} of the {split.num_images} images of {source.where(name)} "
                         f"{split.source_file} are also training images (same file or same bytes), e.g. {key}: its "
                         f"scores measure memory of the training pairs, not retrieval of new ones")
    return notes
