"""How a CSV/TSV file of ``--dataset csv`` is read: separator and encoding names, and the one quoting rule.

Fields are split as open_clip's reader (pandas ``read_csv``) splits them: a field that starts with a
double quote is quoted and ends at the next lone double quote, ``""`` inside it is one quote, and the
separator inside it is text; a quote anywhere else is an ordinary character. On top of that, three
things a pandas reader lets through silently are errors here, each naming the file and the line:

* a quoted field must close on the line where it opens (an opening quote without its closing quote
  would swallow the lines after it, up to the next quote, as one caption);
* every row has as many fields as the header (a separator inside an unquoted caption, such as a
  tab in a tab-separated file, would cut the caption short);
* the bytes must be text in ``--csv_encoding`` (UTF-8 by default; a byte-order mark is skipped).

Imports nothing heavy: the flags' types live here, and ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import io
from pathlib import Path
from typing import List, Tuple

from npc.errors import UserError


class DataError(UserError, ValueError):
    """A problem with the files on disk; the message names the file."""


# What --csv_separator accepts besides a single character: what a shell user types for a tab, and names.
SEPARATOR_NAMES = {"\\t": "\t", "tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


def parse_separator(text: str) -> str:
    """The separator character a ``--csv_separator`` value names: one character (not a quote or a line
    break), ``\\t``, or one of the names tab, comma, semicolon, pipe, space (any case)."""
    sep = text if len(text) == 1 else SEPARATOR_NAMES.get(text.lower(), text)
    if len(sep) != 1 or sep in "\"\r\n":
        raise ValueError(f"expected one character or one of {', '.join(SEPARATOR_NAMES)} (e.g. --csv_separator tab, "
                         f"--csv_separator comma), got {text!r}")
    return sep


def separator_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space", "|": "pipe"}.get(sep, repr(sep))


def check_encoding(text: str) -> str:
    """A ``--csv_encoding`` value: a codec Python knows (utf-8, cp1252, latin-1, utf-16, ...)."""
    try:
        codecs.lookup(text)
    except LookupError:
        raise ValueError(f"unknown encoding {text!r} (e.g. utf-8, cp1252, latin-1, utf-16)") from None
    return text


def separator_arg(text: str) -> str:
    """argparse type of ``--csv_separator`` (:func:`parse_separator`)."""
    try:
        return parse_separator(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def encoding_arg(text: str) -> str:
    """argparse type of ``--csv_encoding`` (:func:`check_encoding`)."""
    try:
        return check_encoding(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def utf16_encoding(raw: bytes) -> str:
    """The UTF-16 (or UTF-32) encoding ``raw`` is in, by its byte-order mark or the NUL bytes of its first
    characters (text in UTF-8 or a one-byte encoding has none), or ``""``."""
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            return name
    head = raw[:4096]
    if b"\x00" not in head:
        return ""
    return "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"


def decode(raw: bytes, path: Path, encoding: str = "utf-8") -> str:
    """The file's text; bytes that are not ``encoding`` are an error naming the line and the flag (a UTF-16
    file read as another encoding: naming UTF-16)."""
    wide = utf16_encoding(raw)
    if wide and not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        raise DataError(f"{path}, line 1: the file is {wide.upper()} text (" + ("a byte-order mark" if wide in (
            "utf-16", "utf-32") else "NUL bytes between its characters") + f"), not {encoding}: pass --csv_encoding "
            f"{wide}, or save it as UTF-8")
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding  # skips a byte-order mark
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}, line {line}: not valid {encoding} text (byte 0x{raw[e.start]:02x} at byte {column} "
                        f"of the line): pass the file's encoding with --csv_encoding, e.g. --csv_encoding cp1252 "
                        f"for a file saved by Excel on Windows") from None


def read_rows(path, *, separator: str = "\t", encoding: str = "utf-8") -> List[Tuple[int, List[str]]]:
    """The non-blank rows ``(line, fields)`` of a CSV file (the first is the header), read by the rule of
    this module. Only the quoting and the encoding are checked here; the number of fields is the caller's
    (it knows which columns it needs)."""
    path = Path(path)
    text = decode(path.read_bytes(), path, encoding)
    n_lines = len(io.StringIO(text, newline="").readlines())
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, quotechar='"', doublequote=True)
    rows, last = [], 0
    try:
        for fields in reader:
            first, last = last + 1, reader.line_num
            if last > first:
                end = "the end of the file" if last >= n_lines else f"line {last}"
                raise DataError(f"{path}, line {first}: a quoted field opens on this line and does not close on it "
                                f"(read as quoted, it would run on to {end}): close the quote, or write a quote "
                                f"inside a quoted field as two (\"\"); a field may not span lines")
            if any(f.strip() for f in fields):
                rows.append((first, fields))
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: {e}") from None
    if not rows:
        raise DataError(f"{path}, line 1: the file is empty; expected a header row naming the columns")
    return rows
