"""The embedded demo: generated data plus a "pretrained" base model standing in for web-trained CLIP.

The base model is trained with plain CLIP contrastive learning on the demo's ``pretrain`` split
only (disjoint images, a different caption style), never on train/dev/test, so that like zero-shot
CLIP on MSCOCO it is useful but clearly improvable by fine-tuning. It is built once and cached in
``pre-trained_models/``; its file name records the generator version and the architecture, so a
changed generator or model builds a new one instead of reusing a stale file.
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import partial
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from npc import data
from npc import loaders
from npc.datasets import DATASETS
from npc.estimators import NoWeights
from npc.paths import REPO_ROOT
from npc.io import atomic_torch_save, read_json
from npc.locks import file_lock
from npc.model import create_model, open_clip_name
from npc.steps import train_step
from npc.synthetic import DEMO_VERSION, MARKER_NAME, ensure_demo_dataset
from npc.train_utils import lr_at, make_optimizer, seed_everything, set_lr, to_device

# Pretraining recipe of the base (fixed: the base is part of the benchmark's definition).
DEMO_ROOT = DATASETS["demo"].default_root
BASE_RECIPE = dict(epochs=6, batch_size=128, lr=5e-4, warmup=100, weight_decay=0.1, seed=0)


SIZE_KEYS = ("seed", "n_pretrain", "n_train", "n_dev", "n_test", "image_size", "num_anns")


def ensure_demo_data(root, log=print, progress: bool = True) -> dict:
    """Generate the default demo dataset at ``root`` unless one (of any size) of this version is there.

    A dataset generated with other sizes (tests, the benchmark) is kept as it is: its own
    parameters are re-checked for completeness instead of the defaults.
    """
    root = Path(root)
    info_path = root / "demo_info.json"
    if not info_path.is_file():
        if (root / "annotations").exists() and not (root / MARKER_NAME).exists():
            raise data.DataError(
                f"--dataset_root {root} holds a real dataset, but --dataset is 'demo' (the default). "
                f"Pass --dataset coco, f30k or cc; the demo is never generated over existing data.")
        if not _demo_target(root):
            raise data.DataError(
                f"--dataset_root {root}: no demo dataset there (no demo_info.json). The demo is generated only "
                f"into {DEMO_ROOT} or into an existing empty folder (create it first to generate "
                f"one there); check the path, or pass --dataset coco, f30k or cc for a real dataset.")
    # Two processes never generate into the same folder at once: the second waits, then reuses.
    with file_lock(root.parent / f".{root.name}.lock", f"the demo dataset {root}", wait=True, log=log):
        sizes = {}
        info = read_json(info_path) or {}
        if info.get("version") == DEMO_VERSION:
            sizes = {k: info[k] for k in SIZE_KEYS if k in info}
        return ensure_demo_dataset(root, progress=progress, **sizes)


def _demo_target(root: Path) -> bool:
    """Where a missing demo may be generated: its default folder, or a folder the user made empty for it."""
    if root.resolve() == (REPO_ROOT / DEMO_ROOT).resolve():  # never a dataset/demo of the current folder
        return True
    return root.is_dir() and not any(root.iterdir())


def demo_base_path(pretrained_dir: Path, vision_model: str, root) -> Path:
    """Cache file of the base: one per architecture, generator version and generated data (seed, sizes)."""
    info = json.loads((Path(root) / "demo_info.json").read_text(encoding="utf-8"))
    key = json.dumps({k: info.get(k) for k in SIZE_KEYS}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return Path(pretrained_dir) / f"demo-base_{open_clip_name(vision_model)}_data-v{DEMO_VERSION}-{digest}.pt"


def ensure_demo_base(root, vision_model: str, pretrained_dir: Path, *, device="cpu", log=print,
                     progress: bool = True, recipe: dict = None) -> Path:
    path = demo_base_path(pretrained_dir, vision_model, root)
    if not path.is_file():
        with file_lock(path.with_name(f".{path.name}.lock"), f"the demo base model {path}", wait=True, log=log):
            if not path.is_file():  # another process may have built it while we waited
                _pretrain_base(root, vision_model, path, device=device, log=log, progress=progress, recipe=recipe)
                return path
    log(f"demo base model: reusing {path}")
    return path


def find_demo_base(dataset: str, root, pretrained_dir: Path, vision_model: str) -> Optional[Path]:
    """The demo's base model that ``--pretrained demo-base`` names, if it is built, else None.

    For the demo dataset: the base of its data at ``root``. For any other dataset (the demo's model on your
    own data): the base of the repository's demo (dataset/demo) if built, else a base of this architecture
    and generator version in ``pretrained_dir`` (the newest if several)."""
    pretrained_dir = Path(pretrained_dir)
    if dataset == "demo":
        if not (Path(root) / "demo_info.json").is_file():
            return None
        path = demo_base_path(pretrained_dir, vision_model, root)
        return path if path.is_file() else None
    repo_demo = REPO_ROOT / DEMO_ROOT
    if (repo_demo / "demo_info.json").is_file():
        path = demo_base_path(pretrained_dir, vision_model, repo_demo)
        if path.is_file():
            return path
    found = sorted(pretrained_dir.glob(f"demo-base_{open_clip_name(vision_model)}_data-v{DEMO_VERSION}-*.pt"),
                   key=lambda p: (p.stat().st_mtime_ns, p.name))
    return found[-1] if found else None


def ensure_demo_base_for(dataset: str, vision_model: str, pretrained_dir: Path, *, device="cpu", log=print,
                         progress: bool = True) -> Path:
    """``--pretrained demo-base`` on a dataset other than the demo: the base :func:`find_demo_base` finds, or,
    if none is built, the repository demo's (its data generated first when missing)."""
    found = find_demo_base(dataset, None, pretrained_dir, vision_model)
    if found is not None:
        log(f"demo base model: using {found} (pretrained on the demo's generated pretrain split)")
        return found
    root = REPO_ROOT / DEMO_ROOT
    log(f"--pretrained demo-base: building the demo's base model once, from the demo's generated data ({root}; "
        f"generated first if missing), into {pretrained_dir}")
    ensure_demo_data(root, log=log, progress=progress)
    return ensure_demo_base(root, vision_model, Path(pretrained_dir), device=device, log=log, progress=progress)


