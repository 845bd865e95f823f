"""Data sources: one class per on-disk format of a dataset, registered by name.

A source (:class:`npc.sources.base.DataSource`) owns everything that depends on how a dataset is held
on disk: reading each split (images, captions grouped by image, each pair's own key), where derived
files live (the noisy split, the memory bank), and what to call a split in a message. Everything
downstream (noise, bank, loaders, fingerprints, the noise report) talks to a source, never to a
format's name. Adding a format is one class, one :func:`register` line and a row in docs/data.md.
"""
from __future__ import annotations

from typing import Dict, Type

FORMAT_CHOICES = ("release", "karpathy", "csv")  # what --data_format accepts (auto: found on disk)
_SOURCES: Dict[str, Type] = {}


def register(cls):
    """Make a source class selectable under its ``format`` name."""
    if cls.format in _SOURCES:
        raise ValueError(f"data source {cls.format!r} is registered already")
    _SOURCES[cls.format] = cls
    return cls


def source_classes() -> Dict[str, Type]:
    from npc.sources import release, karpathy, csv_files  # noqa: F401  (each registers its class)

    return dict(_SOURCES)


def source_for(data):
    """The source of a :class:`npc.config.DataConfig`: its ``data_format``, or (``auto``) the first format
    that serves ``data.dataset`` and whose files are there (the release's layout first)."""
    from npc.csv_format import DataError

    classes = source_classes()
    if data.data_format != "auto":
        cls = classes.get(data.data_format)
        if cls is None or data.dataset not in cls.datasets:
            serves = [n for n, c in classes.items() if data.dataset in c.datasets]
            raise DataError(f"--data_format {data.data_format}: --dataset {data.dataset} is read as "
                            f"{' or '.join(serves)}")
        return cls(data)
    candidates = [c for c in classes.values() if data.dataset in c.datasets]
    for cls in candidates:
        if cls.found(data):
            return cls(data)
    return candidates[0](data)  # none found: the first one says what it expected
