"""Your own data in CSV/TSV files (open_clip's convention): one row per (image, caption) pair.

Rows of the same image form one image with several captions (any number). Files derived from a
split go beside its CSV: ``<stem>.train_caps.txt`` (the captions in split order, which the noise
protocol shuffles), ``<stem>.<r>_noise_train_caps.txt`` (read with other options than the defaults:
``<stem>.<caption column>-<hash>.train_caps.txt`` and so on, :func:`derived_prefix`),
``<stem>.memory_bank/<model>_<weights>_<key>/``.
"""
from __future__ import annotations

import re
from pathlib import Path

from npc import data as D
from npc.noise import TRAIN_CAPS
from npc.sources import register
from npc.sources.base import SplitFiles, noisy_beside

READING_OPTIONS = ("csv_img_key", "csv_caption_key", "csv_separator", "csv_encoding")


def construct_noise_command(data) -> str:
    """``python construct_noise.py --train_data FILE`` with the reading options that differ from the defaults."""
    from dataclasses import fields

    from npc.csv_format import separator_name

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
    import hashlib
    from dataclasses import fields

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
    datasets = ("csv",)
    key_name = "csv_line"  # the pair's line in its CSV file
    label = "CSV files"
    file_hint = "FILE.csv"

    def expected_files(self) -> str:
        return "CSV files (--train_data, --dev_data, --test_data)"

    def file(self, split: str) -> Path:
        return Path(self.split_spec(split))

    def options(self):
        d = self.data
        return dict(img_key=d.csv_img_key, caption_key=d.csv_caption_key, separator=d.csv_separator,
                    encoding=d.csv_encoding)

    def read_split(self, split: str, check_images: bool) -> D.Split:
        return D.read_csv_split(self.file(split), split, **self.options(), check_images=check_images)

    def noisy_train(self, log, check_images: bool):
        source = self.file("train")
        # the files of other reading options (another caption column) are others: derived_prefix
        return noisy_beside(self.data, self.read_split("train", check_images),
                            source.parent / f"{derived_prefix(self.data)}{TRAIN_CAPS}", source, log,
                            rebuild_command=construct_noise_command(self.data))

    def missing_images_advice(self) -> str:
        return ("missing images: a CSV's image paths are relative to the CSV file's folder (or absolute): fix the "
                "path in the CSV or put the file there")

    def bank_dir(self, model_key) -> Path:
        # <stem>.memory_bank/ with the default reading options, one folder per other caption column etc.
        return self.file("train").parent / f"{derived_prefix(self.data)}memory_bank" / model_key()
