"""torchrun / DDP helpers. Single-process runs go through the same code with world_size 1."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # Ranks may hold different numbers of pairs in a step (``--skip_unreadable_images`` drops the pairs of
    # unreadable images from one rank's share): gathers exchange row counts and pad, offsets and gradient
    # averages follow the counts. Off (equal shares, no extra collectives) unless a run needs it.
    uneven: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if str(device).startswith("cuda"):
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def row_counts(n: int, info: DistInfo, device=None) -> List[int]:
    """Every rank's number of rows (``n`` on this rank), in rank order; ``device``: the collective's (the
    backend's: a CUDA device under NCCL)."""
    if not info.enabled:
        return [n]
    if not info.uneven:
        return [n] * info.world_size
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    counts = [torch.empty_like(mine) for _ in range(info.world_size)]
    dist.all_gather(counts, mine)
    return [int(c) for c in counts]


def row_offset(x: torch.Tensor, info: DistInfo) -> int:
    """The global position of this rank's first row of ``x`` when every rank's rows are concatenated."""
    return sum(row_counts(x.shape[0], info, x.device)[:info.rank]) if info.enabled else 0


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    if x.shape[0] == rows:
        return x.contiguous()
    return torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))])


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's rows in rank order; gradients flow back to the owning rank."""
    if not info.enabled:
        return x
    import warnings

    import torch.distributed.nn.functional as dnn

    counts = row_counts(x.shape[0], info, x.device)
    with warnings.catch_warnings():
        # Deprecated in favour of a private module; it remains the public autograd-aware all_gather.
        warnings.simplefilter("ignore", FutureWarning)
        parts = dnn.all_gather(_pad_rows(x, max(counts)))
    return torch.cat([part[:n] for part, n in zip(parts, counts)], dim=0)


def mean_over_ranks(value: torch.Tensor, rows: int, info: DistInfo):
    """``(mean, total rows)`` over ranks of a per-rank mean ``value`` over this rank's ``rows`` (e.g. a step's
    loss): each rank's share weighs its rows (equal shares: the plain average)."""
    if not info.enabled:
        return float(value), rows
    t = torch.stack([value.detach().float() * rows, torch.tensor(float(rows), device=value.device)])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t[0] / t[1]), int(t[1])


def _gather_padded(x: torch.Tensor, counts: List[int]) -> torch.Tensor:
    """``all_gather`` of every rank's ``x`` (``counts[r]`` rows on rank r), padded to the largest share and
    trimmed after, concatenated in rank order."""
    padded = _pad_rows(x, max(counts))
    parts = [torch.empty_like(padded) for _ in range(len(counts))]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts)], dim=0)


def gather_no_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return x
    return _gather_padded(x, row_counts(x.shape[0], info, x.device))


def gather_rows(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Every rank's rows of a 2-D tensor, concatenated in rank order, on every rank.

    Ranks may hold different numbers of rows (none too: an empty ``(0, 0)`` tensor takes the others'
    width), whatever ``info.uneven`` says: the row counts and widths are always exchanged.
    """
    if not info.enabled:
        return x
    shape = torch.tensor([x.shape[0], x.shape[1] if x.shape[0] else 0], dtype=torch.int64, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(info.world_size)]
    dist.all_gather(shapes, shape)
    if not x.shape[0]:
        x = x.new_zeros((0, max(int(s[1]) for s in shapes)))
    return _gather_padded(x, [int(s[0]) for s in shapes])


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads_(params, info: DistInfo) -> None:
    """Average the gradients of ``params`` over ranks in one flat all-reduce.

    Used instead of wrapping the model in DistributedDataParallel: the NPC step takes two
    gradients of one graph (``autograd.grad`` with ``retain_graph``), which DDP's hooks do not
    support, and an explicit reduction keeps one code path for 1 and N processes. With uneven
    shares, each rank's loss is scaled by :func:`share_of_mean` before its backward pass.
    """
    if not info.enabled:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad for p in params if p.grad is not None]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(info.world_size)
    for g, reduced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(reduced)


def share_of_mean(rows: int, info: DistInfo, device=None) -> float:
    """The factor that makes this rank's mean over its ``rows`` pairs its part of the global mean.

    Features are gathered with gradient, so every rank's backward pass reaches every rank's
    parameters, and :func:`all_reduce_grads_` averages over ranks: the result is the gradient of
    the average of the ranks' losses. That is the global mean when the shares are equal (factor 1);
    with uneven shares, rank r's mean must weigh ``rows_r * world / total rows``.
    """
    if not info.uneven:
        return 1.0
    counts = row_counts(rows, info, device)
    return rows * info.world_size / sum(counts)
