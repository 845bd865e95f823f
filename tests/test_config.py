"""The house's rules, as tests: the run configuration is read-only after setup, npc/ has no import cycle,
an estimator's options are declared once and reach the command line, the run's records and its resume."""
import ast
import json
import math
from pathlib import Path

import pytest
import torch

import main_CLIP
from helpers import run_args
from npc import estimators, methods
from npc.config import RunConfig
from npc.distributed import DistInfo
from npc.params import ConfigError, parse_args
from npc.step_state import StepState

NPC_DIR = Path(__file__).resolve().parents[1] / "npc"


def test_the_run_configuration_is_typed_frozen_sections_and_replace_derives_another():
    import dataclasses

    cfg = parse_args(["--lr", "0.01"], "clip")
    assert isinstance(cfg, RunConfig) and cfg.optim.lr == 0.01 and cfg.explicit == {"lr"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim = None
    assert not hasattr(cfg, "lr")  # a field is where its section declares it, nowhere else
    other = cfg.replace_flags(lr=0.1, noise_ratio=0.2)
    assert (other.optim.lr, other.data.noise_ratio, cfg.optim.lr) == (0.1, 0.2, 0.01) and isinstance(other, RunConfig)
    with pytest.raises(AttributeError, match="no no_such_flag"):
        cfg.replace_flags(no_such_flag=1)
    assert cfg.flat()["lr"] == 0.01 and "explicit" not in cfg.flat()
    # every section's field is declared with its type
    for section in (cfg.data, cfg.model, cfg.bank, cfg.optim, cfg.evaluation, cfg.run, cfg.method):
        assert all(f.type for f in dataclasses.fields(section))


def test_the_sections_round_trip_through_a_checkpoints_record_and_earlier_flags_still_read():
    from npc.config import flags_of_saved

    cfg = parse_args(["--method", "small_loss", "--method_opt", "tau=0.3", "--lr", "0.01"], "clip")
    flat = flags_of_saved({"config": json.loads(json.dumps(cfg.sections()))})
    assert flat == {**cfg.flat(), "method_opt": ("ramp_epochs=2", "tau=0.3"), "script": "clip"}
    rebuilt = cfg.replace_flags(**{k: v for k, v in flat.items() if k != "script"})
    assert rebuilt == cfg
    assert flags_of_saved({"args": {"lr": 0.5}}) == {"lr": 0.5}  # a checkpoint of an earlier version


def _npc_imports(path: Path):
    """Every npc module ``path`` imports, at module level or inside functions."""
    names = {p.stem for p in NPC_DIR.glob("*.py")} | {p.name for p in NPC_DIR.iterdir() if p.is_dir()}
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "npc":
            parts = node.module.split(".")
            out.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names if a.name in names])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("npc."))
    return out - {path.stem}


def test_npc_has_no_import_cycle():
    graph = {p.stem: _npc_imports(p) for p in NPC_DIR.glob("*.py") if p.stem != "__init__"}
    seen, on_path = set(), []

    def visit(v):
        if v in on_path:
            raise AssertionError(f"import cycle: {' -> '.join(on_path[on_path.index(v):] + [v])}")
        if v in seen or v not in graph:
            return
        on_path.append(v)
        for w in sorted(graph[v]):
            visit(w)
        on_path.pop()
        seen.add(v)

    for v in sorted(graph):
        visit(v)
    assert "steps" not in graph["estimators"] and "estimators" not in graph["steps"]


