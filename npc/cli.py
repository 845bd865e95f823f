"""What the scripts run ``main`` in: problems with the user's files, flags or disk end in one clear
line, on stderr and in the run's log.txt; so do Ctrl-C and SIGTERM, which stop a run the same way (its
files closed, its locks released). Imports nothing heavy, so ``--help`` answers at once."""
from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from functools import partial

# The project's own errors only (npc.errors.UserError: flags, data, files missing or malformed, a file
# that cannot be written, the bank, noise, locks, a non-finite loss, unavailable weights): each names
# what the user can fix. Any other exception (a bug; torch's shape and device errors) keeps its traceback.
from npc.errors import UserError

USER_ERRORS = (UserError,)


def one_line(e: BaseException) -> str:
    """The message of ``e``; an OSError as ``path: cause``; a DataLoader worker's error without its traceback."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = str(e)
    if "Original Traceback" in text:  # re-raised by the DataLoader from a worker: the last line is the message
        text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return text


def lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is a torchrun job's collective failing because another process of the job is gone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist = sys.modules.get("torch.distributed")
    if dist is not None and isinstance(e, getattr(dist, "DistNetworkError", ())):
        return True
    return any(k in str(e) for k in ("Connection closed by peer", "Connection reset by peer"))


def peer_message(e: BaseException) -> str:
    """One line for a rank whose collective failed: which process it is, what failed, what to do."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip().splitlines()[0]).split(". ")[0].rstrip(".")
    return (f"rank {os.environ.get('RANK', '?')} of this torchrun job lost contact with another process of the job "
            f"({text}); torchrun's summary names the process that failed first. The run's last checkpoint is "
            f"kept: continue it with --resume latest")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a job scheduler): the script stops as on Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


# Ctrl-C while a process forks (a data loader starting its workers): Python runs the fork's handlers (logging's
# among them) in between, and a KeyboardInterrupt raised inside one of them is printed as "Exception ignored"
# and lost, so the run went on. SIGINT and SIGTERM are held back while the process forks (handlers registered
# later run first before a fork and last after it) and let through by the C library's call, which runs no
# Python handler: Python's handler then runs in the code that called fork, and the script stops as it should.
def _hold_signals_while_forking() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        mask, before = ctypes.create_string_buffer(1024), ctypes.create_string_buffer(1024)  # sigset_t: 128 bytes
        if libc.sigemptyset(mask) or libc.sigaddset(mask, signal.SIGINT) or libc.sigaddset(mask, signal.SIGTERM):
            return
        hold = partial(libc.pthread_sigmask, signal.SIG_BLOCK, mask, before)
        let_through = partial(libc.pthread_sigmask, signal.SIG_SETMASK, before, None)  # the mask as it was
    except (OSError, AttributeError):  # no C library to call (Windows has no fork either)
        return
    os.register_at_fork(before=hold, after_in_parent=let_through, after_in_child=let_through)


_hold_signals_while_forking()

STOPPED = {False: ("interrupted (Ctrl-C)", 130), True: ("terminated (SIGTERM)", 143)}
RESUME_NOTE = "; the files written so far are whole: a training run continues with --resume latest"


def report(message: str) -> None:
    """``message`` on stderr and in the run's log.txt, when it has one."""
    print(message, file=sys.stderr)
    for handler in logging.getLogger("npc").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("npc", logging.ERROR, __file__, 0, message, None, None))


def cli(main, argv) -> int:
    """Run a script's ``main(argv)``; returns the exit code (0, 1 for a clear error, 130 for Ctrl-C, 143 for
    SIGTERM)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL \
            and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # torchrun stops its processes with SIGTERM: left to it
        signal.signal(signal.SIGTERM, _terminate)
    try:
        main(argv)
    except KeyboardInterrupt as e:
        message, code = STOPPED[isinstance(e, Terminated)]
        report(message + RESUME_NOTE)
        return code
    except Exception as e:
        if os.environ.get("NPC_DEBUG") or not (isinstance(e, USER_ERRORS) or lost_peer(e)):
            raise
        report(f"error: {peer_message(e) if lost_peer(e) else one_line(e)}")
        return 1
    return 0
