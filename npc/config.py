"""The run configuration: typed, frozen sections built once from the command line.

A run's configuration is a :class:`RunConfig` of six sections, each a frozen dataclass whose fields
are the flags declared for it in :mod:`npc.flags` (their types, defaults and checks: a section built in
code is checked as the command line is): :class:`DataConfig` (which data, its noise, how it is read),
:class:`ModelConfig` (architecture and initial weights), :class:`MethodConfig` (the method: its name
and typed parts), :class:`BankConfig` (the memory bank's GMM), :class:`OptimConfig` (the training
recipe) and :class:`RunPaths` (where the run writes, what this invocation does). A module takes the
section it needs, never the whole configuration; a field that is not declared does not exist.

:func:`npc.params.parse_args` builds one from a command line; setting a run up
(:func:`npc.run_setup.setup_run`) finishes it in one function (:func:`npc.run_setup.finish_config`: device,
precision, the run's name, a resumed run's flags, by :meth:`RunConfig.replace_flags`). Every field of a section
except the method's has the name of its command-line flag, so a configuration has one flat view (:meth:`RunConfig.flat`):
what resuming compares and what earlier versions' checkpoints recorded. params.txt and checkpoints
record the sections (:meth:`RunConfig.sections`); :func:`flags_of_saved` reads either form back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple, Union

from npc.flags import METHOD_FLAGS, check_section, section_flags
from npc.options import options_text, parse_method_opts


def _annotation(flag):
    kind = {"number": Union[int, float], list: Tuple[str, ...]}.get(flag.kind, flag.kind)
    return Optional[kind] if flag.default is None or flag.settled else kind


def _section(name: str):
    """A frozen section whose fields are the flags declared for section ``name`` (npc/flags.py), in their order,
    with their defaults; ``__post_init__`` checks each value as the command line does."""
    def make(cls):
        own = dict(cls.__dict__.get("__annotations__", {}))
        cls.__annotations__ = {}
        for flag in section_flags(name):
            cls.__annotations__[flag.name] = _annotation(flag)
            setattr(cls, flag.name, flag.default)
        cls.__annotations__.update(own)
        cls.SECTION = name
        cls.__post_init__ = check_section
        return dataclass(frozen=True)(cls)
    return make


@_section("data")
class DataConfig:
    """Which data a run reads and how: the dataset and its format, its noise, the loaders."""

    def split_files(self) -> Dict[str, Optional[str]]:
        return {"train": self.train_data, "dev": self.dev_data, "test": self.test_data}

    @property
    def eval_split_names(self) -> Tuple[str, ...]:
        return tuple(s for s in self.eval_splits.split(",") if s)


@_section("model")
class ModelConfig:
    """The model: architecture, initial weights, tokens per caption, name in checkpoints."""


@dataclass(frozen=True)
class MethodConfig:
    """The method, stored once: its name (a registered method, or one composed from it) and its parts.

    ``options`` are the weight estimator's and the objective's, typed (``(key, value)`` pairs, sorted). Earlier versions'
    flags (``--npc_variant`` ...) are translated into these parts at the command line's edge."""

    name: str
    base: str
    objective: str
    estimator: Optional[str] = None
    reweight: bool = True
    options: Tuple[Tuple[str, Any], ...] = ()
    bank_update: int = 0

    @property
    def options_text(self) -> Tuple[str, ...]:
        return options_text(dict(self.options))

    def method(self):
        """The :class:`npc.methods.Method` this section names."""
        from npc import methods as M

        return M.compose(M.get_method(self.base), objective=self.objective, estimator=self.estimator,
                         reweight=self.reweight, options=dict(self.options), bank_update=self.bank_update)

    @classmethod
    def from_flags(cls, name: str, method_opt, bank_update) -> "MethodConfig":
        """The section of a method's flat flags: its name (registered, or composed as ``base[part=value,...]``),
        every option as ``key=value`` and its bank update."""
        from npc import methods as M
        from npc.method_flags import named_method

        base, parts = named_method(name, parse_method_opts(method_opt), bank_update)
        m = M.compose(base, **parts)
        M.check_bank_update(m)
        return cls.of(m)

    @classmethod
    def of(cls, m) -> "MethodConfig":
        """The section of a resolved :class:`npc.methods.Method`."""
        from npc import methods as M

        return cls(name=m.name, base=M.base_name(m.name), objective=m.objective, estimator=m.estimator,
                   reweight=m.reweight, options=tuple(sorted(m.option_values().items())), bank_update=m.bank_update)


@_section("bank")
class BankConfig:
    """The memory bank's build: the GMM's threshold and seed, the loss pass's batch, how files are read."""


@_section("optim")
class OptimConfig:
    """The training recipe."""


@_section("evaluation")
class EvalConfig:
    """How every evaluation encodes and ranks (--eval, dev during training, the final table)."""