def _pretrain_base(root, vision_model: str, path: Path, *, device, log, progress: bool, recipe: dict) -> None:
    recipe = {**BASE_RECIPE, **(recipe or {})}
    log(f"demo base model: pretraining {vision_model} on the demo's pretrain split "
        f"({recipe['epochs']} epochs), writing {path}")
    t0 = time.perf_counter()
    seed_everything(recipe["seed"])
    model, preprocess, tokenizer = create_model(vision_model, "none", device=device)
    split = data.load_split(root, "demo", "pretrain")
    sampler = loaders.EpochBatchSampler(len(split), recipe["batch_size"], recipe["seed"])
    loader = loaders.train_loader(loaders.PairBatches(split, preprocess, tokenizer), sampler, num_workers=2)
    opt = make_optimizer(model, recipe["lr"], 0.9, 0.98, 1e-6, recipe["weight_decay"])
    lr_fn = partial(lr_at, base_lr=recipe["lr"], warmup=recipe["warmup"], total_steps=len(sampler) * recipe["epochs"],
                    epochs=recipe["epochs"])
    step = 0
    total = len(sampler) * recipe["epochs"]
    every = max(1, total // 20)  # a progress line every 5% (log files get no progress bar)
    model.train()
    for epoch in range(recipe["epochs"]):
        sampler.set_epoch(epoch)
        bar = tqdm(loader, desc=f"base pretraining {epoch + 1}/{recipe['epochs']}", disable=not progress, leave=False)
        for batch in bar:
            set_lr([opt], lr_fn(step, epoch))
            out = train_step(model, opt, to_device(batch, device), NoWeights(), "clip", grad_clip=10.0)
            bar.set_postfix(loss=f"{float(out['loss']):.3f}")
            step += 1
            if step % every == 0 or step == total:
                log(f"demo base model: step {step}/{total} ({100 * step // total}%), loss {float(out['loss']):.3f}, "
                    f"{time.perf_counter() - t0:.0f}s")
    atomic_torch_save({"format": "npc-demo-base/1", "name": "demo-base", "vision_model": vision_model,
                       "state_dict": model.state_dict(), "recipe": recipe, "data_version": DEMO_VERSION}, path)
    log(f"demo base model: done in {time.perf_counter() - t0:.0f}s")
