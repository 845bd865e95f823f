"""Options of a method's parts (its weight estimator, its objective): declared, typed and checked here, and
``--method_opt KEY=VALUE``'s one parse (:func:`parse_method_opts`) and one format (:func:`options_text`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from npc.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """An option of an estimator or an objective: ``--method_opt NAME=VALUE`` sets it; recorded with the run."""

    name: str
    type: type
    default: Any
    help: str
    choices: Tuple = ()
    minimum: Optional[float] = None  # the smallest value allowed (numbers)

    def parse(self, value: Any) -> Any:
        """``value`` (a value or its command-line text) as this option's type; an error names the option."""
        try:
            v = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--method_opt {self.name}={value}: expected {self.type.__name__}") from None
        if self.type is float and not math.isfinite(v):
            raise ConfigError(f"--method_opt {self.name}={value}: expected a finite number")
        if self.choices and v not in self.choices:
            raise ConfigError(f"--method_opt {self.name}={value}: one of {', '.join(map(str, self.choices))}")
        if self.minimum is not None and v < self.minimum:
            raise ConfigError(f"--method_opt {self.name}={value}: must be >= {self.minimum:g}")
        return v


def resolve_declared(declared: Tuple[Option, ...], given: Mapping[str, Any], owner: str) -> Dict[str, Any]:
    """Every option ``declared`` (by an estimator, an objective or both: ``owner`` names them), typed: those
    ``given`` (values or their text), the others at their defaults. An unknown name is an error listing them."""
    known = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        have = ", ".join(f"{o.name} ({o.help})" for o in declared) or "none"
        raise ConfigError(f"--method_opt {', '.join(unknown)}: not an option of {owner} "
                         f"({'their' if ' and ' in owner else 'its'} options: {have})")
    return {name: o.parse(given[name]) if name in given else o.default for name, o in known.items()}


def parse_method_opts(items: Optional[Sequence[str]]) -> Dict[str, str]:
    """``["tau=0.3", ...]`` -> ``{"tau": "0.3"}`` (text; the option types it); the last of a key wins."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--method_opt {item}: expected KEY=VALUE, e.g. --method_opt tau=0.3")
        out[key.strip()] = value.strip()
    return out


def options_text(options: Mapping) -> Tuple[str, ...]:
    """Every option as ``key=value``, sorted by key: how the configuration records them."""
    return tuple(f"{k}={v}" for k, v in sorted(options.items()))
