"""The embedded noisy-correspondence benchmark: base vs CLIP fine-tuning vs NPC (paper / release).

On the demo dataset, for each noise ratio and seed, runs the real entry points
(``main_CLIP.py``, ``main_NPC.py``) as subprocesses with identical epochs, batch and data, and
records test recalls, wall time, NPC's noise-detection quality (ROC-AUC of its weights against the
ground-truth noise mask, mean weight of clean and noisy pairs) and the memory bank's clean-set
precision/recall. Each run's record is added to a JSON list as the run ends: read, merged and written
atomically under the list's lock, so that runners sharing one ``--out`` keep each other's records. Runs
already recorded are skipped, so an interrupted benchmark continues where it stopped; a run that fails is one
line (the training's own error) and the others go on and are recorded; Ctrl-C or SIGTERM stops the runner with
its trainings (each runs in a session of its own, so the runner passes the signal on), starts no other run and
records none of the stopped ones. The folder of a run not recorded is removed when the run starts again, unless
a live process holds its lock (a training that outlived a runner killed with SIGKILL): that run is refused.

    python bench/noisy_benchmark.py                 # full: noise 0/0.2/0.4/0.6 x seeds 0/1/2 (hours on 2 CPUs)
    python bench/noisy_benchmark.py --quick         # one seed, 2 epochs, noise 0/0.6: a smoke run
    python bench/noisy_benchmark.py --search        # learning-rate search on the dev split (40% noise)
    python bench/noisy_benchmark.py --render        # table + plot from the recorded JSON into bench/results/noisy_benchmark/
    python bench/noisy_benchmark.py --jobs 2 ...    # two runs at a time, each with OMP_NUM_THREADS=1 (2 CPUs)

Each record keeps ``omp_num_threads`` and ``concurrent_jobs``: its ``seconds`` are wall time under that load.

Learning rates come from ``--search`` (dev split only, never test): for each method the lr with the
best dev rsum at 40% noise, seed 0, among ``--lrs``; the chosen values are written to
``bench/results/noisy_benchmark/lr_search.json`` and used by the benchmark runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from npc.errors import BadFileError, ConfigError, MissingFileError, UserError
from npc.io import atomic_write_json, atomic_write_text
from npc.locks import LockedError, file_lock
from npc.methods import METHODS as METHOD_REGISTRY
from npc.methods import base_name, compose, get_method, name_parts
from npc.reporting import REPO, device_name, environment, git_commit, pyplot, repo_relative, save_figure, write_table

# The rows: "base" (the demo's base model, evaluated without training) and the methods of npc.methods.
# The table's order: the first grid's rows, then the methods registered since.
_FIRST = ("base", "clip", "npc_paper", "npc_release", "npc_bank_only", "gmm_filter", "pclean_weight", "npc_first_order")
METHODS = _FIRST + tuple(m for m in METHOD_REGISTRY if m not in _FIRST)
RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
RESULTS = REPO / "bench" / "results" / "noisy_benchmark"


class RunFailed(UserError, RuntimeError):
    """A benchmark run that did not finish: one line naming the run and the training's own error."""


class RunStopped(Exception):
    """A run stopped because the runner stops (Ctrl-C, SIGTERM): not recorded, not a failure."""


# How long a stopped run may take to end after the runner passed its signal on, before it is killed.
STOP_GRACE_S = 60.0


class Children:
    """The training processes this runner started. Each runs in a session of its own, so that a terminal's
    Ctrl-C reaches the runner alone; the runner passes the signal it stops with on to every child's process
    group (the child and its data-loader workers), starts no new one, and waits for them to end."""

    def __init__(self):
        self._lock = threading.Lock()
        self._procs: set = set()
        self.stopping = None  # the signal the runner stops with, once it does

    def start(self, cmd: list, **kwargs):
        """The child of ``cmd``, or None once the runner stops."""
        with self._lock:
            if self.stopping is not None:
                return None
            proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
            self._procs.add(proc)
            return proc

    def finished(self, proc) -> None:
        with self._lock:
            self._procs.discard(proc)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to every running child's process group; from now on no child starts."""
        with self._lock:
            self.stopping = self.stopping or sig
            for proc in self._procs:
                if proc.returncode is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass


CHILDREN = Children()


@contextmanager
def signals_held():
    """Ctrl-C and SIGTERM ignored while the runner stops its children (a second Ctrl-C must not cut that short);
    the handlers are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def stop_signal(e: KeyboardInterrupt) -> int:
    from npc.cli import Terminated

    return signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT


def stopped_line(sig: int, what: str) -> str:
    """The runner's one line when it stops: Ctrl-C or SIGTERM, what it did."""
    from npc.cli import STOPPED

    return f"{STOPPED[sig == signal.SIGTERM][0]}: {what}"


def check_same_tree() -> None:
    """The runs execute the entry points of the tree ``npc`` was imported from: refuse to run from another
    checkout (an editable install of one tree, this script from another), whose records would name the wrong code."""
    here = Path(__file__).resolve().parents[1]
    if here != REPO.resolve():
        raise ConfigError(f"bench/noisy_benchmark.py is in {here} but imports npc from {REPO}: run it with "
                          f"PYTHONPATH={here}")


def method_options(method: str) -> list:
    """A row's method as command-line flags: a registered name, or one with options (``npc_paper[bank_weight=0.5]``,
    the name the run itself gives that composition)."""
    return ["--method", base_name(method)] + [x for k, v in name_parts(method).items() for x in ("--method_opt", f"{k}={v}")]


def check_method(method: str) -> None:
    """A row's method must be a registered one or a composition of options the run names the same way."""
    if method == "base":
        return
    try:
        parts = name_parts(method)  # a malformed name is named as it is, never read as another one
    except ConfigError as e:
        raise ConfigError(f"--methods {e}") from None
    try:
        name = compose(get_method(base_name(method)), options=parts).name
    except ConfigError as e:
        raise ConfigError(f"--methods {method}: {e}") from None
    if name != method:
        raise ConfigError(f"--methods {method}: the run names this method {name}; give that name")


def command_for(method: str, noise: str, seed: int, *, epochs: int, lr: float | None, logs: Path, exp: str,
                extra=()) -> list:
    script = "main_CLIP.py" if method == "base" else f"main_{get_method(base_name(method)).script.upper()}.py"
    cmd = [sys.executable, script, "--dataset", "demo", "--noise_ratio", noise, "--seed", str(seed),
           "--logs", repo_relative(logs), "--experiments", exp, "--no_progress"]
    if method == "base":
        return cmd + ["--eval", *extra]
    cmd += [*method_options(method), "--epochs", str(epochs)]
    if lr is not None:
        cmd += ["--lr", repr(lr)]
    return cmd + list(extra)


def collect(method: str, run_dir: Path, noise: str) -> dict:
    res = json.loads((run_dir / ("eval_results.json" if method == "base" else "results.json")).read_text())
    metrics = next(iter(res["results"].values()))
    rec = {k: metrics[k] for k in (*RECALLS, "rsum")}
    if method != "base":
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        rec["best_dev_rsum"] = max(e["dev"]["rsum"] for e in epochs)
        rec["dev_rsum_per_epoch"] = [e["dev"]["rsum"] for e in epochs]
        npc = [e.get("weights", e.get("npc")) for e in epochs if "weights" in e or "npc" in e]  # "npc": earlier runs
        if npc and "weight_auc" in npc[0]:
            rec["weight_auc"] = statistics.fmean(e["weight_auc"] for e in npc)
            rec["weight_auc_per_epoch"] = [e["weight_auc"] for e in npc]
            rec["mean_w_clean"] = statistics.fmean(e["mean_weight_clean"] for e in npc)
            rec["mean_w_noisy"] = statistics.fmean(e["mean_weight_noisy"] for e in npc)
        if "bank" in get_method(base_name(method)).needs:
            bank_info = REPO / "dataset" / "demo" / "annotations" / "memory_bank" / f"{noise}_mbank_info.json"
            if bank_info.is_file():
                info = json.loads(bank_info.read_text())
                rec["bank_precision"] = info.get("precision")
                rec["bank_recall"] = info.get("recall")
                rec["bank_clean_fraction"] = info.get("clean_fraction")
    return rec


