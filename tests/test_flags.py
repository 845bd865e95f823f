"""Each flag is declared once (npc/flags.py): every script's parser and every configuration section come from
the declarations, no default or allowed range is written a second time, a section built in code is checked as
the command line is, and a method is named on the command line as records name it."""
import argparse
import ast
from pathlib import Path

import pytest

from npc import config
from npc.errors import ConfigError
from npc.flags import FLAGS, SCRIPTS, TRAIN, dataset_defaults
from npc.params import build_parser, parse_args

ROOT = Path(__file__).resolve().parents[1]
FLAG_NAMES = {f.name for f in FLAGS}
# The scripts that take a run's flags, and the parser each one asks npc.params for.
SCRIPT_PARSERS = {"main_NPC.py": "npc", "main_CLIP.py": "clip", "get_memorybank.py": "bank",
                  "find_noisy_pairs.py": "report", "check_data.py": "check", "construct_noise.py": "noise"}


def _sources():
    """npc/ and the scripts above, except the declarations themselves."""
    files = [p for p in (ROOT / "npc").rglob("*.py") if p.name != "flags.py"]
    return files + [ROOT / name for name in SCRIPT_PARSERS]


def _flag_key(node):
    """The flag a node names: ``v["lr"]`` or ``cfg.optim.lr``."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in FLAG_NAMES:
        return node.slice.value
    if isinstance(node, ast.Attribute) and node.attr in FLAG_NAMES:
        return node.attr
    return None


def _declared_values(name):
    flag = next(f for f in FLAGS if f.name == name)
    values = [flag.default, *(flag.real.values() if isinstance(flag.real, dict) else [flag.real])]
    return [v for v in values if v not in (None, False, True, 0, "")]


def test_no_default_and_no_allowed_range_is_written_twice():
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "add_argument":
                if where != Path("npc/params.py"):  # the generator
                    found.append(f"{where}:{node.lineno}: add_argument outside the generator")
                for kw in node.keywords:
                    if kw.arg in ("default", "choices") and isinstance(kw.value, (ast.Constant, ast.Tuple, ast.List)) \
                            and not (isinstance(kw.value, ast.Constant) and kw.value.value is None):
                        found.append(f"{where}:{node.lineno}: {kw.arg}= written")
            if isinstance(node, ast.Dict):  # a table of flags' defaults (the per-dataset defaults were)
                for k, v in zip(node.keys, node.values):
                    if isinstance(k, ast.Constant) and k.value in FLAG_NAMES and isinstance(v, ast.Constant) \
                            and v.value in _declared_values(k.value):
                        found.append(f"{where}:{node.lineno}: the default of --{k.value} written again")
            decorators = [getattr(getattr(d, "func", None), "id", "") for d in getattr(node, "decorator_list", ())]
            if isinstance(node, ast.ClassDef) and "_section" in decorators:
                for item in node.body:  # a section's field is its flag's declaration
                    if isinstance(item, ast.AnnAssign) and item.target.id in FLAG_NAMES:
                        found.append(f"{where}:{item.lineno}: field {item.target.id} declared again")
            if isinstance(node, ast.If) and isinstance(node.test, (ast.Compare, ast.UnaryOp)):
                test = node.test.operand if isinstance(node.test, ast.UnaryOp) else node.test
                raises = any(isinstance(n, ast.Raise) and "ConfigError" in ast.dump(n)
                             for n in ast.walk(ast.Module(body=node.body, type_ignores=[])))
                if isinstance(test, ast.Compare) and raises:
                    sides = [test.left, *test.comparators]
                    named = [_flag_key(s) for s in sides if _flag_key(s)]
                    if named and any(isinstance(s, ast.Constant) and isinstance(s.value, (int, float))
                                     and not isinstance(s.value, bool) for s in sides):
                        found.append(f"{where}:{node.lineno}: the range of --{named[0]} checked again")
    assert not found, "\n".join(found)


def test_every_scripts_parser_comes_from_the_declarations():
    for name, script in SCRIPT_PARSERS.items():
        text = (ROOT / name).read_text(encoding="utf-8")
        assert "ArgumentParser(" not in text and "add_argument(" not in text, name
        assert (f'parse_args(argv, "{script}")' in text or f'parse(argv, "{script}")' in text
                or f'build_parser("{script}"' in text), name
    for script in SCRIPTS:
        actions = {}
        for a in build_parser(script)._actions:  # a flag's first action; its --flag-name alias comes after it
            if a.dest != "help":
                actions.setdefault(a.dest, a)
        assert set(actions) == {f.name for f in FLAGS if script in f.accepted}, script
        for f in FLAGS:
            if script not in f.accepted:
                continue
            a = actions[f.name]
            assert a.option_strings[:len(f.spellings)] == list(f.spellings)
            listed = a.help != argparse.SUPPRESS
            assert listed == (script in TRAIN or script in f.scripts), (script, f.name)
            if f.choice_values() and f.convert is None and f.kind != "method":
                assert tuple(a.choices) == tuple(f.choice_values())
            if f.kind not in (bool, list, "method") and f.real is None and not f.settled:
                assert a.default == f.default, (script, f.name)


def test_sections_take_their_fields_and_defaults_from_the_declarations():
    cfg = parse_args([], "npc")
    for name, cls in config.SECTIONS.items():
        declared = [f for f in FLAGS if f.section == name]
        fields = config.dataclasses.fields(cls)
        assert [f.name for f in fields] == [f.name for f in declared]
        assert all(field.default == flag.default for field, flag in zip(fields, declared))
    # the demo's defaults are the declarations' own, a real dataset's the overlay
    assert cfg.optim.lr == dataset_defaults(False, "npc")["lr"] == config.OptimConfig().lr
    coco = parse_args(["--dataset", "coco"], "clip")
    assert (coco.optim.lr, coco.optim.grad_clip, coco.data.noise_ratio) == (5e-7, 0.0, 0)
    assert coco.bank.bank_batch_size == coco.optim.batch_size == 256


@pytest.mark.parametrize("section,flag,text,value", [
    ("optim", "batch_size", "0", 0), ("optim", "lr", "0", 0.0), ("bank", "clean_threshold", "1.5", 1.5),
    ("data", "noise_ratio", "1", 1), ("evaluation", "eval_precision", "fp8", "fp8"), ("run", "keep_checkpoints", "-2", -2),
    ("data", "dataset", "imagenet", "imagenet"), ("data", "csv_separator", "ab", "ab"), ("data", "num_anns", "0", 0),
])
def test_a_section_built_in_code_is_checked_as_the_flag_is(section, flag, text, value, capsys):
    with pytest.raises(SystemExit):
        parse_args([f"--{flag}", text], "npc")
    err = capsys.readouterr().err
    with pytest.raises(ConfigError) as e:
        config.SECTIONS[section](**{flag: value})
    message = str(e.value)
    assert message.startswith(f"--{flag} ")
    assert f"argument --{flag}: {message.split(': ', 1)[1]}" in " ".join(err.split())
    with pytest.raises(ConfigError, match=f"--{flag} "):
        parse_args([], "npc").replace_flags(**{flag: value})


def test_a_composed_method_name_is_accepted_wherever_a_method_is_named():
    composed = parse_args(["--method", "npc_paper[bank_weight=0.5]"], "npc").method
    assert composed == parse_args(["--method_opt", "bank_weight=0.5"], "npc").method
    assert composed.name == "npc_paper[bank_weight=0.5]" and dict(composed.options)["bank_weight"] == 0.5
    # the name a run records parses back to the same method, and --method_opt wins over the name's option
    clip = parse_args(["--method", "small_loss[tau=0.3]"], "clip").method
    assert clip.name == "small_loss[tau=0.3]" and dict(clip.options)["tau"] == 0.3
    assert dict(parse_args(["--method", "small_loss[tau=0.3]", "--method_opt", "tau=0.2"], "clip").method.options)[
        "tau"] == 0.2
    parts = parse_args(["--method", "npc_paper[estimator=first_order]"], "npc").method
    assert parts.name == "npc_first_order"
    with pytest.raises(SystemExit):
        parse_args(["--method", "small_loss[tau=0.3]"], "npc")  # another script's method
    with pytest.raises(ConfigError, match="bank_wieght"):
        parse_args(["--method", "npc_paper[bank_wieght=0.5]"], "npc")


def test_method_opt_has_one_parse_and_one_format():
    from npc.options import options_text, parse_method_opts

    assert parse_method_opts(["tau=0.3", " ramp_epochs = 2", "tau=0.4"]) == {"tau": "0.4", "ramp_epochs": "2"}
    assert options_text({"tau": 0.3, "ramp_epochs": 2}) == ("ramp_epochs=2", "tau=0.3")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_method_opts(["tau"])
    for path in _sources():  # nowhere else is "k=v" split or joined for options (a composed name's are methods.py's)
        text = path.read_text(encoding="utf-8")
        if path.name not in ("options.py", "methods.py"):
            assert 'split("=", 1) for item in method_opt' not in text and 'f"{k}={v}" for k, v in sorted(' not in text, \
                path