@_section("run")
class RunPaths:
    """Where the run writes and what this invocation does."""


@_section("report")
class ReportConfig:
    """find_noisy_pairs.py's own settings."""


@_section("check")
class CheckConfig:
    """check_data.py's own setting."""


SECTIONS = {"data": DataConfig, "model": ModelConfig, "bank": BankConfig, "optim": OptimConfig,
            "evaluation": EvalConfig, "run": RunPaths}
_FIELD_SECTION = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
# The sections of one script only: find_noisy_pairs.py's report, check_data.py's check.
SCRIPT_SECTIONS = {"report": ReportConfig, "check": CheckConfig}


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration: its sections, the script that runs it, and the flags given on its command line."""

    data: DataConfig
    model: ModelConfig
    bank: BankConfig
    optim: OptimConfig
    evaluation: EvalConfig
    run: RunPaths
    method: Optional[MethodConfig] = None   # None: get_memorybank.py and find_noisy_pairs.py, which train nothing
    report: Optional[ReportConfig] = None   # find_noisy_pairs.py's
    check: Optional[CheckConfig] = None     # check_data.py's
    script: str = "npc"
    explicit: FrozenSet[str] = field(default=frozenset(), compare=False)

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any], script: str, method: Optional[MethodConfig] = None,
                   explicit: FrozenSet[str] = frozenset()) -> "RunConfig":
        """The configuration of flat ``flags`` (flag name -> value). A name no section declares is an error."""
        own = {f.name for f in fields(SCRIPT_SECTIONS[script])} if script in SCRIPT_SECTIONS else set()
        unknown = sorted(k for k in flags if k not in _FIELD_SECTION and k not in own)
        if unknown:
            raise AttributeError(f"the run configuration has no {', '.join(unknown)}")
        parts = {s: {k: v for k, v in flags.items() if _FIELD_SECTION.get(k) == s} for s in SECTIONS}
        extra = {}
        if own:
            extra[script] = SCRIPT_SECTIONS[script](**{k: tuple(v) if isinstance(v, list) else v
                                                       for k, v in flags.items() if k in own})
        return cls(**{s: SECTIONS[s](**parts[s]) for s in SECTIONS}, method=method, script=script,
                   explicit=frozenset(explicit), **extra)

    def flat(self) -> Dict[str, Any]:
        """Every flag with its value (the method as its name, options and bank update)."""
        out = {k: v for s in SECTIONS for k, v in dataclasses.asdict(getattr(self, s)).items()}
        if self.method is not None:
            out.update(method=self.method.name, method_opt=self.method.options_text, bank_update=self.method.bank_update)
        return out

    def replace_flags(self, **changes: Any) -> "RunConfig":
        """Another configuration with flags (flat names) changed; the method's flags re-resolve the method."""
        unknown = sorted(k for k in changes if k not in _FIELD_SECTION and k not in METHOD_FLAGS)
        if unknown:
            raise AttributeError(f"the run configuration has no {', '.join(unknown)}")
        new = {s: dataclasses.replace(getattr(self, s), **{k: v for k, v in changes.items()
                                                            if _FIELD_SECTION.get(k) == s})
               for s in SECTIONS}
        method = self.method
        if any(k in changes for k in METHOD_FLAGS):
            flat = {**self.flat(), **changes}
            method = MethodConfig.from_flags(flat["method"], flat.get("method_opt", ()), flat.get("bank_update"))
        return dataclasses.replace(self, **new, method=method)

    def sections(self) -> Dict[str, Dict[str, Any]]:
        """The sections as plain values (what params.txt and checkpoints record)."""
        out = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        if self.method is not None:
            out["method"] = {**dataclasses.asdict(self.method), "options": dict(self.method.options)}
        out["script"] = self.script
        return out

    def params_text(self) -> str:
        """params.txt: one ``section.field: value`` line per field."""
        lines = []
        for section, values in self.sections().items():
            if not isinstance(values, dict):
                lines.append(f"{section}: {values}")
                continue
            lines += [f"{section}.{k}: {_text(v)}" for k, v in values.items()]
        return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, str):
        return value.encode("unicode_escape").decode("ascii")  # a tab separator shows as \t
    return str(value)


def flags_of_saved(saved: Mapping[str, Any]) -> Dict[str, Any]:
    """The flat flags a checkpoint recorded: this version's sections (``config``) or an earlier one's ``args``."""
    config = saved.get("config")
    if isinstance(config, dict):
        flat = {k: v for s in SECTIONS for k, v in (config.get(s) or {}).items()}
        method = config.get("method")
        if isinstance(method, dict):
            options = method.get("options") or {}
            flat.update(method=method.get("name"), bank_update=method.get("bank_update", 0),
                        method_opt=options_text(options))
        if "script" in config:
            flat["script"] = config["script"]
        return flat
    return dict(saved.get("args") or {})
