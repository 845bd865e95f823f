"""How a command line names its method: ``--method NAME``, ``--method_opt KEY=VALUE`` for the
estimator's options, and the flags of the reference release and earlier versions that override the
method's parts (``--npc_variant``, ``--npc_estimator``, ``--npc_weights``, ``--npc_impl``,
``--siamese_state``, ``--clean_prior``). The resolved method is the configuration's method section
(:class:`npc.config.MethodConfig`: its name and typed parts); those flags exist only here, at the edge,
and in the flags of checkpoints written by earlier versions (:func:`saved_method_fields`).
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

from npc.errors import ConfigError

# The NPC flags of earlier versions and the estimator option each one sets.
_LEGACY_OPTIONS = {"npc_impl": "impl", "siamese_state": "state"}


def parse_method_opts(items: Sequence[str]) -> Dict[str, str]:
    """``["tau=0.3", ...]`` -> ``{"tau": "0.3"}`` (text; the estimator types it); the last of a key wins."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--method_opt {item}: expected KEY=VALUE, e.g. --method_opt tau=0.3")
        out[key.strip()] = value.strip()
    return out


def options_text(options: Mapping) -> Tuple[str, ...]:
    """Every option as ``key=value``, sorted: how the configuration records them."""
    return tuple(f"{k}={v}" for k, v in sorted(options.items()))


def resolve_method(values: Mapping, script: str, explicit: frozenset):
    """The method a command line names (``values``: its parsed flags; ``explicit``: those given)."""
    from npc import methods as M

    given = {k: values[k] for k in explicit if k in values}
    options = dict(parse_method_opts(values.get("method_opt") or ()))
    if script == "clip":
        prior = given.get("clean_prior", "none")
        if "method" in given and prior != "none" and prior != values["method"]:
            raise ConfigError(f"--clean_prior {prior} contradicts --method {values['method']}: give one of them")
        name = values["method"] if "method" in given or prior == "none" else prior
        m = M.compose(M.get_method(name), options=options, bank_update=values.get("bank_update"))
    else:
        base = M.get_method(values["method"])
        estimator = given.get("npc_estimator")
        if (estimator or base.estimator) == "siamese":  # the siamese estimator's options, as earlier flags set them
            for flag, option in _LEGACY_OPTIONS.items():
                if flag in given:
                    options.setdefault(option, given[flag])
            if "npc_variant" in given:
                # --npc_variant release names the release's composition, its siamese gradient scale included
                options.setdefault("grad_scale", 4.0 if given["npc_variant"] == "release" else 1.0)
        weights = given.get("npc_weights")
        m = M.compose(base, objective=given.get("npc_variant"), estimator=estimator,
                      reweight=None if weights is None else weights == "on", options=options,
                      bank_update=values.get("bank_update"))
    M.check_bank_update(m)
    return m


def saved_method_fields(saved: Dict) -> Dict:
    """The method of a run saved by an earlier version, as this version's flat method flags: its ``method`` was
    the script (npc or clip), or it recorded no ``method_opt`` (the options were its NPC flags). Read as a
    command line giving those flags."""
    from npc import methods as M

    by_script = saved.get("method") in ("npc", "clip")
    script = saved["method"] if by_script else M.get_method(M.base_name(saved["method"])).script
    values = {**saved, "method": M.DEFAULT_METHOD[script] if by_script else M.base_name(saved["method"])}
    flags = ("npc_variant", "npc_estimator", "npc_weights", "clean_prior", *_LEGACY_OPTIONS)
    explicit = frozenset(k for k in flags if k in saved) | (frozenset() if by_script else {"method"})
    m = resolve_method(values, script, explicit)
    return {"method": m.name, "method_opt": options_text(m.option_values()), "bank_update": m.bank_update}
