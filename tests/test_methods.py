"""Methods as named parts: the registry, the flags that name its methods, a new estimator added through
the registry alone, and the oracles against their written-out definitions."""
import copy
import json

import numpy as np
import pytest
import torch

import main_CLIP
import main_NPC
from helpers import run_args
from npc import estimators, methods
from npc.params import parse_args
from npc.steps import train_step
from helpers import _per_sample, _setup


def _sgd_step_equals(model, a0, batch, weights, bank: float = 0.0):
    """``model`` is ``a0`` after one SGD step (lr 1) on ``mean_i(w_i l_i)`` (plus ``bank`` x the memory-bank
    loss ``mean_i l_bankI_i + mean_i l_bankT_i``), written out."""
    ref = copy.deepcopy(a0)
    loss = (weights * _per_sample(ref, batch, "pair")).mean()
    if bank:
        loss = loss + bank * (_per_sample(ref, batch, "bankI").mean() + _per_sample(ref, batch, "bankT").mean())
    grads = torch.autograd.grad(loss, list(ref.parameters()), allow_unused=True)
    return all(torch.allclose(p1, p0 - (g if g is not None else 0), atol=1e-5)
               for p0, p1, g in zip(a0.parameters(), model.parameters(), grads))


@pytest.mark.parametrize("argv, script, name", [
    ([], "npc", "npc_paper"),
    (["--npc_variant", "release"], "npc", "npc_release"),
    (["--npc_weights", "off"], "npc", "npc_bank_only"),
    (["--npc_estimator", "first_order"], "npc", "npc_first_order"),
    (["--method", "npc_release", "--npc_variant", "paper"], "npc", "npc_paper"),
    (["--npc_impl", "naive"], "npc", "npc_paper[impl=naive]"),
    ([], "clip", "clip"),
    (["--clean_prior", "pclean_weight"], "clip", "pclean_weight"),
    (["--method", "gmm_filter"], "clip", "gmm_filter"),
])
def test_flags_of_earlier_versions_name_the_same_methods(argv, script, name):
    cfg = parse_args(argv, script)
    m = cfg.method.method()
    assert cfg.method.name == name and m.name == name
    # the section holds the method's parts (recorded with the run), not the flags that named them
    assert (cfg.method.objective, cfg.method.estimator, cfg.method.reweight) == (m.objective, m.estimator, m.reweight)
    assert "npc_variant" not in cfg.flat() and "clean_prior" not in cfg.flat()


def test_a_method_is_refused_by_the_other_script_and_contradictions_are_named():
    with pytest.raises(SystemExit):
        parse_args(["--method", "npc_paper"], "clip")
    with pytest.raises(ValueError, match="--clean_prior gmm_filter contradicts --method pclean_weight"):
        parse_args(["--method", "pclean_weight", "--clean_prior", "gmm_filter"], "clip")


def test_every_registered_method_composes_known_parts():
    from npc.steps import OBJECTIVES

    for m in methods.METHODS.values():
        assert m.objective in OBJECTIVES and (m.estimator is None or m.estimator in estimators.ESTIMATORS)
        assert m.script in ("npc", "clip") and m.summary
        # a method without an estimator builds the null one: its weights are None, it uses and keeps nothing
        est = m.build_estimator()
        assert isinstance(est, estimators.NoWeights) == (m.estimator is None)
        assert m.build_objective().name == m.objective
    assert methods.get_method("npc_release").build_estimator().grad_scale == 4.0
    none = methods.get_method("clip").build_estimator()
    assert (none.weights(None), none.uses_bank, none.optimizers, none.trained_models, none.state_dict()) == (
        None, False, [], [], {})


def test_the_registries_name_their_choices():
    from npc.errors import UserError
    from npc.registry import Registry
    from npc.sources import register, source_classes
    from npc.steps import OBJECTIVES, build_objective

    for registry, flag in ((methods.METHODS, "--method"), (estimators.ESTIMATORS, "estimator"),
                           (OBJECTIVES, "objective")):
        with pytest.raises(UserError, match=flag) as e:
            registry.get("no_such_thing")
        assert "no_such_thing" in str(e.value) and all(name in str(e.value) for name in registry.names())
    with pytest.raises(ValueError, match="npc_paper"):  # a name is registered once
        methods.register_method(methods.get_method("npc_paper"))
    assert build_objective("paper", bank_weight="0.5").bank_weight == 0.5  # options typed through the registry
    with pytest.raises(UserError, match="bank_weight"):
        build_objective("paper", bank_weight="-1")
    assert list(source_classes()) == ["release", "karpathy", "csv", "webdataset"]
    with pytest.raises(ValueError, match="csv"):
        register(source_classes()["csv"])
    things = Registry("thing", flag="--thing")

    @things.register
    class Two:
        name = "two"

        def __init__(self, n=2):
            self.n = n

    assert things.names() == ("two",) and things.create("two", n=3).n == 3 and "two" in things


