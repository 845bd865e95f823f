"""Your own data in CSV/TSV files (open_clip's convention): how a file is read, its splits, its source.

One row per (image, caption) pair; rows of the same image form one image with several captions (any
number). Fields are split as open_clip's reader (pandas ``read_csv``) splits them: a field that starts with
a double quote is quoted and ends at the next lone double quote, ``""`` inside it is one quote, and the
separator inside it is text; a quote anywhere else is an ordinary character. On top of that, three things
a pandas reader lets through silently are errors here, each naming the file and the line: a quoted field
must close on the line where it opens; every row has as many fields as the header; the bytes must be text
in ``--csv_encoding`` (UTF-8 by default); a file that starts with a byte-order mark (UTF-8, UTF-16, UTF-32)
is read in the encoding it names, whatever ``--csv_encoding`` says (so one file saved as UTF-16 reads
without a flag that would misread the others).

Files derived from a split go beside its CSV: ``<stem>.train_caps.txt`` (the captions in split order,
which the noise protocol shuffles), ``<stem>.<r>_noise_train_caps.txt`` (read with other options than the
defaults: ``<stem>.<caption column>-<hash>.train_caps.txt`` and so on, :func:`derived_prefix`),
``<stem>.memory_bank/<model>_<weights>_<key>/``.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import hashlib
import io
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import List, Tuple

from npc import images
from npc.data import CSV_SPLIT_FLAGS, Split
from npc.errors import DataError, MissingFileError
from npc.io import one_line
from npc.noise import TRAIN_CAPS
from npc.sources import register
from npc.sources.base import Dataset, SplitFiles, group_pairs

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
    named = codecs.lookup(encoding).name
    if wide in ("utf-16", "utf-32") or raw.startswith(codecs.BOM_UTF8):
        # a byte-order mark says the file's own encoding, whatever --csv_encoding says (it applies to every
        # split's file: one file saved as UTF-16 must not make the others misread)
        encoding = wide or "utf-8-sig"
    elif wide and not named.startswith(("utf-16", "utf-32")):
        raise DataError(f"{path}, line 1: the file is {wide.upper()} text without a byte-order mark (NUL bytes "
                        f"between its characters), not {encoding}: save this file as UTF-8 (or as UTF-16 with its "
                        f"byte-order mark); --csv_encoding {wide} would read every split's file as {wide.upper()}")
    elif not wide and named.startswith(("utf-16", "utf-32")):
        raise DataError(f"{path}, line 1: --csv_encoding {encoding}, but this file is not {encoding.upper()} text "
                        f"(no byte-order mark, no NUL bytes between its characters): --csv_encoding applies to every "
                        f"split's file; a UTF-16 file with its byte-order mark is read as UTF-16 without it")
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


# ----------------------------------------------------------------------------- a split

def read_csv_split(path, split: str, *, img_key: str = "filepath", caption_key: str = "title",
                   separator: str = "\t", encoding: str = "utf-8", check_images: bool = True) -> Split:
    """One split from a CSV/TSV file. Image paths are relative to the CSV's folder, or absolute.

    Fields are read by the rule of this module. Captions are grouped by image in the order images first
    appear (the row order within an image is kept). Every problem is one :class:`DataError` naming the
    file and line: a quote left open, a row with another number of fields than the header, bytes that
    are not ``encoding``, a missing column (with the columns found and the separator), an empty caption, a
    missing or unreadable image (``check_images``), a split of fewer than 2 images.
    """
    path = Path(path)
    flag = CSV_SPLIT_FLAGS.get(split, "--" + split)
    if not path.is_file():
        raise MissingFileError(f"{flag}: CSV file not found: {path}")
    rows = read_rows(path, separator=separator, encoding=encoding)
    header_line, header = rows[0]
    for key, kflag in ((img_key, "--csv_img_key"), (caption_key, "--csv_caption_key")):
        if key not in header:
            raise DataError(f"{path}, line {header_line}: no column {key!r} ({kflag}); the header has the column(s) "
                            f"{', '.join(repr(h) for h in header)} when split by the separator "
                            f"{separator_name(separator)} (--csv_separator)")
    ii, ci = header.index(img_key), header.index(caption_key)
    pairs = []
    for line, row in rows[1:]:
        if len(row) != len(header):
            hint = (": a field that holds the separator must be in double quotes" if len(row) > len(header) else "")
            raise DataError(f"{path}, line {line}: {len(row)} field(s) where the header has {len(header)} "
                            f"(separator {separator_name(separator)}, --csv_separator){hint}")
        name, caption = row[ii].strip(), one_line(row[ci])
        if not caption.strip():
            raise DataError(f"{path}, line {line}: empty caption (column {caption_key!r})")
        if not name:
            raise DataError(f"{path}, line {line}: empty image path (column {img_key!r})")
        image_path = Path(os.path.normpath(path.parent / name))  # an absolute name stays itself
        pairs.append((str(image_path), name, image_path, caption, line))
    out = group_pairs(split, pairs, caps_file=path, source_file=path, lines=True)
    if check_images:
        check_csv_images(out)
    return out


def check_csv_images(split: Split, skip_unreadable: bool = False) -> None:
    """Every image of a CSV split is a file, and one PIL knows the format of; else an error naming the file and
    line. ``skip_unreadable`` (--skip_unreadable_images): a file PIL cannot open is no error here, the run leaves
    out its pairs where it meets it (npc/images.py's policy)."""
    for i, image_path in enumerate(split.image_paths):
        line = int(split.source_lines[int(split.caption_image.searchsorted(i))])
        if not image_path.is_file():
            raise DataError(f"{split.source_file}, line {line}: image not found: {image_path}")
        if skip_unreadable:
            continue
        why = images.header_problem(image_path)  # reads the header only: the format is one PIL knows
        if why is not None:
            raise DataError(images.unreadable_message(image_path, why, f"{split.source_file}, line {line}"))


# ----------------------------------------------------------------------------- the source

READING_OPTIONS = ("csv_img_key", "csv_caption_key", "csv_separator", "csv_encoding")


def construct_noise_command(data) -> str:
    """``python construct_noise.py --train_data FILE`` with the reading options that differ from the defaults."""
    defaults = {f.name: f.default for f in fields(type(data))}
    cmd = f"python construct_noise.py --train_data {data.train_data}"
    for k in READING_OPTIONS:
        value = getattr(data, k)
        if value != defaults[k]:
            cmd += f" --{k} {separator_name(value) if k == 'csv_separator' else value}"
    return cmd


def derived_prefix(data) -> str:
    """The start of the names of the files derived from the training CSV (``<prefix>train_caps.txt``, the noisy
    split and its mask): ``<stem>.`` when it is read with the default options, else ``<stem>.<caption
    column>-<8 hex digits of the reading options>.``, so that one CSV read with another caption column,
    image column, separator or encoding has files of its own."""
    stem = Path(data.train_data).stem
    defaults = {f.name: f.default for f in fields(type(data))}
    options = {k: getattr(data, k) for k in READING_OPTIONS}
    if all(options[k] == defaults[k] for k in READING_OPTIONS):
        return f"{stem}."
    digest = hashlib.sha256(repr(sorted(options.items())).encode("utf-8")).hexdigest()[:8]
    label = re.sub(r"[^A-Za-z0-9_-]+", "-", data.csv_caption_key).strip("-")[:24] or "caption"
    return f"{stem}.{label}-{digest}."


@register
class CsvFiles(SplitFiles):
    format = "csv"
    definitions = (Dataset("csv", "your own data in CSV/TSV files (--train_data, --dev_data, --test_data; "
                                  "docs/own_data.md)", num_anns=0),)
    key_name = "line"  # the pair's line in its CSV file (the header is line 1)
    key_meaning = "the pair's line in your CSV file (the header is line 1)"
    label = "CSV files"
    file_hint = "FILE.csv"
    any_file = True

    def file(self, split: str) -> Path:
        return Path(self.split_spec(split))

    def options(self):
        d = self.data
        return dict(img_key=d.csv_img_key, caption_key=d.csv_caption_key, separator=d.csv_separator,
                    encoding=d.csv_encoding)

    def parse_split(self, split: str) -> Split:
        return read_csv_split(self.file(split), split, **self.options(), check_images=False)

    def check_image_files(self, split: Split, show: int = 5) -> None:
        check_csv_images(split, skip_unreadable=self.data.skip_unreadable_images)

    def train_caps_path(self) -> Path:
        # the files of other reading options (another caption column) are others: derived_prefix
        return self.file("train").parent / f"{derived_prefix(self.data)}{TRAIN_CAPS}"

    def rebuild_command(self) -> str:
        return construct_noise_command(self.data)

    def missing_images_advice(self) -> str:
        return ("missing images: a CSV's image paths are relative to the CSV file's folder (or absolute): fix the "
                "path in the CSV or put the file there")

    def write_cleaned(self, split: Split, keep, out) -> List[Path]:
        """The training CSV without the rows of the pairs not kept, every other line as it is, beside it (its image
        paths are relative to its folder)."""
        from npc.io import atomic_write_bytes

        src = self.file("train")
        out = self.cleaned_target(out)
        if out.resolve().parent != src.resolve().parent:
            raise DataError(f"--write_cleaned {out}: write the cleaned CSV beside {src} (in {src.parent}): its image "
                            f"paths are relative to the CSV's folder")
        drop = {int(n) for n, k in zip(split.source_lines, keep) if not k}
        text = decode(src.read_bytes(), src, self.data.csv_encoding)
        lines = io.StringIO(text, newline="").readlines()
        kept = [line for n, line in enumerate(lines, start=1) if n not in drop]
        encoding = "utf-8" if self.data.csv_encoding.lower().replace("_", "-") in ("utf-8", "utf-8-sig") else \
            self.data.csv_encoding
        atomic_write_bytes(out, "".join(kept).encode(encoding))
        return [out]

    def bank_dir(self, model_key) -> Path:
        # <stem>.memory_bank/ with the default reading options, one folder per other caption column etc.
        return self.file("train").parent / f"{derived_prefix(self.data)}memory_bank" / model_key()
