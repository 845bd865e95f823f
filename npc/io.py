"""Atomic file writes: every file this project writes goes through here.

A crash (or Ctrl-C) in the middle of a write must never leave a truncated file that a later run
would trust, so content is written to a temporary file in the same folder and then renamed over
the target (``os.replace`` is atomic on POSIX and Windows when source and target share a volume).
"""
from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Dict, Iterator, Tuple, Union

from npc.errors import DiskFullError, WriteError

PathLike = Union[str, os.PathLike]
_UMASK = os.umask(0)
os.umask(_UMASK)


# A folder where nothing can be written: a read-only mount, no permission.
NOT_WRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def not_writable(e: OSError, folder: PathLike, what: str) -> WriteError:
    """One line for a folder where ``what`` cannot be written (``e``: the error creating or writing it): the folder,
    the cause and the remedy."""
    ro = "a read-only file system" if e.errno == errno.EROFS else (e.strerror or str(e)).lower()
    return WriteError(f"cannot write {what} in the folder {folder} ({ro}): make the folder writable, or work on a "
                      f"copy in a writable folder (a run's own files: choose another --logs_dir)")


def make_dir(folder: PathLike, what: str) -> Path:
    """``folder`` created with its parents (where ``what`` goes); a read-only or forbidden folder is one
    :class:`~npc.errors.WriteError` line naming it and the remedy."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in NOT_WRITABLE_ERRNOS:
            raise not_writable(e, _existing_parent(folder), what) from None
        raise
    return folder


def _existing_parent(folder: Path) -> Path:
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def one_line(text: str) -> str:
    """A caption as the caption files hold it, one line: every line break (``\\n``, ``\\r\\n``, ``\\r`` and the
    other breaks ``str.splitlines`` knows) with the spaces around it becomes one space, and the ends are
    stripped. Every data format reads its captions through this, so a caption with a line break is one caption
    in every format."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) if text else ""


def has_line_break(text: str) -> bool:
    """Whether ``text`` holds a line break (:func:`one_line` joins it)."""
    return len(text.splitlines()) > 1 or text.endswith(("\n", "\r"))


@contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success only."""
    if not any(m in mode for m in "wx"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    path = Path(path)
    try:
        make_dir(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a read-only folder, a full disk: name the file we meant to write
        if isinstance(e, WriteError):
            raise
        if e.errno in NOT_WRITABLE_ERRNOS:
            raise not_writable(e, path.parent, path.name) from None
        raise WriteError(e.errno, f"cannot write: {e.strerror}", str(path)) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, mode.replace("x", "w"), **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename in (None, tmp):
            raise WriteError(e.errno, f"cannot write: {e.strerror}", str(path)) from None
        raise


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes: the fingerprint cached files record of what they were built from."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_json(path: PathLike):
    """A JSON file written by this project, or None when it is missing or unreadable (then rebuilt)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def atomic_write_lines(path: PathLike, lines) -> None:
    """One item a line, each followed by a newline (the layout of the SCAN caption/id files)."""
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def atomic_write_json(path: PathLike, obj, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_save_npy(path: PathLike, array) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


# A write that failed for want of space: no space left, past the file-size limit (ulimit -f), past a quota.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def full_disk(e: BaseException) -> bool:
    """Whether ``e`` is a write that failed for want of space. torch's zip writer reports a failed write as a
    RuntimeError (``[enforce fail at inline_container.cc:...] . unexpected pos N vs M``, or ``... file write
    failed``), which says nothing else."""
    if isinstance(e, OSError):
        return e.errno in FULL_DISK_ERRNOS
    text = str(e)
    return isinstance(e, RuntimeError) and ("inline_container.cc" in text or "PytorchStreamWriter failed" in text) \
        and any(k in text for k in ("unexpected pos", "write failed", "failed writing"))


def atomic_torch_save(obj, path: PathLike, what: str = "file",
                      remedy: str = "free some space (or raise the file-size limit, ulimit -f) and run it again") -> None:
    """``torch.save(obj)`` to ``path`` atomically. A full disk or a file past the size limit is one
    :class:`~npc.errors.DiskFullError` naming ``what`` and ``path``, followed by ``remedy``; the file
    ``path`` held before is kept, and the temporary file is removed."""
    import torch

    try:
        with atomic_open(path, "wb") as f:
            torch.save(obj, f)
    except (RuntimeError, OSError) as e:
        if not full_disk(e):
            raise
        cause = os.strerror(e.errno) if isinstance(e, OSError) else str(e).strip().splitlines()[0]
        raise DiskFullError(f"cannot write {what} {path}: disk full or file too large ({cause}); {remedy}") from None


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    import shutil

    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=16 << 20)


_HASHES: Dict[Tuple[str, int, int], str] = {}


def cached_file_sha256(path) -> str:
    """:func:`file_sha256`, once per process for a file of the same size and modification time."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


# ----------------------------------------------------------------------------- CSV files a spreadsheet opens

#: A cell starting with one of these is run as a formula by spreadsheets (Excel, LibreOffice, Google Sheets).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_signed_number(text: str) -> bool:
    """``-0.5``, ``+3``, ``-1e-05``: a number a spreadsheet reads as one (not a formula to escape)."""
    if text[:1] not in ("+", "-") or any(c.isspace() for c in text):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def formula_safe(value):
    """A CSV cell a spreadsheet shows as text: a string that it would run as a formula (starting with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return, after any leading quotes) gets one leading ``'``; numbers
    (``-0.5``, ``+3``) and other values are unchanged. :func:`formula_unescape` gives the original back."""
    if isinstance(value, str) and value.lstrip("'")[:1] in FORMULA_STARTS and not _is_signed_number(value):
        return "'" + value
    return value


def formula_unescape(text: str) -> str:
    """The cell's original text: the inverse of :func:`formula_safe` (for reading a CSV this project wrote)."""
    if text.startswith("'") and text.lstrip("'")[:1] in FORMULA_STARTS:
        return text[1:]
    return text


def atomic_write_csv(path: PathLike, header, rows) -> None:
    """A comma-separated file (UTF-8, quoted where needed) whose text cells a spreadsheet will not run as
    formulas (:func:`formula_safe`), written atomically: ``header`` then each of ``rows``."""
    import csv

    with atomic_open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow([formula_safe(c) for c in header])
        for row in rows:
            w.writerow([formula_safe(c) for c in row])