@pytest.fixture
def toy_method():
    """A new estimator and its method, added through the registry alone (as docs/methods.md shows)."""

    @estimators.register_estimator
    class Confidence(estimators.WeightEstimator):
        name = "toy_confidence"

        def weights(self, state):  # trust a pair as much as its own loss is small, within the batch
            pair = state.losses["pair"].detach()
            return torch.softmax(-pair, 0) * len(pair)

    methods.register_method(methods.Method("toy", "clip", "toy_confidence", "clip", summary="a toy"))
    yield methods.METHODS["toy"]
    methods.METHODS.unregister("toy")
    estimators.ESTIMATORS.unregister("toy_confidence")


def test_a_new_estimator_through_the_registry_trains(toy_method, fresh_root, base_dir, tmp_path):
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    est = toy_method.build_estimator()
    out = train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, est, toy_method.objective,
                     grad_clip=0.0)
    with torch.no_grad():
        expected_w = torch.softmax(-_per_sample(a0, batch, "pair"), 0) * 6
    assert torch.allclose(out["weights"], expected_w, atol=1e-5)
    assert _sgd_step_equals(model, a0, batch, expected_w)
    # and through the entry point, by its name
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "toy", "--method", "toy"))
    record = json.loads((logs / "toy" / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(record["weights"]["mean_weight"] - 1.0) < 1e-4  # softmax x B averages to 1 in every batch
    assert json.loads((logs / "toy" / "results.json").read_text())["method"] == "toy"


def test_a_new_objective_through_the_registry_steps():
    """An objective registers like an estimator: a class, its options, one decorator; a method names it."""
    from npc.options import Option
    from npc.steps import OBJECTIVES, ClipObjective, register_objective

    @register_objective
    class Scaled(ClipObjective):
        name = "toy_scaled"
        options = (Option("factor", float, 1.0, "the CLIP loss times this"),)

        def __init__(self, factor: float = 1.0):
            self.factor = factor

        def loss(self, state, weights):
            return self.factor * super().loss(state, weights)

    try:
        m = methods.compose(methods.get_method("clip"), objective="toy_scaled", options={"factor": "0.5"})
        assert m.name == "clip[objective=toy_scaled,factor=0.5]" and m.build_objective().factor == 0.5
        model, batch = _setup()
        a0 = copy.deepcopy(model)
        train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, m.build_estimator(), m.build_objective(),
                   grad_clip=0.0)
        assert _sgd_step_equals(model, a0, batch, torch.full((6,), 0.5))
    finally:
        OBJECTIVES.unregister("toy_scaled")


def test_oracle_weight_is_the_written_out_masked_loss():
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    mask = np.array([False, True, False, True, True, False, False])  # pairs 1, 3, 4 noisy (index 6 unused)
    est = methods.get_method("oracle_weight").build_estimator()
    est.bind(estimators.RunInputs(model=model, make_optimizer=None, info=None, noise_mask=mask))
    out = train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, est, "clip", grad_clip=0.0)
    w = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    assert torch.equal(out["weights"], w)
    assert _sgd_step_equals(model, a0, batch, w)


def test_npc_pclean_is_the_pclean_weighted_loss_plus_the_bank_loss_written_out():
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    p_clean = np.array([0.9, 0.1, 0.5, 0.7, 0.2, 1.0, 0.3], dtype=np.float32)  # index 6 unused
    est = methods.get_method("npc_pclean").build_estimator()
    est.bind(estimators.RunInputs(model=model, make_optimizer=None, info=None, p_clean=p_clean))
    out = train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, est, "paper", grad_clip=0.0)
    w = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2, 1.0])
    assert torch.equal(out["weights"], w)
    assert _sgd_step_equals(model, a0, batch, w, bank=1.0)


