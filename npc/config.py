"""The run configuration: the resolved flags of a run, read-only once made.

:func:`npc.params.parse_args` makes one from the command line (the dataset's defaults and the
method resolved); setting a run up (:func:`npc.run_setup.setup_run`) derives the final one (device,
precision, the run's name, the flags of a resumed run) with :meth:`RunConfig.replace`. Nothing
assigns to a configuration: what changes while a run goes (its folder, whether it started, its
locks) lives on the run (:class:`npc.run_setup.Run`), not on its flags.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict


class RunConfig(argparse.Namespace):
    """A read-only ``argparse.Namespace``: ``cfg.lr``, ``vars(cfg)``; ``cfg.replace(lr=...)`` makes another.

    Names starting with ``_`` are bookkeeping of the setup (``_explicit``: the flags given on the command
    line), kept out of params.txt and checkpoints.
    """

    def __init__(self, **values: Any):
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any):
        raise AttributeError(f"the run configuration is read-only (setting {name!r}): derive a new one with "
                             f"replace() during setup, or keep run state on the run")

    def __delattr__(self, name: str):
        raise AttributeError(f"the run configuration is read-only (deleting {name!r})")

    def replace(self, **changes: Any) -> "RunConfig":
        unknown = sorted(k for k in changes if not hasattr(self, k))
        if unknown:
            raise AttributeError(f"the run configuration has no {', '.join(unknown)}")
        return RunConfig(**{**vars(self), **changes})

    def flags(self) -> Dict[str, Any]:
        """The run's flags: everything but the setup's bookkeeping (what params.txt and checkpoints record)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
