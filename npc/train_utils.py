"""Small training helpers shared by the engine and the demo's base pretraining.

Device and precision resolution, the optimizer, the lr schedule, seeding and RNG state. This module
sits below both :mod:`npc.engine` and :mod:`npc.demo` (which pretrains the demo's base model with
the same optimizer and schedule), so neither imports the other for them.
"""
from __future__ import annotations

import math
import random
from contextlib import nullcontext
from functools import partial
from typing import Dict, Optional

import numpy as np
import torch


def available_devices() -> list:
    """The ``--device`` values this machine can run on."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: Optional[str]) -> torch.device:
    """``--device``, or cuda when a GPU is there, else cpu. A device this machine does not have (or a name torch
    does not know) is one line naming the flag and what is available."""
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from npc.errors import ConfigError

    available = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device}: not a device name; this machine has {', '.join(available)}") from None
    usable = dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_available()
                                   and (dev.index is None or dev.index < torch.cuda.device_count())) \
        or (dev.type == "mps" and "mps" in available)
    if not usable:
        why = "no GPU that torch can use" if dev.type == "cuda" and not torch.cuda.is_available() else "no such device"
        raise ConfigError(f"--device {device}: this machine has {why}; it has {', '.join(available)} (leave "
                          f"--device out to take cuda when there is a GPU, else cpu)")
    return dev


def resolve_precision(precision: Optional[str], device: torch.device, dataset: str = "demo") -> str:
    """``--precision``, or its default: on CUDA the numerics the default learning rates were tuned in (the
    release's pure fp16 for real data, whose defaults are the release's; bf16 autocast for the demo);
    fp32 on CPU (the release, too, trains in fp32 on CPU)."""
    if precision:
        return precision
    if device.type != "cuda":
        return "fp32"
    from npc.sources import dataset_definition

    return dataset_definition(dataset).cuda_precision


def autocast_for(precision: str, device: torch.device):
    if precision == "amp_bf16":
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return nullcontext


def lr_at(step: int, epoch: int, *, base_lr: float, warmup: int, total_steps: int, epochs: int,
          schedule: str = "cosine") -> float:
    """Linear warmup, then cosine per iteration (``cosine``) or once per epoch (``staircase``).

    ``staircase`` is what the release's scheduler amounts to: its cosine length is counted in
    samples, so within 5 epochs the lr steps through about 1.0, 0.90, 0.65, 0.35, 0.10 of base.
    """
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "staircase":
        return base_lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    progress = (step - warmup) / max(1, total_steps - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float):
    """AdamW on every trainable parameter, weight decay on all of them (as the release and OpenAI's
    fine-tuning recipe do).

    Where a parameter is held in fp16 (``--precision fp16``) the optimizer is torch's plain AdamW, as
    the release builds it: it keeps each moment in its parameter's dtype, so the fp16 second moment
    ``(1 - beta2) g^2`` underflows to 0 for ``|g|`` below about 1e-3 and the step there is
    ``lr * m_hat / eps`` (docs/running.md#precision). The fused kernel computes in fp32 and would not
    reproduce that; it serves where every parameter is fp32, where it computes the same step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    fused = True if all(p.dtype == torch.float32 for p in params) else None
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, fused=fused)


def set_lr(optimizers, lr: float) -> None:
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def rng_state() -> Dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict) -> None:
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(batch: Dict[str, torch.Tensor], device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
