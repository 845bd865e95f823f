"""Data sources: one class per on-disk format of a dataset, registered by name.

A source (:class:`npc.sources.base.DataSource`) owns everything that depends on how a dataset is held
on disk: reading each split (images, captions grouped by image, each pair's own key), where derived
files live (the noisy split, the memory bank), and what to call a split in a message. Everything
downstream (noise, bank, loaders, fingerprints, the noise report) talks to a source, never to a
format's name. Adding a format is one class, one :func:`register` line and a row in docs/data.md.
The sources are registered like the methods' parts (:class:`npc.registry.Registry`, keyed by ``format``).
"""
from __future__ import annotations

from typing import Dict, Type

from npc.registry import Registry

_SOURCES = Registry("data format", key="format", flag="--data_format")


def register(cls):
    """Class decorator: make a source class selectable under its ``format`` name."""
    return _SOURCES.register(cls)


def source_classes() -> Dict[str, Type]:
    """Every registered source class by its format name, in the order of registration."""
    return dict(_SOURCES.items())


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
    candidates = [c(data) for c in classes.values() if data.dataset in c.datasets]
    for source in candidates:
        if source.found(data):
            return source
    if len(candidates) == 1:
        return candidates[0]  # its errors name the files it expected (the demo is generated on first use)
    raise DataError(f"--dataset_root {data.dataset_root}: no {data.dataset} dataset found there: expected "
                    f"{' or '.join(c.expected_files() for c in candidates)} (docs/data.md)")


# The formats, each one line (its module registers its class).
from npc.sources import release  # noqa: E402,F401
from npc.sources import karpathy  # noqa: E402,F401
from npc.sources import csv_files  # noqa: E402,F401
from npc.sources import webdataset_shards  # noqa: E402,F401

FORMAT_CHOICES = tuple(_SOURCES)  # what --data_format accepts (auto: found on disk)
# The datasets whose splits are files given by --train_data, --dev_data, --test_data (no --dataset_root).
FILE_DATASETS = tuple(d for c in _SOURCES.values() if c.reads_split_files for d in c.datasets)
