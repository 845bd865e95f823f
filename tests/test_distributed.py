"""Two CPU processes (gloo) on a split global batch give the single-process step on the whole batch; two
processes build the memory bank byte for byte as one does."""
import copy
import os
import re
import shutil

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from npc.distributed import DistInfo
from npc.model import create_model
from helpers import TORCHRUN_KILL, bank_worker, clip_step, free_port, method_step, torchrun, torchrun_command

B = 8


def _global_batch():
    g = torch.Generator().manual_seed(7)
    images = torch.randn(3 * B, 3, 32, 32, generator=g)  # pair images, image-bank images, text-bank images
    texts = torch.randint(1, 500, (3 * B, 24), generator=g)
    return images, texts


def _local_batch(rank: int, world: int, first: int = None):
    """Rank ``rank``'s share of the global batch: equal shares, or (``first``) rows [0, first) on rank 0 and
    the rest on rank 1, as when a rank left out the pairs of unreadable images."""
    images, texts = _global_batch()
    bounds = [r * B // world for r in range(world + 1)] if first is None else [0, first, B]
    lo, hi = bounds[rank], bounds[rank + 1]
    n = hi - lo
    rows = [torch.arange(k * B + lo, k * B + hi) for k in range(3)]
    sel = torch.cat(rows)
    batch = {"images": images[sel], "texts": texts[sel], "index": rows[0]}
    for k, group in enumerate(("pair", "bankI", "bankT")):
        batch[f"{group}_img"] = torch.arange(k * n, (k + 1) * n)
        batch[f"{group}_txt"] = torch.arange(k * n, (k + 1) * n)
    return batch


def _models():
    torch.manual_seed(0)
    model, _, _ = create_model("npc-micro", "none")
    siamese = copy.deepcopy(model)
    mk = lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-4, weight_decay=0.2)  # noqa: E731
    return model, siamese, mk(model), mk(siamese)


def _step(kind, info, batch):
    torch.set_num_threads(1)
    model, siamese, opt, sopt = _models()
    if kind == "clip":
        out = clip_step(model, opt, batch, info=info)
        w = None
    else:
        fo = kind == "first_order"  # the paper variant with the first-order estimator (batch medians over ranks)
        out = method_step(model, siamese, opt, sopt, batch, variant="paper" if fo else kind, info=info,
                       estimator="first_order" if fo else "siamese")
        w = out["weights"]
    return [p.detach().clone() for p in model.parameters()], out["pair_loss"], w


