"""The throughput benchmark runs end to end and reports what the docs promise (tiny settings); the
negative-impact study's oracle is what it says."""
import argparse
import contextlib
import copy
import io
import json

import pytest
import torch

from bench import throughput

from npc.errors import ConfigError
from npc.model import create_model
from npc.negative_impact import phase_timings
from helpers import clip_step, method_step


def test_throughput_json_has_the_documented_fields():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        throughput.main(["--model", "npc-micro", "--batch", "8", "--bank_self", "0.5", "--rounds", "1",
                         "--steps", "1", "--warmup", "1", "--no_loading", "--device", "cpu", "--json"])
    out = json.loads(buf.getvalue())
    for k in ("clip", "npc_naive", "npc", "npc_release"):
        assert out[f"{k}_pairs_per_s"] > 0
    assert out["device"].startswith("cpu") and out["npc_over_clip"] > 0 and out["text_speedup"] > 0
    assert 10 <= out["text_positions_used"] <= out["text_context"] == 24  # synthetic captions: 8+ words
    assert set(out["phases_ms"]["clip"]) == {"clip.forward", "clip.update"}
    assert {"npc.forward_A", "npc.backward_siamese", "npc.forward_siamese", "npc.update_A"} <= set(out["phases_ms"]["npc"])


def test_phase_timings_collect_only_inside_the_context():
    torch.manual_seed(0)
    model, _, _ = create_model("npc-micro", "none")
    batch = throughput.synthetic_batch(4, 32, model.context_length, 0.5, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clip_step(model, opt, batch)  # outside: nothing collected, nothing fails
    with phase_timings() as times:
        clip_step(model, opt, batch)
        clip_step(model, opt, batch)
    assert sorted(times) == ["clip.forward", "clip.update"] and all(len(v) == 2 for v in times.values())
    siamese = copy.deepcopy(model)
    with phase_timings() as times:
        method_step(model, siamese, opt, torch.optim.AdamW(siamese.parameters(), lr=1e-4), batch)
    assert "npc.backward_siamese" in times and "clip.forward" not in times


def test_paper_size_loading_reports_both_paths():
    out = throughput.time_loading_paper_size(argparse.Namespace(load_images=4))
    assert out["load_pil_224_images_per_s_1proc"] > 0 and out["load_cache_224_images_per_s_1proc"] > 0
    assert 100 < out["paper_size_jpeg_kib"] < 250  # near MSCOCO's mean JPEG size, as documented


def test_eval_speed_reports_both_paths_with_the_same_metrics():
    from bench import eval_speed

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        eval_speed.main(["--model", "npc-micro", "--images", "12", "--batch", "8", "--workers", "0",
                         "--device", "cpu", "--json"])
    out = json.loads(buf.getvalue())
    assert out["eval_jpeg_s"] > 0 and out["eval_cache_s"] > 0 and out["captions"] == 60
    assert out["load_jpeg_images_per_s_0w"] > 0 and out["load_cache_images_per_s_0w"] > 0
    # the cache holds the same pixels the JPEG path feeds the model: identical features and table
    assert out["cache_max_abs_feature_diff"] == 0.0 and out["same_metrics"] is True
    assert out["command"].startswith("python bench/eval_speed.py") and "/work" not in json.dumps(out)
    assert out["torch"] == torch.__version__ and out["git_commit"]


def test_study_oracle_is_the_leave_one_out_difference_written_out():
    from bench.negative_impact_study import loo_oracle
    from npc.losses import clip_loss_per_sample
    from helpers import _per_sample, _setup

    model, batch = _setup()
    own = loo_oracle(model, batch, {"sgd": ("sgd", 0.5, None)}, n_pairs=3)["sgd"]
    assert own.shape == (3,)
    with torch.no_grad():
        before = torch.stack([_per_sample(model, batch, g) for g in ("bankI", "bankT")])

    def after(keep):  # bank losses after one SGD step on the mean loss of the pairs ``keep``
        m = copy.deepcopy(model)
        img, txt = (f[keep] for f in _features(m, batch))
        clip_loss_per_sample(img, txt, m.logit_scale.exp()).mean().backward()
        with torch.no_grad():
            for p in m.parameters():
                if p.grad is not None:
                    p -= 0.5 * p.grad
            return torch.stack([_per_sample(m, batch, g) for g in ("bankI", "bankT")])

    full = after(torch.arange(6))
    for i in range(3):
        without = after(torch.tensor([j for j in range(6) if j != i]))
        expected = ((full[:, i] - without[:, i]) / before[:, i]).sum()
        assert torch.allclose(own[i], expected, atol=1e-5)


def _features(model, batch):
    from npc.model import encode

    return encode(model, batch["images"][batch["pair_img"]], batch["texts"][batch["pair_txt"]])


def test_benchmark_rows_with_options_run_as_the_method_names_them():
    """A row ``npc_paper[bank_weight=0.5]`` runs main_NPC.py with that method and option, and the run's own
    configuration gives it the same name (the key its records are found by)."""
    from bench import noisy_benchmark as nb
    from npc.params import parse_args

    assert nb.split_methods("clip,npc_paper[bank_weight=0.5],small_loss[ramp_epochs=1,tau=0.3]") == [
        "clip", "npc_paper[bank_weight=0.5]", "small_loss[ramp_epochs=1,tau=0.3]"]
    for row in ("npc_paper[bank_weight=0.5]", "small_loss[ramp_epochs=1,tau=0.3]", "npc_release"):
        nb.check_method(row)
        cmd = nb.command_for(row, "0.4", 1, epochs=5, lr=2e-4, logs=nb.REPO / "bench" / "runs", exp="x")
        script = cmd[1]
        flags = cmd[2:]
        assert script == ("main_NPC.py" if row.startswith("npc") else "main_CLIP.py")
        assert parse_args(flags, script[len("main_"):-len(".py")].lower()).method.name == row
    with pytest.raises(ConfigError, match="the run names this method npc_paper\\[bank_weight=0.5\\]"):
        nb.check_method("npc_paper[bank_weight=0.50]")
    with pytest.raises(ConfigError, match="--methods npc_paper\\[bank_wieght=0.5\\]: --method_opt bank_wieght"):
        nb.check_method("npc_paper[bank_wieght=0.5]")  # one line naming the row, no traceback


def test_benchmark_grid_records_every_run_once_with_concurrent_jobs(tmp_path, monkeypatch):
    """--jobs 2: every run of the grid is recorded once, by the one writer, and a second call runs nothing."""
    import json
    import threading

    from bench import noisy_benchmark as nb

    calls, lock = [], threading.Lock()

    def fake_run(method, noise, seed, *, epochs, lr, logs, tag, jobs=1):
        with lock:
            calls.append((method, noise, seed, jobs))
        return {"method": method, "noise_ratio": float(noise), "seed": seed, "epochs": epochs, "lr": lr,
                **{k: 10.0 for k in nb.RECALLS}, "rsum": 100.0 + seed, "seconds": 1.0}

    monkeypatch.setattr(nb, "run_one", fake_run)
    out = tmp_path / "records.json"
    methods = ["clip", "npc_paper[bank_weight=0.5]"]
    nb.run_grid(methods, ["0.4", "0.6"], [0, 1], epochs=5, lrs={"clip": 2e-4, "npc": 1e-4}, out=out, logs=tmp_path, tag="t",
                jobs=2)
    records = json.loads(out.read_text())
    assert len(records) == len(calls) == 8 and {c[3] for c in calls} == {2}
    assert len({nb.key(r) for r in records}) == 8
    assert {r["lr"] for r in records if r["method"] == "clip"} == {2e-4}
    assert {r["lr"] for r in records if r["method"] != "clip"} == {1e-4}  # the lr of its base's family
    nb.run_grid(methods, ["0.4", "0.6"], [0, 1], epochs=5, lrs={"clip": 2e-4, "npc": 1e-4}, out=out, logs=tmp_path, tag="t",
                jobs=2)
    assert len(calls) == 8 and len(json.loads(out.read_text())) == 8
    base_rows = [dict(r, method="npc_paper") for r in records if r["method"] == "clip"]
    table = nb.render(records + base_rows, tmp_path / "t.md", tmp_path / "t.png")
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]]
    assert rows == ["clip", "npc_paper", "npc_paper[bank_weight=0.5]"] * 2  # per noise; a composition after its base