def experiment_name(method: str, noise: str, seed: int, lr, tag: str) -> str:
    folder = "".join(c if c.isalnum() or c in "_.-" else "_" for c in method)  # npc_paper[bank_weight=0.5]
    return f"{tag}_{folder}_n{noise}_s{seed}" + (f"_lr{lr:g}" if tag == "search" else "")


def reclaim(run_dir: Path) -> None:
    """Remove the folder of a run that was not recorded (stopped, failed), so that it starts again from scratch;
    unless a live process holds its lock (a run of another runner, or one that outlived a runner killed with
    SIGKILL): then the run is refused and the folder left alone."""
    if not run_dir.exists() and not run_dir.is_symlink():
        return
    if run_dir.is_symlink() or not run_dir.is_dir():
        raise RunFailed(f"{run_dir} is in the way of the run's folder and is not a run folder: move it away")
    try:
        with file_lock(run_dir / ".lock", f"the run folder {run_dir}", wait=False,
                       hint="a run of another runner, or one that outlived a runner killed with SIGKILL, is still "
                            "going: wait for it to end (or stop it), then run this again"):
            shutil.rmtree(run_dir)  # under its lock: no run starts in it meanwhile
    except LockedError as e:
        raise RunFailed(str(e)) from None
    except OSError as e:
        raise RunFailed(f"cannot remove the unrecorded run folder {run_dir} ({e.strerror}): remove it, then run "
                        f"this again") from None