def test_estimator_options_come_from_the_command_line_typed_and_checked():
    cfg = parse_args(["--method", "small_loss", "--method_opt", "tau=0.3"], "clip")
    assert cfg.method.name == "small_loss[tau=0.3]" and cfg.method.options == (("ramp_epochs", 2), ("tau", 0.3))
    assert cfg.method.options_text == ("ramp_epochs=2", "tau=0.3")
    est = cfg.method.method().build_estimator()
    assert (est.tau, est.ramp_epochs) == (0.3, 2)
    # the registered method's own options name it
    assert parse_args(["--method", "npc_release"], "npc").method.options_text == ("grad_scale=4.0", "impl=efficient",
                                                                                   "state=persistent")
    assert parse_args(["--method_opt", "state=fresh"], "npc").method.name == "npc_paper[state=fresh]"
    with pytest.raises(ValueError, match="--method_opt taux: not an option of the small_loss estimator"):
        parse_args(["--method", "small_loss", "--method_opt", "taux=0.3"], "clip")
    with pytest.raises(ValueError, match="--method_opt tau=x: expected float"):
        parse_args(["--method", "small_loss", "--method_opt", "tau=x"], "clip")
    with pytest.raises(ValueError, match="--method_opt impl=fast: one of efficient, naive"):
        parse_args(["--method_opt", "impl=fast"], "npc")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_args(["--method", "small_loss", "--method_opt", "tau"], "clip")
    with pytest.raises(ValueError, match="no weight estimator, and the clip objective has no options"):
        parse_args(["--method_opt", "tau=0.3"], "clip")


def _small_loss_state(losses: torch.Tensor) -> StepState:
    return StepState(model=None, batch={}, info=DistInfo(), autocast=None, params=[], losses={"pair": losses})


def test_small_loss_keeps_the_smallest_losses_by_its_written_out_rule():
    est = methods.get_method("small_loss").build_estimator()   # tau 0.5, ramp over 2 epochs
    losses = torch.tensor([3.0, 0.5, 2.0, 0.1, 5.0, 1.0, 4.0, 0.7])
    n = len(losses)
    for epoch, tau, ramp in ((0, 0.5, 2), (1, 0.5, 2), (2, 0.5, 2), (4, 0.5, 2), (1, 0.3, 4)):
        est.tau, est.ramp_epochs = tau, ramp
        est.on_epoch(epoch, 5)
        rate = 1 - tau * min(epoch / ramp, 1)                 # Co-teaching's R(T)
        kept = math.ceil(rate * n)
        expected = torch.zeros(n)
        expected[torch.argsort(losses)[:kept]] = n / kept      # the kept pairs' mean loss
        w = est.weights(_small_loss_state(losses))
        assert torch.equal(w, expected), (epoch, tau, ramp)
        assert math.isclose(float((w * losses).mean()), float(losses.sort().values[:kept].mean()), rel_tol=1e-6)


