"""What every bench result records about where it was measured: portable, no absolute paths.

``environment(argv)`` gives the device, library versions, the git commit and the command as a user
types it from the repository root (``python bench/<script>.py ...``).
"""
from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        # Recorded results are not code: a benchmark writing its JSON does not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/results"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def command(script: str, argv: Optional[Sequence[str]]) -> str:
    """The command relative to the repository root: ``python bench/<script> <args>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", f"bench/{Path(script).name}", *args])


def device_name(device) -> str:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"


def environment(script: str, argv: Optional[Sequence[str]], device) -> dict:
    import open_clip
    import torch

    return {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "git_commit": git_commit(), "command": command(script, argv)}
