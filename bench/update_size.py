"""How far one training step moves the model in the release's fp16 numerics and under amp_bf16, side by side.

    python bench/update_size.py --model ViT-B/32 --batch 256 --device cuda --json   # the paper's model (GPU)
    python bench/update_size.py --model npc-micro --batch 16                         # a CPU rehearsal

Random weights (OpenAI's fp16 values: weights are rounded to fp16 first) and random pixels and
caption-shaped tokens; a synthetic memory bank in which half the entries are the pair itself. For
each regime (``fp16``: pure fp16 weights and torch's plain AdamW with fp16 moments, the release's;
``amp_bf16``: fp32 weights, bf16 autocast, fused AdamW) and each method (``npc_release``, ``clip``), at
the release's learning rates (2e-7 NPC, 5e-7 CLIP; ``--lr`` overrides both), one step from the same
weights and batch, then: the norm of the update of the model (and of the siamese copy A'), the
fraction of elements it changed, and, among the elements whose optimizer kept a second moment in
fp16, the fraction where that moment is 0 (underflowed: their step is ``lr * m_hat / eps``).
The record gives each regime's update norm and the ratio fp16 / amp_bf16.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial

import torch

from npc import methods
from npc.distributed import DistInfo
from npc.estimators import RunInputs
from npc.model import create_model
from npc.reporting import environment
from npc.steps import train_step
from npc.train_utils import autocast_for, make_optimizer, resolve_device

LR = {"npc_release": 2e-7, "clip": 5e-7}


def make_batch(b: int, image_size: int, context: int, vocab: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(2 * b, context, dtype=torch.long)
    for i in range(2 * b):
        k = int(torch.randint(min(8, context - 3), min(25, context - 1), (1,), generator=g))
        tokens[i, 0], tokens[i, k + 1] = vocab - 2, vocab - 1   # start and end of text (the largest id)
        tokens[i, 1:k + 1] = torch.randint(1, vocab - 2, (k,), generator=g)
    own = torch.arange(b)
    other = torch.where(torch.rand(b, generator=g) < 0.5, own, torch.randint(b, 2 * b, (b,), generator=g))
    return {"images": torch.randn(2 * b, 3, image_size, image_size, generator=g), "texts": tokens,
            "pair_img": own, "pair_txt": own, "bankI_img": other, "bankI_txt": other,
            "bankT_img": other.roll(1), "bankT_txt": other.roll(1), "index": own.clone()}


def one_step(method_name: str, precision: str, weights: dict, model_name: str, batch, lr: float, device):
    model = create_model(model_name, "none", precision="fp16" if precision == "fp16" else "fp32", device="cpu")[0]
    with torch.no_grad():
        for name, p in model.state_dict().items():
            p.copy_(weights[name].to(p.dtype))
    model = model.to(device).train()
    method = methods.get_method(method_name)
    make_opt = partial(make_optimizer, lr=lr, beta1=0.9, beta2=0.98, eps=1e-6, weight_decay=0.2)
    estimator = method.build_estimator()
    estimator.bind(RunInputs(model=model, make_optimizer=make_opt, info=DistInfo(), batch_size=len(batch["index"])))
    optimizer = make_opt(model)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    batch = {k: v.to(device) for k, v in batch.items()}
    t0 = time.perf_counter()
    train_step(model, optimizer, batch, estimator, method.objective, autocast=autocast_for(precision, device),
               grad_clip=10.0 if method.script == "npc" else 0.0)
    seconds = time.perf_counter() - t0
    out = {"method": method_name, "precision": precision, "lr": lr, "step_seconds": seconds}
    parts = [("model", model, optimizer, before)]
    parts += [("siamese", m, o, before) for m, o in zip(estimator.trained_models, estimator.optimizers)]
    for label, m, opt, start in parts:
        delta = torch.cat([(p.detach().float() - start[n]).flatten() for n, p in m.named_parameters()])
        v16 = [opt.state[p]["exp_avg_sq"] for p in m.parameters()
               if p in opt.state and opt.state[p]["exp_avg_sq"].dtype == torch.float16]
        out[label] = {"update_norm": float(delta.norm()), "changed_fraction": float((delta != 0).float().mean()),
                      "fp16_second_moment_zero_fraction":
                          float(torch.cat([v.flatten() == 0 for v in v16]).float().mean()) if v16 else None}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="npc-micro")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--lr", type=float, default=None, help="one learning rate for both methods (default: the release's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the record as JSON (else a table)")
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    torch.manual_seed(a.seed)
    base = create_model(a.model, "none", device="cpu")[0]
    weights = {k: v.half().float() for k, v in base.state_dict().items()}
    size = base.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    batch = make_batch(a.batch, size, int(base.context_length), int(base.vocab_size), a.seed)
    rows = []
    for method_name in ("npc_release", "clip"):
        lr = a.lr or LR[method_name]
        for precision in ("fp16", "amp_bf16"):
            rows.append(one_step(method_name, precision, weights, a.model, batch, lr, device))
    ratios = {}
    for method_name in ("npc_release", "clip"):
        r = {x["precision"]: x for x in rows if x["method"] == method_name}
        for part in ("model", "siamese"):
            if part in r["fp16"]:
                ratios[f"{method_name} {part}"] = r["fp16"][part]["update_norm"] / max(r["amp_bf16"][part]["update_norm"],
                                                                                      1e-30)
    record = {"model": a.model, "batch": a.batch, **environment(__file__, argv, device), "rows": rows,
              "update_norm_ratio_fp16_over_amp_bf16": ratios}
    if a.json:
        print(json.dumps(record, indent=1))
    else:
        for r in rows:
            print(f"{r['method']:12s} {r['precision']:9s} lr {r['lr']:.0e}: " + "; ".join(
                f"{k} |update| {v['update_norm']:.3e}, changed {v['changed_fraction']:.4f}"
                + (f", v=0 in fp16 {v['fp16_second_moment_zero_fraction']:.4f}"
                   if v['fp16_second_moment_zero_fraction'] is not None else "")
                for k, v in r.items() if isinstance(v, dict)))
        for k, v in ratios.items():
            print(f"update norm fp16 / amp_bf16, {k}: {v:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
