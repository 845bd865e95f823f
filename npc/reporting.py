"""What the bench scripts share: where a result was measured (portable, no absolute paths), its
markdown table and its figure.

``environment(script, argv, device)`` gives the device, library versions, the git commit and the
command as a user types it from the repository root (``python bench/<script>.py ...``).
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def repo_relative(path) -> str:
    """``path`` relative to the repository when inside it (records must not hold this machine's paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


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


def device_name(device, threads: Optional[int] = None) -> str:
    """The device in words; on CPU with the thread count (``threads``: another process's, else this one's)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({threads or torch.get_num_threads()} threads, {platform.machine()})"


def environment(script: str, argv: Optional[Sequence[str]], device) -> dict:
    import open_clip
    import torch

    return {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "git_commit": git_commit(), "command": command(script, argv)}


def write_table(lines, out_md: Path) -> str:
    """The markdown table of ``lines``, also written to ``out_md`` (atomically)."""
    from npc.io import atomic_write_text

    table = "\n".join(lines) + "\n"
    atomic_write_text(out_md, table)
    return table


def pyplot():
    """matplotlib's pyplot (headless), or None with a note when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install -r requirements-bench.txt)")
        return None
    return plt


def save_figure(fig, out_png: Path) -> None:
    """Lay out and write ``fig`` atomically."""
    fig.tight_layout()
    tmp = out_png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, out_png)