def test_the_attempts_choice_follows_its_stated_rule():
    """The choice reads dev numbers only and applies the rule docs/studies/benchmark.md states."""
    from bench.choose_on_dev import choose

    ref = {0.4: 314.0, 0.6: 312.0}
    devs = {"a": {0.4: 315.0, 0.6: 310.0}, "b": {0.4: 313.0, 0.6: 318.0}}
    assert choose(["a", "b"], ref, devs) == "a"  # only a keeps 40%: the better 60% of b does not count
    devs["b"][0.4] = 316.0
    assert choose(["a", "b"], ref, devs) == "b"  # both pass: the higher at 60%
    devs["a"][0.4] = devs["b"][0.4] = 300.0
    assert choose(["a", "b"], ref, devs) == "b"  # none passes: the higher at 60%


def test_a_benchmark_record_names_the_thread_count_its_run_used():
    """--jobs runs its subprocesses with OMP_NUM_THREADS=1: their records must say 1 thread, whatever this
    process has (bench/spot_check.py reruns a record with the count its device field names)."""
    import torch

    from bench import noisy_benchmark as nb

    if torch.cuda.is_available():
        pytest.skip("the thread count is a CPU record's")
    assert nb.run_environment({"OMP_NUM_THREADS": "1"})["device"].startswith("cpu (1 threads")
    assert nb.run_environment({"OMP_NUM_THREADS": "3"})["device"].startswith("cpu (3 threads")
    assert nb.run_environment({})["device"].startswith(f"cpu ({torch.get_num_threads()} threads")


