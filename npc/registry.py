"""Named registries: the one pattern by which data sources, weight estimators, objectives and methods are
made selectable by name (``register`` as a decorator or a call, ``names``, ``get``, ``create``).

A registry maps a name to a class or an object that carries its own name (the ``key`` attribute:
``name`` for estimators, objectives and methods, ``format`` for data sources). ``get`` of a name that
is not there is a one-line :class:`npc.errors.UserError` naming the flag and every choice.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Type

from npc.errors import ConfigError, UserError


class Registry:
    """Things of one ``kind`` by name; see the module docstring.

    ``flag`` is the command-line flag that names one (in the error of an unknown name); ``error`` the
    :class:`UserError` subclass of that error; ``prepare(item, options)`` turns ``create``'s options into
    the constructor's (e.g. checks and types declared options; default: as given).
    """

    def __init__(self, kind: str, *, key: str = "name", flag: str = "", error: Type[UserError] = ConfigError,
                 prepare: Optional[Callable[[Any, Dict[str, Any]], Dict[str, Any]]] = None):
        self.kind, self.key, self.flag, self.error, self.prepare = kind, key, flag, error, prepare
        self._items: Dict[str, Any] = {}

    def register(self, item: Any) -> Any:
        """Make ``item`` selectable under its ``key`` attribute; returns it (so it serves as a class decorator).
        A name that is empty or taken is a programming error (ValueError)."""
        name = getattr(item, self.key)
        if not name or name in self._items:
            raise ValueError(f"{self.kind} name {name!r} is empty or registered already")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> None:
        """Take ``name`` out (tests that register a throw-away part)."""
        del self._items[name]

    def names(self) -> Tuple[str, ...]:
        """Every registered name, in the order of registration."""
        return tuple(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def get(self, name: str) -> Any:
        """The item registered as ``name``; an unknown name is a :class:`UserError` listing the choices."""
        try:
            return self._items[name]
        except KeyError:
            what = f"{self.flag} {name}: unknown {self.kind}" if self.flag else f"unknown {self.kind} {name!r}"
            raise self.error(f"{what}; one of {', '.join(self._items)}") from None

    def create(self, name: str, **options) -> Any:
        """An instance of the class registered as ``name``, built from ``options`` (through ``prepare``)."""
        cls = self.get(name)
        return cls(**(self.prepare(cls, options) if self.prepare else options))

    __delitem__ = unregister

    def __getitem__(self, name: str) -> Any:
        return self._items[name]  # KeyError, as a dict's (``get`` is the user-facing look-up)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
