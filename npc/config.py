"""The run configuration: typed, frozen sections built once from the command line.

A run's configuration is a :class:`RunConfig` of six sections, each a frozen dataclass whose fields
are declared with their types: :class:`DataConfig` (which data, its noise, how it is read),
:class:`ModelConfig` (architecture and initial weights), :class:`MethodConfig` (the method: its name
and typed parts), :class:`BankConfig` (the memory bank's GMM), :class:`OptimConfig` (the training
recipe) and :class:`RunPaths` (where the run writes, what this invocation does). A module takes the
section it needs, never the whole configuration; a field that is not declared does not exist.

:func:`npc.params.parse_args` builds one from a command line; setting a run up
(:func:`npc.run_setup.setup_run`) derives the final one (device, precision, the run's name, a resumed
run's flags) with :meth:`RunConfig.replace_flags`. Every field of a section except the method's has
the name of its command-line flag, so a configuration has one flat view (:meth:`RunConfig.flat`):
what resuming compares and what earlier versions' checkpoints recorded. params.txt and checkpoints
record the sections (:meth:`RunConfig.sections`); :func:`flags_of_saved` reads either form back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple, Union


@dataclass(frozen=True)
class DataConfig:
    """Which data a run reads and how: the dataset and its format, its noise, the loaders."""

    dataset: str = "demo"
    data_format: str = "auto"              # the on-disk format (npc/sources): auto = found at setup
    dataset_root: Optional[str] = None
    train_data: Optional[str] = None       # --dataset csv / webdataset: the splits' files
    dev_data: Optional[str] = None
    test_data: Optional[str] = None
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_separator: str = "\t"
    csv_encoding: str = "utf-8"
    num_anns: Optional[int] = None
    noise_ratio: Union[int, float] = 0.4
    noise_mode: str = "caption"
    noise_seed: int = 99
    dev_length: int = 0
    eval_splits: str = "test"
    skip_unreadable_images: bool = False
    image_cache: Optional[str] = None
    num_workers: int = 2

    def split_files(self) -> Dict[str, Optional[str]]:
        return {"train": self.train_data, "dev": self.dev_data, "test": self.test_data}

    @property
    def eval_split_names(self) -> Tuple[str, ...]:
        return tuple(s for s in self.eval_splits.split(",") if s)


@dataclass(frozen=True)
class ModelConfig:
    """The model: architecture, initial weights, tokens per caption, name in checkpoints."""

    vision_model: str = "npc-tiny"
    pretrained: str = "demo-base"
    pretrained_dir: str = "pre-trained_models"
    context_length: Optional[int] = None
    name: Optional[str] = None
    torchcompile: bool = False


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
        return tuple(f"{k}={v}" for k, v in self.options)

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

        base = M.get_method(M.base_name(name))
        parts = M.name_parts(name)
        options = dict(str(item).split("=", 1) for item in method_opt or ())
        reweight = parts.get("reweight")
        m = M.compose(base, objective=parts.get("objective"), estimator=parts.get("estimator"),
                      reweight=None if reweight is None else reweight == "True", options=options,
                      bank_update=bank_update)
        M.check_bank_update(m)
        return cls.of(m)

    @classmethod
    def of(cls, m) -> "MethodConfig":
        """The section of a resolved :class:`npc.methods.Method`."""
        from npc import methods as M

        return cls(name=m.name, base=M.base_name(m.name), objective=m.objective, estimator=m.estimator,
                   reweight=m.reweight, options=tuple(sorted(m.option_values().items())), bank_update=m.bank_update)


@dataclass(frozen=True)
class BankConfig:
    """The memory bank's build: the GMM's threshold and seed, the loss pass's batch, how files are read."""

    clean_threshold: float = 0.9
    bank_seed: int = 99
    bank_batch_size: int = 128
    bank_recipe: str = "project"
    trust_pickle: bool = False
    rebuild_bank: bool = False


@dataclass(frozen=True)
class OptimConfig:
    """The training recipe."""

    batch_size: int = 128
    epochs: int = 5
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.2
    warmup: int = 50
    lr_schedule: str = "cosine"
    grad_clip: float = 10.0
    seed: int = 99
    precision: Optional[str] = None


@dataclass(frozen=True)
class EvalConfig:
    """How every evaluation encodes and ranks (--eval, dev during training, the final table)."""

    eval_batch_size: int = 256
    eval_precision: str = "fp32"
    ties: str = "pessimistic"


@dataclass(frozen=True)
class RunPaths:
    """Where the run writes and what this invocation does."""

    experiments: Optional[str] = None
    logs: str = "logs"
    checkpoint_path: Optional[str] = None
    resume: Optional[str] = None
    eval: bool = False
    device: Optional[str] = None
    display: int = 50
    stop_after: int = 0
    keep_checkpoints: int = 0
    no_progress: bool = False


@dataclass(frozen=True)
class ReportConfig:
    """find_noisy_pairs.py's own settings."""

    out: str = "noise_report"
    top: int = 50
    candidates: int = 5
    trusted: int = 8
    runs: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class CheckConfig:
    """check_data.py's own setting."""

    decode: bool = False


SECTIONS = {"data": DataConfig, "model": ModelConfig, "bank": BankConfig, "optim": OptimConfig,
            "evaluation": EvalConfig, "run": RunPaths}
METHOD_FLAGS = ("method", "method_opt", "bank_update")  # the method section's flat view
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
                        method_opt=tuple(f"{k}={v}" for k, v in sorted(options.items())))
        if "script" in config:
            flat["script"] = config["script"]
        return flat
    return dict(saved.get("args") or {})
