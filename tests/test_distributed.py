"""Two CPU processes (gloo) on a split global batch give the single-process step on the whole batch."""
import copy
import os
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