# ----------------------------------------------------------------------------- the runner's faults (issue 41)
# The runner is run as it is used: a real process (bench/noisy_benchmark.py's main under npc.cli), starting real
# child processes that take the run folder's lock as a training does, receiving real signals. Only the child's
# script is replaced (a training takes minutes): FAKE_TRAIN writes the files a run writes (results.json,
# metrics.jsonl), after FAKE_SECONDS (per method), fails with the one-line error of a training for the methods in
# FAKE_FAIL, and notes its start and pid under FAKE_STARTS.

FAKE_TRAIN = '''
import argparse, json, os, sys, time
from pathlib import Path
from npc.cli import cli
from npc.errors import ConfigError
from npc.locks import file_lock

def main(argv):
    p = argparse.ArgumentParser()
    for flag in ("--logs", "--experiments", "--method", "--noise_ratio", "--seed"):
        p.add_argument(flag)
    a, _ = p.parse_known_args(argv)
    method = a.method or "base"
    run = Path(a.logs) / a.experiments
    with file_lock(run / ".lock", f"the run folder {run}", wait=False):
        with open(Path(os.environ["FAKE_STARTS"]) / "starts.txt", "a") as f:
            f.write(f"{a.experiments} {os.getpid()}\\n")
        if method in os.environ.get("FAKE_FAIL", "").split(","):
            raise ConfigError(f"--noise_ratio {a.noise_ratio}: the fake training of {method} fails")
        time.sleep(json.loads(os.environ.get("FAKE_SECONDS", "{}")).get(method, 0.0))
        metrics = {r: 10.0 for r in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")}
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "dev": {"rsum": 60.0}}) + "\\n")
        (run / "results.json").write_text(json.dumps({"results": {"test": {**metrics, "rsum": 60.0 + int(a.seed)}}}))

sys.exit(cli(main, sys.argv[1:]))
'''

