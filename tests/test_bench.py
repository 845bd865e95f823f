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