def test_options_and_method_are_recorded_and_checked_on_resume(demo_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(demo_root, base_dir, logs, "--experiments", "sl", "--epochs", "2", "--stop_after", "1",
                            "--method", "small_loss", "--method_opt", "tau=0.25", "--method_opt", "ramp_epochs=0"))
    params = dict(line.split(": ", 1) for line in (logs / "sl" / "params.txt").read_text().splitlines())
    name = "small_loss[ramp_epochs=0,tau=0.25]"
    assert params["method.name"] == name and params["method.options"].split(",") == ["ramp_epochs=0", "tau=0.25"]
    ckpt = torch.load(logs / "sl" / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["config"]["method"]["options"] == {"ramp_epochs": 0, "tau": 0.25}
    record = json.loads((logs / "sl" / "metrics.jsonl").read_text().splitlines()[0])
    assert "weights" in record and record["weights"]["frac_weight_below_1"] == pytest.approx(0.25, abs=0.05)
    with pytest.raises(ConfigError, match=r"--method_opt .*tau=0.5.* \(the run has .*tau=0.25"):
        main_CLIP.main(run_args(demo_root, base_dir, logs, "--experiments", "sl", "--resume", "latest",
                                "--method", "small_loss", "--method_opt", "tau=0.5", "--method_opt", "ramp_epochs=0"))
    main_CLIP.main(run_args(demo_root, base_dir, logs, "--experiments", "sl", "--resume", "latest"))
    params = dict(line.split(": ", 1) for line in (logs / "sl" / "params.txt").read_text().splitlines())
    assert params["method.name"] == name
    assert len((logs / "sl" / "metrics.jsonl").read_text().splitlines()) == 2


def test_an_estimator_with_an_option_is_one_class_and_one_registry_line():
    @estimators.register_estimator
    class Confidence(estimators.WeightEstimator):
        name = "toy_temperature"
        options = (estimators.Option("temperature", float, 1.0, "softmax temperature"),)

        def __init__(self, temperature: float = 1.0):
            self.temperature = temperature

        def weights(self, state):
            pair = state.losses["pair"].detach()
            return torch.softmax(-pair / self.temperature, 0) * len(pair)

    methods.register_method(methods.Method("toy_t", "clip", "toy_temperature", "clip", summary="a toy"))
    try:
        cfg = parse_args(["--method", "toy_t", "--method_opt", "temperature=0.5"], "clip")
        assert cfg.method.name == "toy_t[temperature=0.5]" and cfg.method.method().build_estimator().temperature == 0.5
    finally:
        del methods.METHODS["toy_t"], estimators.ESTIMATORS["toy_temperature"]


def test_one_line_errors_are_the_projects_and_torchs_own_errors_keep_their_traceback(capsys):
    from npc.cli import cli
    from npc.data import DataError

    def user_problem(argv):
        raise DataError("train.csv, line 3: cannot read image a.jpg")

    assert cli(user_problem, []) == 1
    assert capsys.readouterr().err.strip() == "error: train.csv, line 3: cannot read image a.jpg"

    def torch_problem(argv):
        torch.zeros(2, 3) @ torch.zeros(2, 3)   # a shape error: a bug, not the user's

    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        cli(torch_problem, [])


def test_the_flags_of_earlier_versions_set_the_siamese_options_only_for_the_siamese_estimator():
    from npc.method_flags import saved_method_fields

    # a first-order run records --npc_impl / --siamese_state too (its checkpoint's flags, or a command line)
    assert parse_args(["--npc_estimator", "first_order", "--npc_impl", "naive"], "npc").method.name == "npc_first_order"
    saved = {"method": "npc_first_order", "npc_variant": "paper", "npc_impl": "efficient",
             "siamese_state": "persistent", "npc_weights": "on", "npc_estimator": "first_order"}
    assert saved_method_fields(saved)["method"] == "npc_first_order"
    old = {"method": "npc", "npc_variant": "release", "npc_impl": "efficient", "siamese_state": "fresh",
           "npc_weights": "on", "npc_estimator": "siamese"}
    assert saved_method_fields(old)["method_opt"] == ("grad_scale=4.0", "impl=efficient", "state=fresh")
    assert saved_method_fields({"method": "clip", "clean_prior": "pclean_weight"})["method"] == "pclean_weight"


def _python_files():
    repo = NPC_DIR.parent
    return [p for p in [*NPC_DIR.rglob("*.py"), *repo.glob("*.py")] if "__pycache__" not in p.parts]


def test_no_format_is_compared_by_name_outside_the_data_sources():
    from npc.sources import FILE_DATASETS, FORMAT_CHOICES

    names = set(FORMAT_CHOICES) | set(FILE_DATASETS)
    data_words = {"dataset", "data_format", "format"}

    def about_data(node) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr in data_words
        if isinstance(node, ast.Name):
            return node.id in data_words
        if isinstance(node, ast.Subscript):
            key = node.slice
            return isinstance(key, ast.Constant) and key.value in data_words
        return False

    found = []
    for path in _python_files():
        if (NPC_DIR / "sources") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                consts = [s.value for s in sides if isinstance(s, ast.Constant)]
                consts += [e.value for s in sides if isinstance(s, (ast.Tuple, ast.List, ast.Set))
                           for e in s.elts if isinstance(e, ast.Constant)]
                if any(c in names for c in consts) and any(about_data(s) for s in sides):
                    found.append(f"{path.name}:{node.lineno}")
    assert found == [], "a data format compared by name outside npc/sources"


def test_no_flag_is_read_with_a_default_from_a_configuration():
    # ("model" is left out: the name is the torch module as often as its section)
    holders = {"cfg", "args", "config", "data", "optim", "run", "bank", "evaluation", "paths"}
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) == 3):
                target = node.args[0]
                name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
                if name in holders:
                    found.append(f"{path.name}:{node.lineno}")
    assert found == [], "getattr with a default on a configuration"
