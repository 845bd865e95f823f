"""The methods of this project by name: ``--method NAME`` (docs/methods.md).

A method is a composition of three parts:

* a **weight estimator** (:mod:`npc.estimators`): how much each pair counts in a step, or none (every
  pair counts 1: :class:`npc.estimators.NoWeights`);
* an **objective** (:mod:`npc.steps`): ``clip``, NPC's ``paper`` loss, or the ``release``'s;
* a **training subset**: every pair (``all``), the memory bank's clean set (``gmm_clean``), or the
  truly clean pairs (``oracle_clean``, benchmark only).

``main_NPC.py`` runs the methods whose ``script`` is ``npc`` (they take the NPC flags),
``main_CLIP.py`` those whose ``script`` is ``clip``. Methods marked ``benchmark_only`` need the
ground-truth noise mask of a split this project made; they show what a perfect detector gives, never a user's choice.

Methods, estimators, objectives and data sources are registered the same way (:class:`npc.registry.Registry`):
:func:`register_method` adds one, :func:`get_method` finds one by name (an unknown name is an error listing them).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Mapping, Optional

from npc.errors import ConfigError
from npc.registry import Registry

SUBSETS = ("all", "gmm_clean", "oracle_clean")


@dataclass(frozen=True)
class Method:
    name: str
    script: str                       # "npc" (main_NPC.py) or "clip" (main_CLIP.py)
    estimator: Optional[str]          # a name in npc.estimators.ESTIMATORS, or None (npc.estimators.NoWeights)
    objective: str                    # a name in npc.steps.OBJECTIVES
    subset: str = "all"
    reweight: bool = True             # False: weights computed and logged, the loss uses none (ablation)
    options: Mapping = field(default_factory=dict)  # the estimator's and objective's options off their defaults
    benchmark_only: bool = False
    bank_update: int = 0              # rebuild the memory bank from the current model every N epochs (0: never)
    summary: str = ""
    lr_family: Optional[str] = None   # methods whose learning rate is chosen together (default: the script's)

    @property
    def lr_group(self) -> str:
        """The learning-rate family of the benchmark's search: methods of one family share a tuned lr."""
        return self.lr_family or self.script

    @property
    def uses_bank(self) -> bool:
        """Whether the batches carry memory-bank pairs."""
        from npc.estimators import estimator_class
        from npc.steps import OBJECTIVES

        return OBJECTIVES.get(self.objective).uses_bank or estimator_class(self.estimator).uses_bank

    @property
    def needs(self) -> frozenset:
        """What the run must provide: "bank" (the memory bank's files), "p_clean", "noise_mask"."""
        from npc.estimators import estimator_class

        needs = set(estimator_class(self.estimator).needs)
        if self.subset == "gmm_clean":
            needs.add("p_clean")
        if self.subset == "oracle_clean":
            needs.add("noise_mask")
        if self.uses_bank or self.bank_update:
            needs.add("bank")
        if "p_clean" in needs:
            needs.add("bank")  # p(clean) is written by the bank's build
        return frozenset(needs)

    def option_values(self) -> Dict:
        """Every option of the estimator and the objective, with this method's values (the defaults where the
        method sets none)."""
        return resolve_options(self.estimator, self.objective, self.options)

    def _own_options(self, estimator: Optional[str], objective: Optional[str]) -> Dict:
        """This method's option values that the given part (its estimator or its objective) declares."""
        values = self.option_values()
        return {o.name: values[o.name] for o in _declared(estimator, objective)}

    def build_estimator(self):
        from npc.estimators import build_estimator

        return build_estimator(self.estimator, **self._own_options(self.estimator, None))

    def build_objective(self):
        from npc.steps import build_objective

        return build_objective(self.objective, **self._own_options(None, self.objective))


def _declared(estimator: Optional[str], objective: Optional[str]) -> tuple:
    """The options the estimator and the objective declare (``--method_opt``)."""
    from npc.estimators import estimator_class
    from npc.steps import OBJECTIVES

    return estimator_class(estimator).options + (OBJECTIVES.get(objective).options if objective else ())