def child_error(label: str, code: int, stderr: str, log: Path) -> str:
    """A failed run in one line: the training's own one-line error (``error: ...``), or the last line of what it
    printed; its whole output is in ``log``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("error: ")]
    cause = own[-1][len("error: "):] if own else (lines[-1] if lines else "no output")
    return f"{label}: {cause} (exit code {code}; its output: {repo_relative(log)})"


def run_one(method, noise, seed, *, epochs, lr, logs, tag, jobs: int = 1) -> dict:
    """Run one training (or the base's evaluation) as a child process and return its record. A failed run is a
    :class:`RunFailed` (one line, the child's output kept in ``<logs>/<run>.failed.log``); a run stopped with the
    runner is a :class:`RunStopped`."""
    exp = experiment_name(method, noise, seed, lr, tag)
    run_dir = logs / exp
    label = f"{method} noise {noise} seed {seed}" + (f" lr {lr:g}" if tag == "search" else "")
    failed_log = logs / f"{exp}.failed.log"
    reclaim(run_dir)  # a run interrupted half-way: start it again from scratch
    cmd = command_for(method, noise, seed, epochs=epochs, lr=lr, logs=logs, exp=exp)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if jobs > 1:  # concurrent torch jobs on shared cores: one thread each, or they fight over the cores
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    proc = CHILDREN.start(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if proc is None:
        raise RunStopped(label)
    try:
        try:
            stdout, stderr = proc.communicate()
        except KeyboardInterrupt as e:  # the runner stops in this thread (a caller without worker threads)
            with signals_held():
                CHILDREN.signal(stop_signal(e))
                try:
                    proc.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    CHILDREN.signal(signal.SIGKILL)
                    proc.wait()
            raise
    finally:
        CHILDREN.finished(proc)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 and CHILDREN.stopping is not None:
        raise RunStopped(label)
    try:
        if proc.returncode != 0:
            raise RunFailed(child_error(label, proc.returncode, stderr, failed_log))
        try:
            results = collect(method, run_dir, noise)
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as e:
            cause = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else repr(e)
            raise RunFailed(f"{label}: the run ended without results this runner can read ({cause}; its output: "
                            f"{repo_relative(failed_log)})") from None
    except RunFailed:
        atomic_write_text(failed_log, f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
        raise
    failed_log.unlink(missing_ok=True)
    rec = {"method": method, "noise_ratio": float(noise), "seed": seed, "epochs": 0 if method == "base" else epochs,
           "lr": lr, **results, "seconds": round(seconds, 1),
           "command": " ".join(["python"] + cmd[1:]), "git_commit": git_commit(), **run_environment(env),
           "omp_num_threads": env.get("OMP_NUM_THREADS"), "concurrent_jobs": jobs}
    return rec


def run_environment(run_env: dict) -> dict:
    """Device and versions of a run: the same torch as this process; on CPU the thread count of the run's own
    environment (``OMP_NUM_THREADS`` when set there, e.g. by ``--jobs``; else this process's)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment("", None, device)
    threads = run_env.get("OMP_NUM_THREADS")
    return {**{k: env[k] for k in ("torch", "cuda", "open_clip", "python")},
            "device": device_name(device, int(threads) if threads else None)}


RECORD_FIELDS = ("method", "noise_ratio", "seed", "epochs")


def load(path: Path) -> list:
    """The records of ``path`` (none when it is missing). A file that is not a JSON list of records (cut short,
    edited, another file) is one line naming it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except IsADirectoryError:
        raise BadFileError(f"{path} is a folder, not a file of benchmark records") from None
    except OSError as e:
        raise BadFileError(f"cannot read the benchmark records {path}: {e.strerror}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise BadFileError(f"{path} is not a whole JSON file of benchmark records ({e}): cut short or edited; "
                           f"restore it (git checkout, or your copy) or move it away") from None
    if not isinstance(records, list):
        raise BadFileError(f"{path} holds a JSON {type(records).__name__}, not the list of benchmark records")
    for i, rec in enumerate(records):
        missing = [k for k in RECORD_FIELDS if k not in rec] if isinstance(rec, dict) else list(RECORD_FIELDS)
        if missing:
            raise BadFileError(f"{path}: item {i} is not a benchmark record (no {', '.join(missing)})")
    return records


def key(rec) -> tuple:
    return rec["method"], float(rec["noise_ratio"]), rec["seed"], rec["epochs"], rec.get("lr")


def search_key(rec) -> tuple:
    return rec["method"], rec["lr"]


@contextmanager
def records_lock(out: Path):
    """The lock every runner takes to read, merge and write ``out``: no runner loses another's records."""
    with file_lock(out.parent / f".{out.name}.lock", f"the benchmark records {out}", wait=True,
                   log=lambda m: print(m, file=sys.stderr, flush=True)):
        yield


def add_record(out: Path, rec: dict, key_of=key) -> bool:
    """Add ``rec`` to ``out`` as it is on disk now (read, merged, written atomically under the records' lock);
    False when another runner recorded the same run meanwhile."""
    with records_lock(out):
        records = load(out)
        if key_of(rec) in {key_of(r) for r in records}:
            return False
        atomic_write_json(out, records + [rec])
        return True


def execute(todo: list, out: Path, *, key_of, jobs: int, report) -> list:
    """Run ``todo`` (pairs of a record's key and ``run_one``'s arguments), ``jobs`` at a time. Each record is
    added to ``out`` as its run ends (:func:`add_record`); a run recorded meanwhile by another runner is skipped;
    a failed run is one line on stderr and the others go on. Ctrl-C or SIGTERM stops the running children,
    starts no other run, records none of the stopped runs and ends with one line (exit code 130 or 143).
    Returns the failures' lines."""
    from concurrent.futures import ThreadPoolExecutor, as_completed, wait

    def work(k, kwargs):
        if k in {key_of(r) for r in load(out)}:
            return None
        rec = run_one(**kwargs)
        if add_record(out, rec, key_of):
            added.append(k)
        return rec

    failures, added = [], []
    pool, futures = ThreadPoolExecutor(max_workers=jobs), []
    try:
        for k, kwargs in todo:
            futures.append(pool.submit(work, k, kwargs))
        for future in as_completed(futures):
            try:
                rec = future.result()
            except RunFailed as e:
                failures.append(str(e))
                print(f"error: {e}", file=sys.stderr, flush=True)
                continue
            if rec is not None:
                report(rec)
    except BaseException as e:  # Ctrl-C, SIGTERM, or an error of the runner itself: no run goes on without it
        sig = stop_signal(e) if isinstance(e, KeyboardInterrupt) else signal.SIGTERM
        with signals_held():
            for future in futures:
                future.cancel()
            CHILDREN.signal(sig)
            going = [f for f in futures if not f.cancelled()]
            if wait(going, timeout=STOP_GRACE_S).not_done:
                CHILDREN.signal(signal.SIGKILL)
                wait(going)
        pool.shutdown(wait=False)
        if not isinstance(e, KeyboardInterrupt):
            raise
        stopped = sum(1 for f in going if isinstance(f.exception(), RunStopped))
        print(stopped_line(sig, f"{stopped} run(s) stopped, not recorded; {len(added)} recorded by this invocation in "
                                f"{repo_relative(out)}: the same command runs the rest"), file=sys.stderr, flush=True)
        raise SystemExit(128 + sig) from None
    pool.shutdown(wait=True)
    return failures


def run_grid(methods, noises, seeds, *, epochs, lrs: dict, out: Path, logs: Path, tag: str, jobs: int = 1) -> list:
    """Every (seed, noise, method) not recorded yet, ``jobs`` at a time; each record is added to ``out`` as its
    run ends (:func:`execute`). Returns the records of ``out``; a failed run is a :class:`RunFailed` after every
    other run has ended and been recorded."""
    done = {key(r) for r in load(out)}
    todo = []
    for seed in seeds:
        for noise in noises:
            for method in methods:
                lr = None if method == "base" else lrs.get(method, lrs.get(get_method(base_name(method)).lr_group))
                k = (method, float(noise), seed, 0 if method == "base" else epochs, lr)
                if k not in done:
                    done.add(k)
                    todo.append((k, dict(method=method, noise=noise, seed=seed, epochs=epochs, lr=lr, logs=logs,
                                         tag=tag, jobs=jobs)))

    def report(rec):
        extra = f" weight AUC {rec['weight_auc']:.3f}" if "weight_auc" in rec else ""
        print(f"{rec['method']:12s} noise {rec['noise_ratio']:.1f} seed {rec['seed']}: rsum {rec['rsum']:.1f}{extra} "
              f"({rec['seconds']:.0f}s)", flush=True)

    failures = execute(todo, out, key_of=key, jobs=jobs, report=report)
    if failures:
        raise RunFailed(f"{len(failures)} of {len(todo)} runs failed (each named above); the others are recorded in "
                        f"{repo_relative(out)}: fix the cause and run the same command again for the failed ones")
    return load(out)


def search(args) -> None:
    out = RESULTS / "lr_search.json"
    done = {search_key(r) for r in load(out)}
    todo = [((method, lr), dict(method=method, noise=args.search_noise, seed=0, epochs=args.epochs, lr=lr,
                                logs=args.logs, tag="search", jobs=args.jobs))
            for method in args.methods if method != "base" for lr in args.lrs if (method, lr) not in done]

    def report(rec):
        print(f"search {rec['method']:12s} lr {rec['lr']:.0e}: best dev rsum {rec['best_dev_rsum']:.1f} "
              f"({rec['seconds']:.0f}s)", flush=True)

    failures = execute(todo, out, key_of=search_key, jobs=args.jobs, report=report)
    if failures:
        raise RunFailed(f"{len(failures)} of {len(todo)} search runs failed (each named above); the others are "
                        f"recorded in {repo_relative(out)}; no learning rate chosen: run the same command again")
    records = load(out)
    chosen = {}
    for method in sorted({r["method"] for r in records}):
        best = max((r for r in records if r["method"] == method), key=lambda r: r["best_dev_rsum"])
        chosen[method] = best["lr"]
    for method in list(chosen):  # a method not searched takes the lr of its family's searched method
        chosen.setdefault(get_method(base_name(method)).lr_group, chosen[method])
    atomic_write_json(RESULTS / "lr_chosen.json", chosen)
    print("chosen learning rates (best dev rsum at noise", args.search_noise, "):", chosen)


def mean_std(values):
    if len(values) == 1:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values)


def mean_std_cell(values, digits: int = 1) -> str:
    """A table cell "mean ± std" of the seeds' values (std 0 for one seed), or "–" when there are none."""
    return "{0:.{2}f} ± {1:.{2}f}".format(*mean_std(values), digits) if values else "–"


def table_methods(records: list, unrecorded: bool = False) -> list:
    """The recorded methods in the table's order: registered ones (those registered now, the order of
    ``METHODS``), each followed by its recorded compositions (e.g. with other options); with ``unrecorded``,
    a registered method with no record at all keeps its place too."""
    order = _FIRST + tuple(m for m in METHOD_REGISTRY if m not in _FIRST)
    names = []
    for m in order:
        recorded = sorted({r["method"] for r in records if base_name(r["method"]) == m}, key=lambda n: (n != m, n))
        names += recorded or ([m] if unrecorded and m != "base" else [])
    return names


def summary_table(records: list) -> str:
    """The README's table: test rsum per noise ratio (mean ± std over the seeds) and the mean weight AUC at
    40% and 60% noise, one row per recorded method; a registered method without records is a row that says
    it is not yet benchmarked."""
    noises = sorted({r["noise_ratio"] for r in records})
    auc_noises = [n for n in (0.4, 0.6) if n in noises]
    lines = ["| method | " + " | ".join(f"{n:.0%}" for n in noises) + " | "
             + " | ".join(f"weight AUC {n:.0%}" for n in auc_noises) + " |",
             "|---|" + "---|" * (len(noises) + len(auc_noises))]
    for m in table_methods(records, unrecorded=True):
        rows = {n: [r for r in records if r["method"] == m and r["noise_ratio"] == n] for n in noises}
        if not any(rows.values()):
            lines.append(f"| {m} | " + " | ".join(["not yet benchmarked"] + ["–"] * (len(noises) + len(auc_noises) - 1))
                         + " |")
            continue
        cells = [mean_std_cell([r["rsum"] for r in rows[n]]) for n in noises]
        aucs = [[r["weight_auc"] for r in rows[n] if r.get("weight_auc") is not None] for n in auc_noises]
        cells += [f"{statistics.fmean(a):.3f}" if a else "–" for a in aucs]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(records: list, noises=(0.4, 0.6)) -> str:
    """Test rsum per seed at ``noises`` for every method recorded at all of them, and the share of the damage
    undone at the last: (rsum - CLIP's at that noise) / (CLIP's at 0% - CLIP's at that noise), means over seeds."""
    def rsums(m, noise):
        return sorted(((r["seed"], r["rsum"]) for r in records if r["method"] == m and r["noise_ratio"] == noise))

    def mean(m, noise):
        values = [v for _, v in rsums(m, noise)]
        return statistics.fmean(values) if values else None

    last = noises[-1]
    clean, noisy = mean("clip", 0.0), mean("clip", last)
    lines = ["| method | " + " | ".join(f"rsum {n:.0%} (seeds " + " / ".join(str(s) for s, _ in rsums("clip", n)) + ")"
                                       for n in noises) + f" | gap closed at {last:.0%} |",
             "|---|" + "---|" * (len(noises) + 1)]
    for m in table_methods(records):
        if m == "base" or not all(rsums(m, n) for n in noises):
            continue
        cells = [f"{mean(m, n):.1f} (" + " / ".join(f"{v:.1f}" for _, v in rsums(m, n)) + ")" for n in noises]
        gap = "–" if clean is None or noisy is None else f"{(mean(m, last) - noisy) / (clean - noisy):.1%}"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {gap} |")
    return "\n".join(lines)


def full_table(records: list) -> list:
    """Every recall, rsum, weight AUC and wall time per method and noise ratio (mean ± std over the seeds)."""
    noises = sorted({r["noise_ratio"] for r in records})
    methods = table_methods(records)
    lines = ["| method | noise | seeds | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | rsum "
             "| weight AUC | s/run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for noise in noises:
        for m in methods:
            rs = [r for r in records if r["method"] == m and r["noise_ratio"] == noise]
            if not rs:
                continue
            cells = [mean_std_cell([r[k] for r in rs]) for k in (*RECALLS, "rsum")]
            auc = mean_std_cell([r["weight_auc"] for r in rs if r.get("weight_auc") is not None], digits=3)
            secs = statistics.fmean(r["seconds"] for r in rs)
            lines.append(f"| {m} | {noise:.0%} | {len(rs)} | " + " | ".join(cells) + f" | {auc} | {secs:.0f} |")
    return lines


def render(records: list, out_md: Path, out_png: Path) -> str:
    noises = sorted({r["noise_ratio"] for r in records})
    methods = table_methods(records)
    table = write_table(full_table(records), out_md)
    plt = pyplot()
    if plt is None:
        return table
    # rsum against noise: the first grid's rows, then the methods added since beside three references.
    refs = ("clip", "npc_paper", "pclean_weight")
    panels = (("the first grid", [m for m in methods if m in _FIRST], ()),
              ("added since (dashed: references)", [m for m in methods if m in refs or m not in _FIRST], refs))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5), sharey=True)
    for ax, (title, shown, dashed_refs) in zip(axes, panels):
        if len(shown) > 10:  # more rows than tab10's colours: none shares one
            ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for m in shown:
            xs, mus, sds = [], [], []
            for noise in noises:
                vals = [r["rsum"] for r in records if r["method"] == m and r["noise_ratio"] == noise]
                if vals:
                    mu, sd = mean_std(vals)
                    xs.append(noise * 100), mus.append(mu), sds.append(sd)
            dashed = m in dashed_refs
            ax.errorbar(xs, mus, yerr=sds, marker="o", capsize=3, label=m, linestyle="--" if dashed else "-",
                        alpha=0.6 if dashed else 1.0)
        ax.set_xlabel("caption noise (%)")
        ax.set_title(f"demo test rsum: {title}")
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=8)
    save_figure(fig, out_png)
    return table


