"""The repository's own folders, wherever a command runs from: the default dataset roots and pre-trained_models/."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAINED_DIR = "pre-trained_models"   # the demo base's cache, under the repository
