"""What ``--dataset`` accepts, by name: live views of the datasets the data sources declare (npc/sources).

Each source class declares its datasets and their properties (:class:`npc.sources.base.Dataset`); this
module only looks them up for the code that asks by name. The views are live: a source registered after
this module was imported (a new format) is seen at once.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping

from npc.sources import dataset_definitions
from npc.sources.base import Dataset

DatasetSpec = Dataset  # the definition's earlier name


class _View(Mapping):
    """``{name: value(definition)}`` over the registered datasets, read at each access (``keep``: which)."""

    def __init__(self, value: Callable[[Dataset], object], keep: Callable[[Dataset], bool] = lambda d: True):
        self.value, self.keep = value, keep

    def _items(self):
        return {n: self.value(d) for n, d in dataset_definitions().items() if self.keep(d)}

    def __getitem__(self, name):
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


DATASETS: Mapping[str, Dataset] = _View(lambda d: d)
DEFAULT_ROOTS: Mapping[str, str] = _View(lambda d: d.default_root, keep=lambda d: bool(d.default_root))
NUM_ANNS: Mapping[str, object] = _View(lambda d: d.num_anns or None)  # None: any number per image
