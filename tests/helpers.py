"""What the test files share: the common flags of a run on the tiny dataset, a tiny model and batch,
generated CSV data, reading a run's records, and the hooks and script of the tests' child processes.

Fixtures live in conftest.py; everything else a test file needs from another lives here. Child
processes import this module too (their ``PYTHONPATH`` is :data:`CHILD_PYTHONPATH`), so importing it
must stay cheap: npc is imported inside the functions that need it.
"""
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# The PYTHONPATH of the tests' child processes: the repository, and this folder (for this module).
CHILD_PYTHONPATH = os.pathsep.join([str(REPO), str(TESTS)])

TINY_SIZES = dict(n_pretrain=120, n_train=80, n_dev=16, n_test=20)
MODEL = "npc-micro"


# ----------------------------------------------------------------------------- runs on the tiny dataset

def run_args(root, base_dir, logs, *extra):
    """Common flags for running the real entry points on the tiny dataset."""
    return ["--dataset", "demo", "--dataset_root", str(root), "--pretrained_dir", str(base_dir),
            "--vision_model", MODEL, "--logs_dir", str(logs), "--batch_size", "16", "--eval_batch_size", "64",
            "--num_workers", "0", "--no_progress", "--warmup", "2", *extra]


def _records(run_dir):
    """metrics.jsonl without the timing, which differs between any two runs."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "pairs_per_s"} for line in lines]


# ----------------------------------------------------------------------------- a tiny model and batch

def _setup(seed=0, b=6, n_img=9, n_txt=12):
    from npc.model import create_model

    torch.manual_seed(seed)
    model, _, _ = create_model("npc-micro", "none")
    g = torch.Generator().manual_seed(seed)
    batch = {
        "images": torch.randn(n_img, 3, 32, 32, generator=g),
        "texts": torch.randint(1, 400, (n_txt, 24), generator=g),
        "pair_img": torch.tensor([0, 1, 2, 3, 4, 5]), "pair_txt": torch.tensor([0, 1, 2, 3, 4, 5]),
        # bank entries: some are the pair itself, some shared between pairs, some new
        "bankI_img": torch.tensor([0, 6, 2, 7, 6, 8]), "bankI_txt": torch.tensor([0, 6, 2, 7, 6, 8]),
        "bankT_img": torch.tensor([1, 1, 7, 3, 8, 5]), "bankT_txt": torch.tensor([9, 1, 10, 3, 11, 5]),
        "index": torch.arange(b),
    }
    return model, batch


def _per_sample(model, batch, group):
    from npc.losses import clip_loss_per_sample
    from npc.model import encode, logit_scale

    img, txt = encode(model, batch["images"][batch[f"{group}_img"]], batch["texts"][batch[f"{group}_txt"]])
    return clip_loss_per_sample(img, txt, logit_scale(model))


# ----------------------------------------------------------------------------- your own data: images and CSVs

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20),
          "white": (240, 240, 240), "black": (10, 10, 10)}
SHAPES = ("square", "stripe")


def csv_flags(files, logs, *extra):
    return ["--dataset", "csv", "--train_data", str(files["train"]), "--dev_data", str(files["dev"]),
            "--test_data", str(files["test"]), "--vision_model", "npc-micro", "--pretrained", "none",
            "--logs_dir", str(logs), "--batch_size", "8", "--eval_batch_size", "64", "--lr", "1e-4",
            "--warmup", "2", "--num_workers", "0", "--no_progress", "--epochs", "1", *extra]


def report_flags(root, base_dir, out, *extra):
    return ["--dataset", "demo", "--dataset_root", str(root), "--pretrained_dir", str(base_dir), "--vision_model",
            MODEL, "--eval_batch_size", "64", "--num_workers", "0", "--no_progress", "--out", str(out), *extra]


def make_images_and_csvs(folder, n_train=24, n_dev=6, n_test=6, sep="\t"):
    """Images of coloured shapes in folder/images (PNG and JPEG), and train/dev/test CSVs with 1 to 3
    captions per image (rows of an image not adjacent)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    kinds = [(c, s) for c in COLORS for s in SHAPES]
    files = {}
    k = 0
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        rows = []
        for i in range(n):
            color, shape = kinds[k % len(kinds)]
            k += 1
            img = Image.new("RGB", (40, 40), (128, 128, 128))
            box = (8, 8, 32, 32) if shape == "square" else (0, 16, 40, 24)
            img.paste(COLORS[color], box)
            name = f"images/{split}_{i}.{'png' if i % 2 else 'jpg'}"
            img.save(folder / name)
            caps = [f"a {color} {shape}", f"{shape} in {color}", f"the {color} {shape} on grey"][:1 + i % 3]
            rows += [(name, c) for c in caps]
        rows = rows[1::2] + rows[::2]  # an image's rows are not consecutive
        path = folder / f"{split}.csv"
        path.write_text(f"filepath{sep}title\n" + "".join(f"{a}{sep}{b}\n" for a, b in rows), encoding="utf-8")
        files[split] = path
    return files


# ----------------------------------------------------------------------------- child processes

