"""The project's error type: a problem with the user's flags, files, data or disk, reported in one line.

The scripts (:mod:`npc.cli`) print a :class:`UserError` as one line; any other exception, torch's
shape and device errors included, keeps its traceback. Each subclass also derives from the built-in
type callers have always caught (``ValueError`` or ``RuntimeError``).
"""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message names the flag, file or line."""


class ConfigError(UserError, ValueError):
    """Flags that contradict each other or the run they continue; the message names them."""


class ExistingFileError(UserError, FileExistsError):
    """A file the command would replace but did not write itself; the message names it and the way out."""


class DiskFullError(UserError, OSError):
    """A write that ran out of disk space or past the file-size limit; the message names the file."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the command needs is not there; the message names it and what makes it."""


class BadFileError(UserError, ValueError):
    """A file that is there but is not what the command needs (not a checkpoint, a malformed record)."""


class WriteError(UserError, OSError):
    """A file that cannot be written (no permission, a read-only folder); the message names it."""


class DataError(UserError, ValueError):
    """A problem with the data's files on disk; the message names the file (and the line or entry)."""
