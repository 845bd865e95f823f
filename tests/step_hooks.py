"""What the fault tests' child processes do at a chosen optimizer step (imported by their scripts, which
run with the tests folder on PYTHONPATH): a hook on ``npc.steps.train_step``."""
import os
import signal
from pathlib import Path

from npc import steps

TESTS = Path(__file__).resolve().parent
CHILD_PYTHONPATH = os.pathsep.join([str(TESTS.parent), str(TESTS)])  # the repository, and this module


def before_step(k: int, action) -> None:
    """Call ``action()`` just before this process's ``k``-th optimizer step (counting from 1)."""
    real_step, done = steps.train_step, [0]

    def step(*a, **kw):
        done[0] += 1
        if done[0] == k:
            action()
        return real_step(*a, **kw)

    steps.train_step = step


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
