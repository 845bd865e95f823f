"""How a command line names its method: ``--method NAME``, ``--method_opt KEY=VALUE`` for the
estimator's options, and the flags of the reference release and earlier versions that override the
method's parts (``--npc_variant``, ``--npc_estimator``, ``--npc_weights``, ``--npc_impl``,
``--siamese_state``, ``--clean_prior``). The resolved method is the configuration's method section
(:class:`npc.config.MethodConfig`: its name and typed parts); those flags exist only here, at the edge,
and in the flags of checkpoints written by earlier versions (:func:`saved_method_fields`).
"""
from __future__ import annotations

from typing import Dict, Mapping

from npc.errors import ConfigError
from npc.options import options_text, parse_method_opts

# The NPC flags of earlier versions and the estimator option each one sets.
_LEGACY_OPTIONS = {"npc_impl": "impl", "siamese_state": "state"}


def named_method(name: str, options: Mapping = (), bank_update=None):
    """The method ``name`` names (registered, or composed from one as ``base[part=value,...]``, as records and the
    README's tables name methods) with ``options`` (text or values; they win over the name's) and ``bank_update``
    (None: the name's) added, as :func:`npc.methods.compose`'s arguments: (base method, keyword arguments)."""
    from npc import methods as M

    base = M.get_method(M.base_name(name))
    parts = dict(M.name_parts(name))
    fixed = {k: parts.pop(k) for k in ("objective", "estimator", "reweight", "bank_update") if k in parts}
    reweight = fixed.get("reweight")
    if bank_update is None and "bank_update" in fixed:
        bank_update = int(fixed["bank_update"])
    return base, dict(objective=fixed.get("objective"), estimator=fixed.get("estimator"),
                      reweight=None if reweight is None else reweight == "True", options={**parts, **dict(options)},
                      bank_update=bank_update)


def resolve_method(values: Mapping, script: str, explicit: frozenset):
    """The method a command line names (``values``: its parsed flags; ``explicit``: those given)."""
    from npc import methods as M

    given = {k: values[k] for k in explicit if k in values}
    options = parse_method_opts(values.get("method_opt"))
    if script == "clip":
        prior = given.get("clean_prior", "none")
        if "method" in given and prior != "none" and prior != values["method"]:
            raise ConfigError(f"--clean_prior {prior} contradicts --method {values['method']}: give one of them")
        name = values["method"] if "method" in given or prior == "none" else prior
        base, parts = named_method(name, options, values.get("bank_update"))
        m = M.compose(base, **parts)
    else:
        base, parts = named_method(values["method"], options, values.get("bank_update"))
        estimator = given.get("npc_estimator", parts["estimator"])
        if (estimator or base.estimator) == "siamese":  # the siamese estimator's options, as earlier flags set them
            for flag, option in _LEGACY_OPTIONS.items():
                if flag in given:
                    parts["options"].setdefault(option, given[flag])
            if "npc_variant" in given:
                # --npc_variant release names the release's composition, its siamese gradient scale included
                parts["options"].setdefault("grad_scale", 4.0 if given["npc_variant"] == "release" else 1.0)
        weights = given.get("npc_weights")
        m = M.compose(base, objective=given.get("npc_variant", parts["objective"]), estimator=estimator,
                      reweight=parts["reweight"] if weights is None else weights == "on", options=parts["options"],
                      bank_update=parts["bank_update"])
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