DRIVER = '''
import os, sys
sys.path.insert(0, "bench")
import noisy_benchmark as nb
from npc.cli import cli

real = nb.command_for
nb.command_for = lambda *a, **k: [sys.executable, os.environ["FAKE_TRAIN"], *real(*a, **k)[2:]]
nb.STOP_GRACE_S = 20.0
sys.exit(cli(nb.main, sys.argv[1:]))
'''


class Bench:
    """The runner with the fake training, in ``tmp``: its records ``out``, its run folders under ``logs``."""

    def __init__(self, tmp):
        from bench import noisy_benchmark as nb

        self.repo, self.tmp = nb.REPO, tmp
        self.out, self.logs = tmp / "records.json", tmp / "runs"
        (tmp / "fake_train.py").write_text(FAKE_TRAIN)
        (tmp / "driver.py").write_text(DRIVER)

    def env(self, fail=(), seconds=None) -> dict:
        import os

        return {**os.environ, "PYTHONPATH": str(self.repo), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "FAKE_TRAIN": str(self.tmp / "fake_train.py"), "FAKE_STARTS": str(self.tmp),
                "FAKE_FAIL": ",".join(fail), "FAKE_SECONDS": json.dumps(seconds or {})}

    def start(self, *args, fail=(), seconds=None):
        import subprocess
        import sys

        cmd = [sys.executable, str(self.tmp / "driver.py"), "--out", str(self.out), "--logs", str(self.logs), *args]
        # a session of its own: the runner and what it starts, as a terminal's foreground job
        return subprocess.Popen(cmd, cwd=self.repo, env=self.env(fail, seconds), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def run(self, *args, fail=(), seconds=None):
        proc = self.start(*args, fail=fail, seconds=seconds)
        stdout, stderr = proc.communicate(timeout=300)
        return proc.returncode, stdout, stderr

    def starts(self) -> list:
        path = self.tmp / "starts.txt"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def wait_started(self, exp: str, timeout: float = 120.0) -> int:
        import time

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            found = [int(pid) for e, pid in self.starts() if e == exp]
            if found:
                return found[-1]
            time.sleep(0.1)
        raise AssertionError(f"{exp} never started")

    def records(self) -> list:
        return json.loads(self.out.read_text()) if self.out.exists() else []


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped by its parent yet) is no longer running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 30.0) -> bool:
    import time

    t0 = time.monotonic()
    while _alive(pid) and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    return not _alive(pid)


def _one_line_error(stderr: str) -> list:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.strip()]


def test_a_cut_records_file_is_one_line_naming_it(tmp_path):
    """A records file cut to 100 bytes: one line naming the file (not a JSONDecodeError traceback); so is a
    file that is not a list of records. Nothing is run, and the file is left as it was."""
    from bench import noisy_benchmark as nb
    from npc.errors import BadFileError

    whole = (nb.RESULTS / "noisy_benchmark.json").read_bytes()
    bench = Bench(tmp_path)
    bench.out.write_bytes(whole[:100])
    with pytest.raises(BadFileError, match="records.json is not a whole JSON file of benchmark records"):
        nb.load(bench.out)
    code, _, stderr = bench.run("--noise", "0.4", "--seeds", "0", "--methods", "clip")
    lines = _one_line_error(stderr)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and str(bench.out) in lines[0]
    assert bench.out.read_bytes() == whole[:100] and bench.starts() == []
    bench.out.write_text(json.dumps({"method": "clip"}))
    with pytest.raises(BadFileError, match="holds a JSON dict, not the list"):
        nb.load(bench.out)
    bench.out.write_text(json.dumps([{"method": "clip", "seed": 0}]))
    with pytest.raises(BadFileError, match="item 0 is not a benchmark record \\(no noise_ratio, epochs\\)"):
        nb.load(bench.out)