@pytest.mark.parametrize("bank_weight", [0.5, 0.0])
def test_the_paper_objective_weighs_the_bank_loss_by_its_bank_weight_option(bank_weight):
    """``--method_opt bank_weight=W``: A's step is on mean_i(w_i l_i) + W x the bank loss, written out (the
    default 1 is the test above); the method's name and options say it, and its estimator is unchanged."""
    cfg = parse_args(["--method", "npc_pclean", "--method_opt", f"bank_weight={bank_weight}"], "npc")
    m = cfg.method.method()
    assert m.name == f"npc_pclean[bank_weight={bank_weight}]" and ("bank_weight", bank_weight) in cfg.method.options
    assert f"bank_weight={bank_weight}" in cfg.flat()["method_opt"]
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    p_clean = np.array([0.9, 0.1, 0.5, 0.7, 0.2, 1.0, 0.3], dtype=np.float32)
    est = m.build_estimator()
    est.bind(estimators.RunInputs(model=model, make_optimizer=None, info=None, p_clean=p_clean))
    train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, est, m.build_objective(), grad_clip=0.0)
    w = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2, 1.0])
    assert _sgd_step_equals(model, a0, batch, w, bank=bank_weight)
    assert not _sgd_step_equals(model, a0, batch, w, bank=1.0)


def test_bank_weight_is_an_option_of_the_paper_objective_only():
    npc = parse_args([], "npc").method
    assert ("bank_weight", 1.0) in npc.options and npc.name == "npc_paper"  # recorded with every NPC run
    assert parse_args(["--method_opt", "bank_weight=1"], "npc").method.name == "npc_paper"  # the default: no new name
    with pytest.raises(ValueError, match="--method_opt bank_weight: not an option of the siamese estimator"):
        parse_args(["--method", "npc_release", "--method_opt", "bank_weight=0.5"], "npc")  # its bank loss trains nothing
    with pytest.raises(ValueError, match=r"--method_opt bank_wieght: .*bank_weight"):
        parse_args(["--method_opt", "bank_wieght=0.5"], "npc")
    with pytest.raises(ValueError, match="--method_opt bank_weight=-1: must be >= 0"):
        parse_args(["--method_opt", "bank_weight=-1"], "npc")
    with pytest.raises(ValueError, match="--method_opt bank_weight=x: expected float"):
        parse_args(["--method_opt", "bank_weight=x"], "npc")
    # --npc_variant release drops the paper objective's option with the objective
    assert parse_args(["--method", "npc_paper", "--npc_variant", "release"], "npc").method.name == "npc_release"


def test_oracle_filter_trains_on_the_truly_clean_pairs_only(fresh_root, base_dir, tmp_path, monkeypatch):
    from npc import data, steps

    seen = []
    real = steps.train_step

    def spy(model, optimizer, batch, **kw):
        seen.append(batch["index"].clone())
        return real(model, optimizer, batch, **kw)

    monkeypatch.setattr(steps, "train_step", spy)
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "of", "--noise_ratio", "0.4",
                            "--method", "oracle_filter"))
    _, mask = data.load_train_split(fresh_root, "demo", 5, 0.4, log=lambda *_: None)
    index = torch.cat(seen).numpy()
    clean = np.nonzero(~mask)[0]
    assert not mask[index].any() and len(set(index.tolist())) == len(index)
    assert len(index) == len(clean) // 16 * 16  # every clean pair once per epoch, in whole batches of 16


def test_npc_method_by_name_runs_and_records_it(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    res = main_NPC.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "r",
                                 "--method", "npc_release", "--noise_ratio", "0.4"))
    assert res["method"] == "npc_release"
    params = (logs / "r" / "params.txt").read_text()
    assert "method.name: npc_release" in params and "method.objective: release" in params
    assert "optim.lr_schedule: staircase" in params


def test_the_docs_table_lists_every_registered_method_with_its_parts():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 6:
            rows[cells[0].strip("`")] = cells[1:]
    assert set(rows) == set(methods.METHODS)
    for name, (script, est, objective, subset, used) in rows.items():
        m = methods.METHODS[name]
        assert script == f"main_{m.script.upper()}.py" and objective == m.objective and subset == m.subset
        assert est.split()[0] == (m.estimator or "none") and used.startswith("no") == (not m.reweight)


