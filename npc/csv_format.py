"""The CSV reading rule's old home: its names live in :mod:`npc.sources.csv_files` (``DataError`` in
:mod:`npc.errors`); kept, light to import, so that earlier imports work."""
from npc.errors import DataError  # noqa: F401

_NAMES = ("SEPARATOR_NAMES", "check_encoding", "decode", "encoding_arg", "parse_separator", "read_rows",
          "separator_arg", "separator_name", "utf16_encoding")


def __getattr__(name: str):
    if name in _NAMES:
        from npc.sources import csv_files

        return getattr(csv_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