@pytest.mark.parametrize("args, flag, says", [
    (["--noise", "abc"], "argument --noise", "'abc' is not a number"),
    (["--noise", "0.4,1.5"], "argument --noise", "1.5 is not a noise ratio in [0, 1)"),
    (["--noise", "0.4,0.40"], "argument --noise", "a value given twice"),
    (["--seeds", "x"], "argument --seeds", "'x' is not a whole number"),
    (["--seeds", "0,"], "argument --seeds", "an empty item"),
    (["--search", "--lrs", "abc"], "argument --lrs", "'abc' is not a number"),
    (["--search", "--lrs", "0"], "argument --lrs", "0 is not a learning rate"),
    (["--jobs", "0"], "argument --jobs", "0: must be 1 or more"),
    (["--jobs", "-2"], "argument --jobs", "-2: must be 1 or more"),
    (["--epochs", "0"], "argument --epochs", "0: must be 1 or more"),
    (["--methods", ""], "--methods", "no method given"),
    (["--methods", ","], "--methods", "no method given"),
    (["--out", "records.md"], "--out records.md", "a .json file"),
    (["--render", "--jobs", "2"], "--render", "--jobs not used"),
    (["--lrs", "1e-4"], "--lrs", "only --search uses them"),
    (["--quick", "--noise", "0.4"], "--quick", "--noise not used"),
    (["--search", "--render"], "--render", "--search not used"),
    (["--search", "--out", "x.json"], "--search", "--out not used"),
])
def test_benchmark_flags_that_make_no_sense_are_argparse_errors(args, flag, says, capsys):
    """Every flag is checked as it is parsed: one argparse error naming it (exit code 2), never a ValueError
    traceback, a run recorded with concurrent_jobs 0, or a run of nothing that exits 0."""
    from bench import noisy_benchmark as nb

    with pytest.raises(SystemExit) as e:
        nb.main(args)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and flag in err and says in err, err


def test_benchmark_out_and_logs_must_be_usable(tmp_path, capsys):
    from bench import noisy_benchmark as nb

    (tmp_path / "file").write_text("x")
    for args, says in ((["--out", str(tmp_path)], "a .json file"),
                       (["--out", str(tmp_path / "d.json")], None),
                       (["--out", str(tmp_path / "file" / "r.json")], "file is a file, not a folder"),
                       (["--logs", str(tmp_path / "file")], "file is a file, not a folder")):
        if says is None:  # a folder named like a records file
            (tmp_path / "d.json").mkdir()
            says = "is a folder"
        with pytest.raises(SystemExit) as e:
            nb.main(["--noise", "0.4", "--seeds", "0", "--methods", "clip", *args])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and says in err, err


def test_a_malformed_method_name_is_named_not_replaced_by_another():
    """``npc_paper[bank_weight=0.5`` was told to use ``npc_paper[bank_weight=0.0]`` (a character dropped, the
    value changed) and ``npc_paper[bank_weight]`` to use ``npc_paper`` (the option dropped): both are named as
    malformed now, and a well-formed name is still told the run's own spelling."""
    from bench import noisy_benchmark as nb
    from npc.methods import name_parts

    for row, says in (("npc_paper[bank_weight=0.5", "ends with ']'"),
                      ("npc_paper[bank_weight]", "'bank_weight' is not part=value"),
                      ("npc_paper[bank_weight=0.5]x", "ends with ']'"),
                      ("npc_paper[=0.5]", "'=0.5' is not part=value"),
                      ("npc_paper[bank_weight=0.5,bank_weight=1]", "bank_weight given twice")):
        with pytest.raises(ConfigError) as e:
            nb.check_method(row)
        assert str(e.value).startswith(f"--methods {row}: ") and says in str(e.value), str(e.value)
        assert "give that name" not in str(e.value)
    assert name_parts("npc_paper[bank_weight=0.5,grad_scale=2]") == {"bank_weight": "0.5", "grad_scale": "2"}
    assert name_parts("npc_paper") == {}
    with pytest.raises(ConfigError, match="give that name"):
        nb.check_method("npc_paper[bank_weight=0.50]")


