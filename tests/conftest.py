"""Shared fixtures: a tiny generated demo dataset and a tiny base model, built once per session.

Everything is CPU-only and offline: HF_HUB_OFFLINE is set before anything imports open_clip.
"""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(2)

TINY_SIZES = dict(n_pretrain=120, n_train=80, n_dev=16, n_test=20)
MODEL = "npc-micro"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    from npc.synthetic import generate_demo_dataset

    root = tmp_path_factory.mktemp("data") / "demo"
    generate_demo_dataset(root, seed=0, progress=False, **TINY_SIZES)
    return root


@pytest.fixture(scope="session")
def base_dir(demo_root, tmp_path_factory) -> Path:
    """pre-trained_models/ for tests, holding a (very briefly) pretrained demo base."""
    from npc.demo import ensure_demo_base

    d = tmp_path_factory.mktemp("pretrained")
    ensure_demo_base(demo_root, MODEL, d, progress=False, log=lambda *_: None,
                     recipe=dict(epochs=1, batch_size=32, warmup=2))
    return d


@pytest.fixture
def fresh_root(demo_root, tmp_path) -> Path:
    """A private copy of the tiny dataset, for tests that write noise files or banks into it."""
    import shutil

    dst = tmp_path / "demo"
    shutil.copytree(demo_root, dst)
    return dst


def run_args(root, base_dir, logs, *extra):
    """Common flags for running the real entry points on the tiny dataset."""
    return ["--dataset", "demo", "--dataset_root", str(root), "--pretrained_dir", str(base_dir),
            "--vision_model", MODEL, "--logs_dir", str(logs), "--batch_size", "16", "--eval_batch_size", "64",
            "--num_workers", "0", "--no_progress", "--warmup", "2", *extra]