def test_osa_is_the_authors_weighted_loss_written_out():
    from npc import osa

    model, batch = _setup()
    a0 = copy.deepcopy(model)
    est = methods.get_method("osa").build_estimator()
    est.bind(estimators.RunInputs(model=model, make_optimizer=None, info=None, batch_size=6, seed=3))
    # the shift: the mean logit of random images and token ids 0..99 under the frozen initial model
    gen = torch.Generator().manual_seed(3)
    imgs = torch.rand(6, 3, 32, 32, generator=gen)
    toks = (torch.rand(6, model.context_length, generator=gen) * 100).long()
    with torch.no_grad():
        assert abs(est.shift - float(osa.batch_logits(a0, imgs, toks).mean())) < 1e-4
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    out = train_step(model, sgd, batch, est, "clip", grad_clip=0.0)
    ref = copy.deepcopy(a0)
    pi, pt = batch["images"][batch["pair_img"]], batch["texts"][batch["pair_txt"]]
    with torch.no_grad():
        w_i2t, w_t2i = osa.osa_weights(osa.batch_logits(a0, pi, pt), est.shift)
    assert torch.allclose(out["weights"], w_i2t, atol=1e-5) and torch.allclose(w_i2t, w_t2i)
    assert float(w_i2t.max()) <= 0.25 + 1e-6 and float(w_i2t.min()) >= 0
    loss = osa.osa_loss(*osa.per_direction_ce(osa.batch_logits(ref, pi, pt)), w_i2t, w_t2i)
    grads = torch.autograd.grad(loss, list(ref.parameters()), allow_unused=True)
    for p0, p1, g in zip(a0.parameters(), model.parameters(), grads):
        assert torch.allclose(p1, p0 - (g if g is not None else 0), atol=1e-5)
    # the frozen copy does not move with the model
    assert all(torch.equal(p, q) for p, q in zip(est.frozen.parameters(), a0.parameters()))


def test_osa_run_resumes_to_the_same_weights(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    common = ["--epochs", "2", "--method", "osa", "--noise_ratio", "0.4"]
    main_CLIP.main(run_args(fresh_root, base_dir, logs, *common, "--experiments", "full"))
    main_CLIP.main(run_args(fresh_root, base_dir, logs, *common, "--experiments", "cut", "--stop_after", "1"))
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--experiments", "cut", "--resume", "latest"))
    load = lambda run: torch.load(logs / run / "checkpoints" / "latest.pt", map_location="cpu",  # noqa: E731
                                  weights_only=True)
    full, cut = load("full"), load("cut")
    assert full["osa_shift"] == cut["osa_shift"]
    assert all(torch.equal(full["state_dict"][k], cut["state_dict"][k]) for k in full["state_dict"])


@pytest.mark.parametrize("name", ["npc_paper", "npc_release", "npc_first_order"])
def test_estimate_reads_the_weights_a_step_would_use_without_training(name):
    from npc.steps import estimate
    from helpers import method_step

    model, batch = _setup()
    a0 = copy.deepcopy(model)
    est = methods.get_method(name).build_estimator()
    est.bind(estimators.RunInputs(model=model, make_optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
                                  info=None))
    out = estimate(model, batch, est)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), a0.parameters()))  # nothing trained
    # the same weights as the training step of that method computes (here with a fresh siamese of its own)
    siamese = copy.deepcopy(a0) if est.name == "siamese" else None
    sopt = torch.optim.AdamW(siamese.parameters(), lr=1e-3) if siamese is not None else None
    ref = method_step(a0, siamese, torch.optim.SGD(a0.parameters(), lr=0.0), sopt, batch,
                   variant=methods.get_method(name).objective, estimator=est.name)
    assert torch.allclose(out["weights"], ref["weights"], atol=1e-6)
    assert torch.allclose(out["bank_losses"], ref["bank_losses"], atol=1e-6)


def test_no_module_falls_back_on_a_missing_estimator():
    """"No estimator" is the NoWeights object: nothing in the package checks an estimator for None or reads
    it through getattr (a new member of WeightEstimator is declared there, with its default)."""
    import re
    from pathlib import Path

    package = Path(estimators.__file__).parent
    pattern = re.compile(r"getattr\([^,]*\b(estimator|est)\b[^,]*,|\b(\w+\.)estimator is (not )?None")
    found = [f"{p.name}: {m.group(0)}" for p in package.rglob("*.py") for m in pattern.finditer(p.read_text())]
    assert not found, found
    steps_text = (package / "steps.py").read_text()
    assert "estimator is None" not in steps_text and "estimator is not None" not in steps_text