def test_a_failed_run_is_one_line_and_loses_no_other_run(tmp_path):
    """A training that fails with its one-line error: the runner says that line (naming the run), not its own
    RuntimeError traceback; every other run is recorded as it finishes; the next invocation reruns only the
    failed run."""
    bench = Bench(tmp_path)
    code, _, stderr = bench.run("--noise", "0.4,0.6", "--seeds", "0", "--methods", "clip,npc_paper",
                                fail=("npc_paper",))
    lines = _one_line_error(stderr)
    assert code == 1
    failed = [line for line in lines if "fake training" in line]
    assert len(failed) == 2 and all(line.startswith("error: npc_paper noise 0.") for line in failed)
    assert "--noise_ratio 0.4: the fake training of npc_paper fails (exit code 1; its output: " in failed[0] + failed[1]
    assert lines[-1].startswith("error: 2 of 4 runs failed")
    assert sorted((r["method"], r["noise_ratio"]) for r in bench.records()) == [("clip", 0.4), ("clip", 0.6)]
    assert (bench.logs / "bench_npc_paper_n0.4_s0.failed.log").is_file()
    code, _, stderr = bench.run("--noise", "0.4,0.6", "--seeds", "0", "--methods", "clip,npc_paper")
    assert code == 0, stderr
    assert sorted(e for e, _ in bench.starts()) == sorted(["bench_clip_n0.4_s0", "bench_clip_n0.6_s0"]
                                                           + ["bench_npc_paper_n0.4_s0", "bench_npc_paper_n0.6_s0"] * 2)
    assert len(bench.records()) == 4 and not (bench.logs / "bench_npc_paper_n0.4_s0.failed.log").exists()


def test_two_runners_on_one_out_keep_each_others_records(tmp_path):
    """Two runners on the same --out at once (different rows): both runners' records are kept (each record is
    read, merged and written under the records' lock), none twice."""
    bench = Bench(tmp_path)
    seconds = {"clip": 1.0, "npc_paper": 1.5}
    first = bench.start("--noise", "0.4,0.6", "--seeds", "0", "--methods", "clip", seconds=seconds)
    second = bench.start("--noise", "0.4,0.6", "--seeds", "0", "--methods", "npc_paper", seconds=seconds)
    for proc in (first, second):
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
    from bench import noisy_benchmark as nb

    keys = sorted((r["method"], r["noise_ratio"]) for r in bench.records())
    assert keys == [("clip", 0.4), ("clip", 0.6), ("npc_paper", 0.4), ("npc_paper", 0.6)]
    assert len({nb.key(r) for r in bench.records()}) == 4


@pytest.mark.parametrize("jobs", [1, 2])
def test_sigterm_stops_the_runner_and_its_children(tmp_path, jobs):
    """SIGTERM to the runner alone: its training children stop too (they used to run on as orphans), no queued
    run starts, nothing of the stopped runs is recorded, one line, exit code 143."""
    import os
    import signal

    bench = Bench(tmp_path)
    running = ["clip", "npc_paper"][:jobs]
    proc = bench.start("--noise", "0.4", "--seeds", "0", "--methods", "clip,npc_paper,npc_release", "--jobs", str(jobs),
                       seconds={m: 120 for m in running})
    children = [bench.wait_started(f"bench_{m}_n0.4_s0") for m in running]
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    lines = _one_line_error(stderr)
    assert proc.returncode == 143 and len(lines) == 1, stderr
    assert lines[0].startswith(f"terminated (SIGTERM): {jobs} run(s) stopped, not recorded; 0 recorded"), lines
    assert all(_wait_gone(child) for child in children)
    assert sorted(e for e, _ in bench.starts()) == [f"bench_{m}_n0.4_s0" for m in running]
    assert bench.records() == []


