"""Two CPU processes (gloo) on a split global batch give the single-process step on the whole batch; two
processes build the memory bank byte for byte as one does."""
import copy
import os
import shutil
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from npc.distributed import DistInfo
from npc.model import create_model
from npc.steps import clip_step, npc_step

B = 8


def _global_batch():
    g = torch.Generator().manual_seed(7)
    images = torch.randn(3 * B, 3, 32, 32, generator=g)  # pair images, image-bank images, text-bank images
    texts = torch.randint(1, 500, (3 * B, 24), generator=g)
    return images, texts


def _local_batch(rank: int, world: int):
    images, texts = _global_batch()
    n = B // world
    rows = [torch.arange(k * B + rank * n, k * B + (rank + 1) * n) for k in range(3)]
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
        out = npc_step(model, siamese, opt, sopt, batch, variant="paper" if fo else kind, info=info,
                       estimator="first_order" if fo else "siamese")
        w = out["weights"]
    return [p.detach().clone() for p in model.parameters()], out["pair_loss"], w


def _worker(rank, world, port, kind, result_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        params, loss, w = _step(kind, DistInfo(rank, world, rank), _local_batch(rank, world))
        torch.save({"params": params, "loss": loss, "w": w}, os.path.join(result_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["clip", "paper", "release", "first_order"])
def test_two_processes_equal_one(kind, tmp_path):
    ref_params, ref_loss, ref_w = _step(kind, DistInfo(), _local_batch(0, 1))
    mp.start_processes(_worker, args=(2, _free_port(), kind, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    assert torch.allclose(torch.cat([p["loss"] for p in parts]), ref_loss, atol=1e-5)
    if ref_w is not None:
        assert torch.allclose(torch.cat([p["w"] for p in parts]), ref_w, atol=1e-5)
    for r in range(2):
        for a, b in zip(parts[r]["params"], ref_params):
            assert torch.allclose(a, b, atol=1e-5)


# ----------------------------------------------------------------------------- the memory bank, built by every rank

def _bank_worker(rank, world, port, argv):
    torch.set_num_threads(1)  # the same arithmetic in every process (float sums depend on the thread count)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), HF_HUB_OFFLINE="1")
    import get_memorybank

    get_memorybank.main(argv)


def _bank_files(root):
    from npc.data import memory_bank_dir

    return {p.name: p.read_bytes() for p in sorted(memory_bank_dir(root).glob("0.6_mbank_*"))}


@pytest.mark.parametrize("pretrained", ["demo-base", "none"])
def test_bank_built_by_two_processes_equals_one(demo_root, base_dir, tmp_path, pretrained):
    """Each rank encodes its share of the training set; rank 0 fits the GMM and writes: the files are the
    bytes one process writes. ``--pretrained none`` is seeded: two builds (processes) agree."""
    from conftest import run_args

    files = {}
    for world in (1, 2):
        root = tmp_path / f"w{world}" / "demo"
        shutil.copytree(demo_root, root)
        argv = run_args(root, base_dir, tmp_path / "logs", "--noise_ratio", "0.6", "--eval_batch_size", "16",
                        "--pretrained", pretrained)
        mp.start_processes(_bank_worker, args=(world, _free_port(), argv), nprocs=world, join=True,
                           start_method="spawn")
        files[world] = _bank_files(root)
    assert sorted(files[1]) == ["0.6_mbank_img_idx.npy", "0.6_mbank_info.json", "0.6_mbank_pclean.npy",
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