def before_step(k: int, action) -> None:
    """Call ``action()`` just before this process's ``k``-th optimizer step (counting from 1): a hook on
    ``npc.steps.train_step``."""
    from npc import steps

    real_step, done = steps.train_step, [0]

    def step(*a, **kw):
        done[0] += 1
        if done[0] == k:
            action()
        return real_step(*a, **kw)

    steps.train_step = step


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# Runs main_CLIP.main in a subprocess that SIGKILLs itself at a chosen point: in the middle of an
# epoch (after a number of optimizer steps), half-way through writing a checkpoint file, or at the
# write of an epoch's best.pt (after its metrics and its complete epoch file, before latest.pt moves on).
# Run as [python, -c, KILL_SCRIPT, mode, at, threads, *main_CLIP flags] with PYTHONPATH=CHILD_PYTHONPATH.
KILL_SCRIPT = r"""
import sys
import torch
torch.set_num_threads(int(sys.argv[3]))  # the test process's: float sums depend on the thread count
import main_CLIP
from npc import checkpoint
from helpers import before_step, kill_self

mode, at = sys.argv[1], int(sys.argv[2])
if mode == "mid_epoch":
    before_step(at + 1, kill_self)
elif mode == "best_copy":
    real_write = checkpoint.write_best

    def write(ckpt, dst):
        if dst.name == "best.pt" and ckpt["epoch"] == at:
            kill_self()
        return real_write(ckpt, dst)

    checkpoint.write_best = write
else:
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("epoch") == at:
            f.write(b"PK half a checkpoint")
            f.flush()
            kill_self()
        return real_save(obj, f, *a, **kw)

    torch.save = save
main_CLIP.main(sys.argv[4:])
"""


# ----------------------------------------------------------------------------- a method's step through the registry

def method_step(model, siamese, opt, sopt, batch, *, variant="paper", impl="efficient", info=None, autocast=None,
                grad_clip=10.0, reweight=True, estimator="siamese", siamese_state="persistent"):
    """One step of the NPC method these parts name, built through the registry as --method and its flags
    build it; the siamese estimator steps the given copy with the given optimizer."""
    from npc import methods
    from npc.steps import train_step

    base = methods.get_method("npc_release" if variant == "release" else "npc_paper")
    options = {"impl": impl, "state": siamese_state} if estimator == "siamese" else None
    m = methods.compose(base, estimator=estimator, reweight=reweight, options=options)
    est = m.build_estimator()
    if hasattr(est, "attach_siamese"):  # the siamese estimator; the first-order one has no copy
        est.attach_siamese(siamese, sopt)
    return train_step(model, opt, batch, est, m.objective, info=info, autocast=autocast, grad_clip=grad_clip,
                      reweight=m.reweight)


def clip_step(model, opt, batch, *, info=None, autocast=None, grad_clip=10.0, weights=None):
    """One step of --method clip (with ``weights``: the CLIP objective with those per-pair weights)."""
    from npc.estimators import NoWeights, WeightEstimator
    from npc.steps import train_step

    class FixedWeights(WeightEstimator):
        def weights(self, state):
            return weights

    return train_step(model, opt, batch, NoWeights() if weights is None else FixedWeights(), "clip", info=info,
                      autocast=autocast, grad_clip=grad_clip)


# ----------------------------------------------------------------------------- several processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bank_worker(rank, world, port, argv):
    torch.set_num_threads(1)  # the same arithmetic in every process (float sums depend on the thread count)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")
    import get_memorybank

    get_memorybank.main(argv)


# One rank of a 2-process torchrun job (gloo, CPU) SIGKILLs itself after a number of its optimizer steps.
TORCHRUN_KILL = r"""
import os, sys
import torch
torch.set_num_threads(1)
from helpers import before_step, kill_self

at, victim = int(sys.argv[1]), int(sys.argv[2])
if at and int(os.environ["RANK"]) == victim:
    before_step(at + 1, kill_self)
import main_CLIP
from npc.cli import cli
sys.exit(cli(main_CLIP.main, sys.argv[3:]))
"""


def torchrun_command(script, *args):
    """A 2-process torchrun of ``script ARGS`` on CPU: (command, environment, working folder)."""
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--monitor_interval", "0.1", str(script), *map(str, args)]
    return cmd, env, REPO


def torchrun(script, at, victim, argv):
    cmd, env, repo = torchrun_command(script, at, victim, *argv)
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)


def npc_bank_by_torchrun_and_by_one_process(tmp_path, two: list, one: list) -> None:
    """main_NPC on ``two`` (its flags, 2 processes under torchrun: every rank encodes its share of the bank
    inside the run, 1 epoch, dev only), then get_memorybank.py on ``one`` (its flags, 1 process)."""
    import torch.multiprocessing as mp

    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_KILL.replace("main_CLIP", "main_NPC"))
    job = torchrun(script, 0, 0, [*two, "--epochs", "1", "--eval_splits", "dev", "--experiments", "n2"])
    assert job.returncode == 0, job.stderr[-3000:]
    assert "(2 processes)" in job.stdout
    mp.start_processes(bank_worker, args=(1, free_port(), one), nprocs=1, join=True, start_method="spawn")