def split_methods(text: str) -> list:
    """``"clip,npc_paper[a=1,b=2]"`` -> ``["clip", "npc_paper[a=1,b=2]"]``: commas inside brackets stay."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [m for m in (*out, cur) if m]


def noise_item(text: str) -> str:
    """A noise ratio in [0, 1), kept as typed: the runs' folders and the demo's files are named by it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (noise ratios in [0, 1))") from None
    if not 0 <= value < 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a noise ratio in [0, 1)")
    return text


def seed_item(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (seeds are 0 or more)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a seed (0 or more)")
    return value


def lr_item(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (learning rates above 0)") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a learning rate (a finite number above 0)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
    return value


def comma_list(item):
    """An argparse type: a comma list of ``item``s, none empty, none twice (by value)."""
    def parse(text: str) -> list:
        parts = [x.strip() for x in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"{text!r}: an empty item (give a comma list, e.g. 0.4,0.6)")
        values = [item(x) for x in parts]
        same = [float(v) for v in values]
        if len(set(same)) < len(same):
            raise argparse.ArgumentTypeError(f"{text!r}: a value given twice")
        return values
    return parse


def check_paths(p: argparse.ArgumentParser, out: Path, logs: Path) -> None:
    """An --out the records, their table (.md) and plot (.png) beside them can be written to; a --logs that
    can hold run folders."""
    if out.suffix != ".json":
        p.error(f"--out {out}: a .json file (the table and the plot are written beside it, as .md and .png)")
    if out.is_dir():
        p.error(f"--out {out} is a folder: give the records' file, e.g. {out / 'noisy_benchmark.json'}")
    blocking = next((a for a in (out.parent, *out.parent.parents) if a.exists()), None)
    if blocking is not None and not blocking.is_dir():
        p.error(f"--out {out}: {blocking} is a file, not a folder")
    blocking = next((a for a in (logs, *logs.parents) if a.exists()), None)
    if blocking is not None and not blocking.is_dir():
        p.error(f"--logs {logs}: {blocking} is a file, not a folder")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed, 2 epochs, noise 0 and 0.6")
    p.add_argument("--search", action="store_true", help="learning-rate search on dev (see module doc)")
    p.add_argument("--render", action="store_true", help="only render table and plot from the JSON")
    p.add_argument("--noise", type=comma_list(noise_item), default=None,
                   help="comma list of noise ratios in [0, 1) (default 0.0,0.2,0.4,0.6)")
    p.add_argument("--seeds", type=comma_list(seed_item), default=None,
                   help="comma list of training seeds (default 0,1,2)")
    p.add_argument("--methods", default=None,
                   help="comma list of " + ", ".join(METHODS) + " (npc_bank_only: ablation, weights fixed to 1); a "
                        "method with options as the run names it, e.g. 'npc_paper[bank_weight=0.5]' (a comma "
                        "inside brackets belongs to the method; default base,clip,npc_paper,npc_release)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs of every fine-tuning run (default 5)")
    p.add_argument("--lrs", type=comma_list(lr_item), default=None,
                   help="--search candidates (default 1e-4,2e-4,5e-4,1e-3)")
    p.add_argument("--search_noise", type=noise_item, default=None, help="noise ratio of the --search runs (default 0.4)")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default bench/results/noisy_benchmark/noisy_benchmark.json)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="runs at a time (each with OMP_NUM_THREADS=1 when > 1; default 1)")
    p.add_argument("--logs", type=Path, default=None, help="where run folders go (default bench/runs)")
    args = p.parse_args(argv)
    given = {f"--{k}" for k, v in vars(args).items() if v not in (None, False)}
    # Flags a mode does not use are refused, not silently ignored.
    unused = {"render": given & {"--search", "--noise", "--seeds", "--methods", "--epochs", "--lrs", "--search_noise",
                                 "--jobs", "--logs"},
              "search": given & {"--quick", "--noise", "--seeds", "--out"},
              "quick": given & {"--noise", "--seeds", "--epochs"},
              "run": given & {"--lrs", "--search_noise"}}
    mode = "render" if args.render else "search" if args.search else "quick" if args.quick else "run"
    if unused[mode] or (mode == "quick" and unused["run"]):
        flags = ", ".join(sorted(unused[mode] | (unused["run"] if mode == "quick" else set())))
        p.error({"render": f"--render draws the records of --out and runs nothing: {flags} not used",
                 "search": f"--search runs seed 0 at --search_noise and writes {repo_relative(RESULTS)}/lr_search.json: "
                           f"{flags} not used",
                 "quick": f"--quick runs noise 0.0,0.6, seed 0, 2 epochs: {flags} not used (drop --quick to set them)",
                 "run": f"{flags}: only --search uses them"}[mode])
    args.noise = ["0.0", "0.6"] if args.quick else args.noise or ["0.0", "0.2", "0.4", "0.6"]
    args.seeds = [0] if args.quick else args.seeds or [0, 1, 2]
    args.epochs = 2 if args.quick else args.epochs or 5
    args.lrs = args.lrs or [1e-4, 2e-4, 5e-4, 1e-3]
    args.search_noise = args.search_noise or "0.4"
    args.jobs = args.jobs or 1
    args.logs = args.logs or REPO / "bench" / "runs"
    args.methods = split_methods("base,clip,npc_paper,npc_release" if args.methods is None else args.methods)
    if not args.methods:
        p.error("--methods: no method given")
    unknown = {m for m in args.methods if base_name(m) not in METHODS}
    if unknown:
        p.error(f"--methods: unknown {sorted(unknown)}")
    for m in args.methods:
        check_method(m)
    out = args.out or RESULTS / ("noisy_benchmark_quick.json" if args.quick else "noisy_benchmark.json")
    check_paths(p, out, args.logs)
    if args.search:
        check_same_tree()
        search(args)
        return 0
    if not args.render:
        check_same_tree()
        chosen_path = RESULTS / "lr_chosen.json"
        lrs = json.loads(chosen_path.read_text()) if chosen_path.is_file() else {}
        if not lrs:
            print("no bench/results/noisy_benchmark/lr_chosen.json: using the demo's default learning rates")
        run_grid(args.methods, args.noise, args.seeds, epochs=args.epochs, lrs=lrs, out=out, logs=args.logs,
                 tag="quick" if args.quick else "bench", jobs=args.jobs)
    records = load(out)
    if not records:
        raise MissingFileError(f"{out}: no benchmark records to render" + ("" if out.exists() else " (no such file)"))
    table = render(records, out.with_suffix(".md"), out.with_suffix(".png"))  # beside the records
    print(table)
    print("\nthe README's table (tests/test_docs.py checks it):\n" + summary_table(records))
    print("\nper seed (docs/studies/benchmark.md):\n" + per_seed_table(records))
    return 0


if __name__ == "__main__":
    from npc.cli import cli

    sys.exit(cli(main, sys.argv[1:]))
