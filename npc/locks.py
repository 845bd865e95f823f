"""Advisory locks on run folders and caches, so that two processes never write the same files.

A lock is a POSIX ``flock`` on a small file that also records its holder (pid, host, start time)
for the message the second process prints. The kernel releases the lock when the holder exits in
any way (Ctrl-C, crash, SIGKILL), so a lock file left behind by a dead process is stale by
construction and the next process simply takes it. A flock belongs to the open file, which a forked
child (a DataLoader worker) shares: children close their copy as they start, so that a worker
outliving a killed run does not hold its lock. Run folders refuse a second writer; caches
(demo data, the demo's base model, noisy splits, memory banks) make it wait, then re-check whether
the first one already built what it needs.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, Union

from npc.errors import UserError

PathLike = Union[str, os.PathLike]


class LockedError(UserError, RuntimeError):
    """Another live process holds the lock; the message names it."""


# The descriptors of the locks this process holds. A forked child (a DataLoader worker) would share each
# one's open file description, and with it the flock: a worker still alive after its parent was killed
# would keep the run folder locked. The child closes its copies at once (the parent's lock is not affected).
_HELD: Dict[int, object] = {}  # descriptor -> the token of the file_lock that holds it


def _drop_inherited_locks() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _lock_file_error(e: OSError, path: Path, what: str) -> OSError:
    """A lock file that cannot be written: a read-only folder or a full disk is one line naming it and the
    remedy; any other error keeps its cause, with the file's name."""
    from npc.errors import DiskFullError
    from npc.io import FULL_DISK_ERRNOS, NOT_WRITABLE_ERRNOS, not_writable

    if isinstance(e, UserError):
        return e
    if e.errno in NOT_WRITABLE_ERRNOS:
        return not_writable(e, path.parent, f"the lock file {path.name} of {what}")
    if e.errno in FULL_DISK_ERRNOS:
        return DiskFullError(f"cannot write the lock file {path} of {what}: disk full or file too large "
                             f"({os.strerror(e.errno)}); free some space (or raise the file-size limit, ulimit -f) "
                             f"and run it again")
    return e if e.filename is not None else OSError(e.errno, f"cannot write the lock file of {what}: {e.strerror}",
                                                    str(path))


@contextmanager
def file_lock(path: PathLike, what: str, *, wait: bool, hint: str = "",
              log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    ``what`` names the locked thing in messages. If another process holds it: wait for it when
    ``wait``, else raise :class:`LockedError` naming the holder, followed by ``hint``.
    """
    path = Path(path)
    try:
        from npc.io import make_dir

        make_dir(path.parent, f"the lock file {path.name} of {what}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise _lock_file_error(e, path, what) from None
    token, held = object(), False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise LockedError(f"{what} is in use by {holder}, lock {path}" + (f"; {hint}" if hint else "")) from None
            log(f"{what} is in use by {holder}: waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        except OSError as e:
            raise _lock_file_error(e, path, what) from None
        _HELD[fd], held = token, True
        yield
    finally:
        if not held or _HELD.get(fd) is token:  # else a forked child, which closed its copy as it started
            _HELD.pop(fd, None)
            os.close(fd)  # closing the descriptor releases the lock