def resolve_options(estimator: Optional[str], objective: str, given: Mapping) -> Dict:
    """Every option of this estimator and objective, typed: those ``given``, the others at their defaults."""
    from npc.options import resolve_declared

    owners = [f"the {estimator} estimator"] if estimator and _declared(estimator, None) else []
    if _declared(None, objective):
        owners.append(f"the {objective} objective")
    if given and not owners:
        raise ConfigError(f"--method_opt {', '.join(given)}: "
                          + (f"the {estimator} estimator and the {objective} objective have no options" if estimator
                             else f"no weight estimator, and the {objective} objective has no options"))
    return resolve_declared(_declared(estimator, objective), given, " and ".join(owners))


METHODS = Registry("method", flag="--method")


def register_method(method: Method) -> Method:
    """Make ``method`` selectable by ``--method``. (Its estimator's and objective's names are checked when
    they are built: importing this module must stay light, so that ``--help`` answers at once.)"""
    if method.script not in ("npc", "clip") or method.subset not in SUBSETS:
        raise ValueError(f"method {method.name!r}: unknown script or subset")
    return METHODS.register(method)


def get_method(name: str) -> Method:
    """The method registered as ``name``; an unknown name is a ConfigError listing the methods."""
    return METHODS.get(name)


def script_methods(script: str):
    return [m.name for m in METHODS.values() if m.script == script]


DEFAULT_METHOD = {"npc": "npc_paper", "clip": "clip"}

# The benchmark's rows. The NPC flags of the reference release and of earlier versions
# (--npc_variant, --npc_weights, --npc_estimator, --siamese_state, --npc_impl, --clean_prior) name
# the same compositions; see npc.method_flags.
register_method(Method("clip", "clip", None, "clip", summary="plain CLIP fine-tuning (symmetric InfoNCE), the baseline"))
register_method(Method("gmm_filter", "clip", None, "clip", subset="gmm_clean",
                       summary="CLIP fine-tuning on the memory bank's clean set only (GMM p(clean) > --clean_threshold)"))
register_method(Method("pclean_weight", "clip", "pclean", "clip",
                       summary="CLIP loss of each pair weighted by the memory bank's GMM p(clean)"))
register_method(Method("osa", "clip", "osa", "clip",
                       summary="OSA (arXiv 2410.01944): CLIP loss weighted by a frozen copy of the initial model's "
                               "debiased pair logit, x^2(1-x^2), not renormalized"))
register_method(Method("oracle_filter", "clip", None, "clip", subset="oracle_clean", benchmark_only=True,
                       summary="benchmark only: CLIP fine-tuning on the truly clean pairs (ground-truth noise mask)"))
register_method(Method("oracle_weight", "clip", "oracle", "clip", benchmark_only=True,
                       summary="benchmark only: noisy pairs weigh 0, clean 1, same steps as CLIP"))
register_method(Method("npc_paper", "npc", "siamese", "paper",
                       summary="NPC as published: siamese one-step weights per pair + memory-bank loss"))
register_method(Method("npc_release", "npc", "siamese", "release", options={"grad_scale": 4.0},
                       summary="NPC as the authors' code computes it (mean weight x batch-mean loss, bank loss "
                               "without gradient, siamese gradient 4 x the mean pair loss's, staircase lr)"))
register_method(Method("npc_bank_only", "npc", "siamese", "paper", reweight=False,
                       summary="ablation: npc_paper with every weight 1 (the memory-bank loss alone)"))
register_method(Method("npc_first_order", "npc", "first_order", "paper",
                       summary="npc_paper with the first-order estimator of each pair's own negative impact"))
register_method(Method("npc_pclean", "npc", "pclean", "paper",
                       summary="npc_paper's memory-bank loss with each pair's loss weighted by the bank's GMM "
                               "p(clean) instead of the siamese weights (no siamese step)"))
# A memory bank that learns: the GMM and the neighbours rebuilt from the current model every epoch
# (--bank_update N for every N epochs); the other methods keep the bank of the initial model.
for _name in ("npc_paper", "npc_bank_only", "pclean_weight"):
    register_method(replace(METHODS[_name], name=f"{_name}_bank_update", bank_update=1,
                            summary=f"{_name} with the memory bank rebuilt from the current model every epoch"))