def test_ctrl_c_stops_the_whole_runner_cleanly(tmp_path):
    """Ctrl-C (SIGINT to the runner's process group, as a terminal sends it): the running child stops, the next
    queued run never starts, the finished run stays recorded, the stopped one is not; one line, exit code 130."""
    import os
    import signal

    bench = Bench(tmp_path)
    proc = bench.start("--noise", "0.4", "--seeds", "0", "--methods", "clip,npc_paper,npc_release",
                       seconds={"npc_paper": 120})
    child = bench.wait_started("bench_npc_paper_n0.4_s0")
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    lines = _one_line_error(stderr)
    assert proc.returncode == 130 and len(lines) == 1, stderr
    assert lines[0].startswith("interrupted (Ctrl-C): 1 run(s) stopped, not recorded; 1 recorded"), lines
    assert _wait_gone(child)
    assert [e for e, _ in bench.starts()] == ["bench_clip_n0.4_s0", "bench_npc_paper_n0.4_s0"]
    assert [r["method"] for r in bench.records()] == ["clip"]


def test_a_restart_never_deletes_a_live_run_folder(tmp_path):
    """A runner killed with SIGKILL leaves its child running (nothing can stop it then); a restart at once must
    not delete that live run's folder (its lock held): the run is refused, one line naming the holder, the other
    runs go on and are recorded. Once the orphan is gone, the next invocation reruns the run."""
    import os
    import signal

    bench = Bench(tmp_path)
    proc = bench.start("--noise", "0.4", "--seeds", "0", "--methods", "clip,npc_paper", seconds={"clip": 120})
    orphan = bench.wait_started("bench_clip_n0.4_s0")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    run_dir = bench.logs / "bench_clip_n0.4_s0"
    try:
        assert _alive(orphan)
        code, _, stderr = bench.run("--noise", "0.4", "--seeds", "0", "--methods", "clip,npc_paper")
        lines = _one_line_error(stderr)
        assert code == 1
        assert any(line.startswith(f"error: the run folder {run_dir} is in use by pid {orphan}") for line in lines), lines
        assert (run_dir / ".lock").is_file() and _alive(orphan)
        assert [r["method"] for r in bench.records()] == ["npc_paper"]
    finally:
        os.killpg(orphan, signal.SIGKILL)
    assert _wait_gone(orphan)
    code, _, stderr = bench.run("--noise", "0.4", "--seeds", "0", "--methods", "clip,npc_paper")
    assert code == 0, stderr
    assert sorted(r["method"] for r in bench.records()) == ["clip", "npc_paper"]


def test_spot_check_and_the_choice_report_bad_arguments_and_records_in_one_line(tmp_path, monkeypatch, capsys):
    """bench/spot_check.py's METHOD:NOISE:SEED and --out are checked as parsed; both scripts read the records as
    the runner does: a cut file is one line naming it."""
    from bench import choose_on_dev, spot_check
    from npc.errors import BadFileError

    for args, says in ((["clip:0.4"], "clip:0.4: not METHOD:NOISE:SEED"),
                       (["clip:x:0"], "'x' is not a number"),
                       (["clip:0.4:-1"], "-1 is not a seed"),
                       (["clip:0.4:0", "--out", "../x.json"], "a file name ending in .json"),
                       (["clip:0.4:0", "--out", "noisy_benchmark.json"], "is not a spot check's record")):
        with pytest.raises(SystemExit) as e:
            spot_check.main(args)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and says in err, err
    (tmp_path / "noisy_benchmark.json").write_text('[{"method": "clip", "noise_ratio": 0.4, "se')
    for module, args in ((spot_check, ["clip:0.4:0"]), (choose_on_dev, ["a", "b"])):
        monkeypatch.setattr(module, "RESULTS", tmp_path)
        with pytest.raises(BadFileError, match="noisy_benchmark.json is not a whole JSON file"):
            module.main(args)
