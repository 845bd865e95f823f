"""Shared fixtures: a tiny generated demo dataset and a tiny base model, built once per session.

Everything is CPU-only and offline: HF_HUB_OFFLINE is set before anything imports open_clip. What the
test files share besides fixtures is in helpers.py.
"""
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from helpers import MODEL, TINY_SIZES, run_args  # noqa: F401  (run_args: some test files import it from here)

torch.set_num_threads(2)


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
