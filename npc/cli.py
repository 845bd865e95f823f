"""What the scripts run ``main`` in: problems with the user's files, flags or disk end in one clear
line, on stderr and in the run's log.txt. Imports nothing heavy, so ``--help`` answers at once."""
from __future__ import annotations

import logging
import os
import sys

# data.DataError, memory_bank.BankFileError, noise.NoisySplitError and params.ConfigError are
# ValueErrors; locks.LockedError and engine.NonFiniteLoss RuntimeErrors; FileNotFoundError,
# PermissionError and a full disk OSErrors.
USER_ERRORS = (ValueError, RuntimeError, OSError)


def one_line(e: BaseException) -> str:
    """The message of ``e``; an OSError as ``path: cause``; a DataLoader worker's error without its traceback."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = str(e)
    if "Original Traceback" in text:  # re-raised by the DataLoader from a worker: the last line is the message
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


def cli(main, argv) -> int:
    """Run a script's ``main(argv)``; returns the exit code (0, 1 for a clear error, 130 for Ctrl-C)."""
    try:
        main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if os.environ.get("NPC_DEBUG"):
            raise
        message = f"error: {one_line(e)}"
        print(message, file=sys.stderr)
        for handler in logging.getLogger("npc").handlers:  # the run's log.txt, when it has one
            if isinstance(handler, logging.FileHandler):
                handler.emit(logging.LogRecord("npc", logging.ERROR, __file__, 0, message, None, None))
        return 1
    return 0