def _worker(rank, world, port, kind, result_dir, first=None):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        info = DistInfo(rank, world, rank, uneven=first is not None)
        params, loss, w = _step(kind, info, _local_batch(rank, world, first))
        torch.save({"params": params, "loss": loss, "w": w}, os.path.join(result_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("first", [None, 3], ids=["equal_shares", "uneven_shares"])
@pytest.mark.parametrize("kind", ["clip", "paper", "release", "first_order"])
def test_two_processes_equal_one(kind, first, tmp_path):
    """Equal shares (4 + 4 pairs) and uneven ones (3 + 5, ``DistInfo.uneven``: what --skip_unreadable_images
    leaves): the losses, weights and updated parameters of one process on all 8 pairs."""
    ref_params, ref_loss, ref_w = _step(kind, DistInfo(), _local_batch(0, 1))
    mp.start_processes(_worker, args=(2, free_port(), kind, str(tmp_path), first), nprocs=2, join=True,
                       start_method="spawn")
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    assert torch.allclose(torch.cat([p["loss"] for p in parts]), ref_loss, atol=1e-5)
    if ref_w is not None:
        assert torch.allclose(torch.cat([p["w"] for p in parts]), ref_w, atol=1e-5)
    for r in range(2):
        for a, b in zip(parts[r]["params"], ref_params):
            assert torch.allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- the memory bank, built by every rank

def _bank_files(root):
    from npc.data import memory_bank_dir

    return {p.name: p.read_bytes() for p in sorted(memory_bank_dir(root).glob("0.6_mbank_*"))}


@pytest.mark.parametrize("pretrained", ["demo-base", "none"])
def test_bank_built_by_two_processes_equals_one(demo_root, base_dir, tmp_path, pretrained):
    """Each rank encodes its share of the training set; rank 0 fits the GMM and writes: the files are the
    bytes one process writes. ``--pretrained none`` is seeded: two builds (processes) agree."""
    from helpers import run_args

    files = {}
    for world in (1, 2):
        root = tmp_path / f"w{world}" / "demo"
        shutil.copytree(demo_root, root)
        argv = run_args(root, base_dir, tmp_path / "logs", "--noise_ratio", "0.6", "--eval_batch_size", "16",
                        "--pretrained", pretrained)
        mp.start_processes(bank_worker, args=(world, free_port(), argv), nprocs=world, join=True,
                           start_method="spawn")
        files[world] = _bank_files(root)
    assert sorted(files[1]) == ["0.6_mbank_img_idx.npy", "0.6_mbank_info.json", "0.6_mbank_pclean.csv",
                                "0.6_mbank_pclean.npy",
                                "0.6_mbank_txt_idx.npy"]
    for name in files[1]:
        assert files[1][name] == files[2][name], name


def test_shards_are_whole_batches_in_order():
    from npc.evaluation import shard_bounds

    for n, bs, world in [(80, 16, 2), (400, 16, 2), (7, 16, 2), (100, 8, 3), (64, 16, 4)]:
        bounds = [shard_bounds(n, bs, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % bs == 0 for start, _ in bounds)


def test_random_init_is_seeded_and_leaves_the_global_stream():
    from npc.model import RANDOM_INIT_SEED

    torch.manual_seed(1)
    a = create_model("npc-micro", "none", init_seed=RANDOM_INIT_SEED)[0]
    after = torch.rand(1)
    torch.manual_seed(2)
    b = create_model("npc-micro", "none", init_seed=RANDOM_INIT_SEED)[0]
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after)  # the global random stream did not move
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- a torchrun job that loses a rank

def test_torchrun_rank_killed_mid_epoch_then_resume_equals_uninterrupted(demo_root, base_dir, tmp_path):
    import json

    from helpers import run_args

    script = tmp_path / "kill.py"
    script.write_text(TORCHRUN_KILL)
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)  # the runs add a noisy split to it
    logs = tmp_path / "logs"
    common = ("--epochs", "2", "--noise_ratio", "0.2", "--batch_size", "32", "--eval_splits", "dev")
    full = torchrun(script, 0, 0, run_args(root, base_dir, logs, *common, "--experiments", "full"))
    assert full.returncode == 0, full.stderr[-3000:]

    killed = torchrun(script, 20, 1, run_args(root, base_dir, logs, *common, "--experiments", "k"))
    out = killed.stdout + killed.stderr
    assert killed.returncode != 0
    # the job ends, naming the rank that died and how; the run's last checkpoint is epoch 1's
    assert re.search(r"rank\s*:\s*1\b", out) and "SIGKILL" in out, out[-3000:]
    # a rank that noticed before torchrun stopped it says so in one line (rank 0: in log.txt too)
    errors = [line for line in killed.stderr.splitlines() if line.startswith("error:")]
    assert all("lost contact with another process of the job" in line and "--resume latest" in line
               for line in errors), errors
    ckpts = logs / "k" / "checkpoints"
    assert torch.load(ckpts / "latest.pt", map_location="cpu", weights_only=True)["epoch"] == 1

    resumed = torchrun(script, 0, 0, run_args(root, base_dir, logs, *common, "--experiments", "k",
                                               "--resume", "latest"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(logs / "full/checkpoints/latest.pt", map_location="cpu", weights_only=True)
    b = torch.load(ckpts / "latest.pt", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    records = [[{k: v for k, v in json.loads(line).items() if k != "pairs_per_s"}
                for line in (logs / name / "metrics.jsonl").read_text().splitlines()] for name in ("full", "k")]
    assert records[0] == records[1]


def test_torchrun_npc_run_builds_the_bank_one_process_builds(demo_root, base_dir, tmp_path):
    """main_NPC under torchrun: every rank encodes its share of the bank inside the run; the files are the
    bytes get_memorybank.py writes in one process."""
    from helpers import run_args

    from helpers import npc_bank_by_torchrun_and_by_one_process

    roots = [tmp_path / "a" / "demo", tmp_path / "b" / "demo"]
    for root in roots:
        shutil.copytree(demo_root, root)
    flags = ("--noise_ratio", "0.6", "--batch_size", "32")
    npc_bank_by_torchrun_and_by_one_process(tmp_path, run_args(roots[0], base_dir, tmp_path / "logs", *flags),
                                            run_args(roots[1], base_dir, tmp_path / "logs", *flags))
    a, b = _bank_files(roots[0]), _bank_files(roots[1])
    assert len(a) == 5 and "0.6_mbank_pclean.csv" in a and a == b


# ----------------------------------------------------------------------------- one writer per run folder

# Rank 0 of a 2-process job pauses before its second optimizer step until the test says go.
TORCHRUN_PAUSE = r"""
import os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from helpers import before_step

flag = Path(sys.argv[1])


def pause():
    flag.with_suffix(".paused").write_text(str(os.getpid()))
    while not flag.with_suffix(".go").exists():
        time.sleep(0.05)


if int(os.environ["RANK"]) == 0:
    before_step(2, pause)
import main_CLIP
from npc.cli import cli
sys.exit(cli(main_CLIP.main, sys.argv[2:]))
"""


def _wait_for(path, proc, seconds=240):
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_torchrun_run_folder_lock_holds_across_ranks(demo_root, base_dir, tmp_path, capsys):
    """A running 2-process job holds its run folder: a second writer is refused, naming the job's rank 0.
    A job launched on a folder another process holds stops on every rank with that error (none hangs at a
    collective), and writes nothing into the folder."""
    import subprocess

    import main_CLIP
    from helpers import run_args
    from npc.cli import cli
    from npc.locks import file_lock

    logs = tmp_path / "logs"
    flags = ("--epochs", "1", "--batch_size", "32", "--eval_splits", "dev")
    script, flag = tmp_path / "pause.py", tmp_path / "flag"
    script.write_text(TORCHRUN_PAUSE)
    cmd, env, repo = torchrun_command(script, flag, *run_args(demo_root, base_dir, logs, *flags, "--experiments", "live"))
    job = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(flag.with_suffix(".paused"), job)
        rank0 = flag.with_suffix(".paused").read_text()
        capsys.readouterr()
        assert cli(main_CLIP.main, run_args(demo_root, base_dir, logs, *flags, "--experiments", "live")) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: the run folder") and f"in use by pid {rank0} " in err, err
        flag.with_suffix(".go").touch()
        out, errs = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, errs[-3000:]
    assert len((logs / "live" / "metrics.jsonl").read_text().splitlines()) == 1

    held = logs / "held"
    kill_script = tmp_path / "kill.py"
    kill_script.write_text(TORCHRUN_KILL)
    with file_lock(held / ".lock", "the test's run", wait=False):
        refused = torchrun(kill_script, 0, 0, run_args(demo_root, base_dir, logs, *flags, "--experiments", "held"))
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors and all(f"the run folder {held} is in use by pid {os.getpid()} " in line for line in errors), \
        refused.stderr[-3000:]
    assert sorted(p.name for p in held.iterdir()) == [".lock"]


# ----------------------------------------------------------------------------- unreadable images under torchrun

def test_torchrun_skip_unreadable_images_keeps_ranks_in_step(demo_root, base_dir, tmp_path):
    """An unreadable image's pairs fall on one rank's share of a step: the ranks hold uneven shares, take the
    same steps (no hang), and reach the weights, losses and step counts of one process on the same data."""
    import json

    import numpy as np

    import main_CLIP
    from helpers import run_args
    from npc import data
    from npc import loaders

    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    split = data.load_split(root, "demo", "train")
    bad = 3
    split.image_paths[bad].write_bytes(b"not a JPEG")
    # the test's premise: in some step of the epoch the image's pairs are not split evenly over the ranks
    pairs = np.flatnonzero(split.caption_image == bad)
    shares = [[np.isin(b, pairs).sum() for b in loaders.EpochBatchSampler(len(split), 32, 0, r, 2)] for r in (0, 1)]
    assert any(a != b for a, b in zip(*shares)), shares

    flags = ("--epochs", "1", "--batch_size", "32", "--eval_splits", "dev", "--seed", "0", "--skip_unreadable_images")
    logs = tmp_path / "logs"
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_KILL)
    job = torchrun(script, 0, 0, run_args(root, base_dir, logs, *flags, "--experiments", "two"))
    assert job.returncode == 0, job.stderr[-3000:]
    torch.set_num_threads(1)
    try:
        main_CLIP.main(run_args(root, base_dir, logs, *flags, "--experiments", "one"))
    finally:
        torch.set_num_threads(2)
    two, one = [[json.loads(line) for line in (logs / n / "metrics.jsonl").read_text().splitlines()]
                for n in ("two", "one")]
    assert two[0]["skipped_images"] == one[0]["skipped_images"] == 1
    assert two[0]["step"] == one[0]["step"] == len(split) // 32
    assert abs(two[0]["train_loss"] - one[0]["train_loss"]) < 1e-4
    a, b = [torch.load(logs / n / "checkpoints/latest.pt", map_location="cpu", weights_only=True)["state_dict"]
            for n in ("two", "one")]
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_torchrun_resume_of_a_run_that_does_not_exist_leaves_no_folder(demo_root, base_dir, tmp_path):
    from helpers import run_args

    script, logs = tmp_path / "run.py", tmp_path / "logs"
    script.write_text(TORCHRUN_KILL)
    job = torchrun(script, 0, 0, run_args(demo_root, base_dir, logs, "--epochs", "1", "--experiments", "typo",
                                           "--resume", "latest"))
    assert job.returncode != 0
    errors = [line for line in job.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("holds no run to continue" in line for line in errors), job.stderr[-3000:]
    assert not (logs / "typo").exists()