register_method(Method("small_loss", "clip", "small_loss", "clip",
                       summary="small-loss selection (Co-teaching's rule, one network): each step the CLIP loss of the "
                               "fraction of the global batch with the smallest losses, the fraction falling from 1 to "
                               "1 - tau over the first epochs (options tau, ramp_epochs)"))


def _parts(m: Method) -> tuple:
    return (m.script, m.estimator, m.objective, m.subset, m.reweight, tuple(sorted(m.option_values().items())),
            m.bank_update)


def compose(base: Method, *, objective: Optional[str] = None, reweight: Optional[bool] = None,
            estimator: Optional[str] = None, options: Optional[Mapping] = None,
            bank_update: Optional[int] = None) -> Method:
    """``base`` with parts replaced: the registered method of those parts if there is one, else
    ``base[part=value,...]``. ``options`` (the estimator's and the objective's, values or their
    command-line text) add to the base's; the base's options of an estimator or objective that is
    replaced are dropped. Giving a method's own parts
    returns it unchanged. Unknown options or values are an error naming them."""
    est = base.estimator if estimator is None else estimator
    obj = base.objective if objective is None else objective
    # The base's options stay while their owner (its estimator, its objective) does.
    own_est = {o.name for o in _declared(base.estimator, None)}
    kept = {k: v for k, v in base.options.items() if (est == base.estimator if k in own_est else obj == base.objective)}
    new = replace(base, estimator=est, objective=obj, reweight=base.reweight if reweight is None else reweight,
                  bank_update=base.bank_update if bank_update is None else bank_update)
    values = resolve_options(est, obj, {**kept, **dict(options or {})})
    defaults = resolve_options(est, obj, {})
    new = replace(new, options={k: v for k, v in values.items() if v != defaults[k]})
    for m in (base, *METHODS.values()):
        if _parts(m) == _parts(new):
            return m
    # The name says the options that differ from the base's (an objective's option is compared by name).
    before, after = base.option_values(), new.option_values()
    if est != base.estimator:
        before = {k: v for k, v in before.items() if k not in own_est}
    diffs = [f"{k}={getattr(new, k)}" for k in ("estimator", "objective", "reweight", "bank_update")
             if getattr(new, k) != getattr(base, k)]
    diffs += [f"{k}={v}" for k, v in sorted(after.items()) if before.get(k) != v]
    return replace(new, name=f"{base.name}[{','.join(diffs)}]")


def check_bank_update(m: Method) -> None:
    """A --bank_update the method can use (the bank's pairs or its p(clean)), and no training subset that changes."""
    if m.bank_update and not (m.uses_bank or "p_clean" in m.needs):
        raise ConfigError(f"--bank_update {m.bank_update}: --method {m.name.split('[')[0]} uses neither the memory "
                          f"bank's pairs nor its p(clean)")
    if m.bank_update and m.subset == "gmm_clean":
        raise ConfigError(f"--bank_update with --method {m.name.split('[')[0]}: a training subset that changes "
                          f"during the run is not supported")


def base_name(name: str) -> str:
    """The registered method a composed name (``npc_paper[impl=naive]``) starts from."""
    return name.split("[", 1)[0]


def name_parts(name: str) -> Dict[str, str]:
    """The ``part=value`` items of a composed name (``npc_paper[estimator=first_order,impl=naive]``), as text;
    empty for a registered name. A malformed one (no closing ``]`` last, an item without ``=``, a part given
    twice) is a :class:`ConfigError` naming it, never read as another name."""
    base = base_name(name)
    if name == base:
        return {}
    if not name.endswith("]"):
        raise ConfigError(f"{name}: a composed method name ends with ']' (NAME[part=value,...])")
    items = [item for item in name[len(base) + 1:-1].split(",") if item]
    bad = [item for item in items if not item.split("=", 1)[0] or "=" not in item]
    if bad:
        raise ConfigError(f"{name}: {bad[0]!r} is not part=value (NAME[part=value,...])")
    parts = dict(item.split("=", 1) for item in items)
    if len(parts) < len(items):
        twice = next(k for k in parts if sum(item.split("=", 1)[0] == k for item in items) > 1)
        raise ConfigError(f"{name}: {twice} given twice")
    return parts
