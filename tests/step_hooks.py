"""The child processes' step hooks, kept under this name for the scripts that import it from here; they
are defined in helpers.py."""
from helpers import CHILD_PYTHONPATH, before_step, kill_self  # noqa: F401
