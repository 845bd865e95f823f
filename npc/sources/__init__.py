"""Data sources: one class per on-disk format of a dataset, registered by name.

A source (:class:`npc.sources.base.DataSource`) owns everything that depends on how a dataset is held
on disk: the datasets it serves and their properties (:class:`npc.sources.base.Dataset`), reading each
split (images, captions grouped by image, each pair's own key; parsed once per run), where derived files
live (the noisy split, the memory bank), and what to call a split in a message. Everything
downstream (noise, bank, loaders, fingerprints, the noise report) talks to a source, never to a
format's name. Adding a format is one class, one :func:`register` line and a row in docs/data.md.
The sources are registered like the methods' parts (:class:`npc.registry.Registry`, keyed by ``format``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Sequence, Type

if TYPE_CHECKING:
    from npc.sources.base import Dataset

from npc.registry import Registry

_SOURCES = Registry("data format", key="format", flag="--data_format")


def register(cls):
    """Class decorator: make a source class selectable under its ``format`` name."""
    return _SOURCES.register(cls)


def source_classes() -> Dict[str, Type]:
    """Every registered source class by its format name, in the order of registration."""
    return dict(_SOURCES.items())


def dataset_definitions() -> Dict[str, "Dataset"]:
    """Every ``--dataset`` by name: its definition, as the source classes declare it (the first registered for a
    dataset that several formats hold)."""
    out: Dict[str, Dataset] = {}
    for cls in _SOURCES.values():
        for d in cls.definitions:
            out.setdefault(d.name, d)
    return out


def dataset_definition(name: str) -> "Dataset":
    """The definition of ``--dataset name``; an unknown name is an error listing the known ones."""
    from npc.errors import DataError

    found = dataset_definitions().get(name)
    if found is None:
        raise DataError(f"unknown dataset {name!r} (--dataset): choose one of {sorted(dataset_definitions())}")
    return found


def dataset_of(data) -> str:
    """The ``--dataset`` a command that names none means (construct_noise.py): with ``--train_data``, the first
    source of split files that claims them (the one that reads any file last); with ``--dataset_root``, the one
    dataset a format finds there (Karpathy's file names its dataset; the release's layout holds any of its own:
    ``data.dataset`` then)."""
    from dataclasses import replace

    if data.train_data:
        files = sorted((c for c in _SOURCES.values() if c.reads_split_files), key=lambda c: c.any_file)
        return next((c.datasets[0] for c in files if c.found(replace(data, dataset=c.datasets[0]))), data.dataset)
    for cls in _SOURCES.values():
        if not cls.reads_split_files:
            found = [n for n in cls.datasets if cls.found(replace(data, dataset=n))]
            if len(found) == 1:
                return found[0]
    return data.dataset


def source_for(data):
    """The source of a :class:`npc.config.DataConfig`: its ``data_format``, or (``auto``) the first format
    that serves ``data.dataset`` and whose files are there (the release's layout first)."""
    from npc.errors import DataError

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


class _FileDatasets(Sequence):
    """The datasets whose splits are files given by --train_data, --dev_data, --test_data (no --dataset_root);
    live: a source registered later is seen."""

    def _names(self):
        return tuple(d for c in _SOURCES.values() if c.reads_split_files for d in c.datasets)

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


FILE_DATASETS = _FileDatasets()
