"""Does NPC's negative impact detect noisy pairs, and which estimator of it does?

On the demo, for fixed checkpoints (the base model, and NPC ``paper`` after its first epoch) and the
first ``--batches`` training batches of seed 0, every estimator scores every pair of each batch with
the model held fixed (``npc.steps.estimate``: the shipped estimators compute the weights,
nothing is trained). Reported per estimator: ROC-AUC of its score against the ground-truth noise
mask (clean = positive, so 0.5 is chance and 1 is perfect), and for weights the mean weight of
clean and noisy pairs. Estimators:

* ``siamese_paper`` / ``siamese_release``: the shipped weights; A' keeps one AdamW state across steps
  (persistent; at the NPC checkpoint it starts from the run's saved siamese state, at the base model
  empty), gradient x1 / x2.
* ``siamese_fresh``, ``siamese_beta1_0``, ``siamese_sgd``: A''s optimizer state emptied every step;
  AdamW with beta1 = 0 (persistent second moment); plain SGD (lr ``--sgd_lr``).
* ``*_img_side`` / ``*_txt_side``: the image-side or text-side ratio alone (``lI_before/lI_after``).
* ``oracle_loo_*`` (first ``--oracle_batches`` batches only): each pair's own effect, the change of
  its bank entries' losses between the siamese step on the whole batch and on the batch without the
  pair (``persistent``: AdamW with the persistent state restored before each step; ``sgd``: SGD).
  Score: minus the summed relative increase ``(after_with - after_without) / before``.
* ``first_order_score``: the first-order own effect (``npc.negative_impact.first_order_impact``:
  ``-<grad l_bank_i, grad l_i>`` through feature gradients, cosine kernel), as minus the summed
  relative increase of both bank losses: the continuous quantity, before any map to weights.
* ``first_order_uncentred``: the paper's formula on it as is (``after = before + lr * delta``).
* ``first_order``: what ``--npc_estimator first_order`` ships (``first_order_after``: centred on
  the batch median, scale-free, then the paper's formula), and its image-/text-side ratios alone.
* ``gmm_p_clean``: the memory bank's GMM p(clean) (the field's standard signal), and
  ``small_loss``: minus the pair's loss under the checkpoint, computed on the same batches.

    python bench/negative_impact_study.py                       # 40% and 60% noise, base and NPC epoch 1
    python bench/negative_impact_study.py --noise 0.6           # one part (rows of other settings are kept)
    python bench/negative_impact_study.py --render              # table + figure from the JSON

Cost: about 4 s per batch and setting on 2 free CPU cores (the seven estimators), plus about a
minute per oracle batch; the per-step seconds in the JSON are measured here, under whatever else
ran on the machine: the cost ratios to a CLIP step come from ``bench/throughput.py``.

The NPC checkpoint is trained by ``main_NPC.py --seed 0 --epochs 5 --stop_after 1`` (the
benchmark's protocol, stopped after one epoch) into ``bench/runs/`` when missing.
Writes ``bench/results/estimator_study/negative_impact_study.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from npc import data
from npc import loaders
from npc import memory_bank as mb
from npc.detection import mean_noise_rank, weight_auc
from npc.io import atomic_write_json
from npc.reporting import REPO, environment, pyplot, save_figure, write_table
from npc.losses import clip_loss_per_sample
from npc.model import create_model, load_checkpoint_weights, logit_scale
from npc.negative_impact import encode_groups, trainable
from npc import methods
from npc.steps import estimate

RESULTS = REPO / "bench" / "results" / "estimator_study"
ROOT = REPO / "dataset" / "demo"
LR = 2e-4  # the benchmark's learning rate (bench/results/noisy_benchmark/lr_chosen.json)


def npc_checkpoint(noise: str, logs: Path) -> Path:
    """NPC ``paper`` after epoch 1 of the benchmark's 5-epoch protocol (seed 0), trained when missing."""
    exp = f"study_npc_paper_n{noise}_s0"
    path = logs / exp / "checkpoints" / "epoch1.pt"
    if not path.is_file():
        cmd = [sys.executable, "main_NPC.py", "--dataset", "demo", "--noise_ratio", noise, "--seed", "0",
               "--epochs", "5", "--stop_after", "1", "--keep_checkpoints", "-1", "--lr", repr(LR), "--logs",
               str(logs), "--experiments", exp, "--no_progress"]
        print("training the NPC checkpoint:", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                       stdout=subprocess.DEVNULL)
    return path


def fresh_opt(model, kind: str, lr: float):
    params = trainable(model)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    beta1 = 0.0 if kind == "beta1_0" else 0.9
    return torch.optim.AdamW(params, lr=lr, betas=(beta1, 0.98), eps=1e-6, weight_decay=0.2)


def siamese_estimator(siamese, optimizer, variant: str = "paper", state: str = "persistent"):
    """The shipped siamese estimator (as ``--method npc_paper``/``npc_release`` build it) around a given A' and optimizer."""
    est = methods.get_method(f"npc_{variant}").build_estimator()
    est.state = state
    est.attach_siamese(siamese, optimizer)
    return est


def loo_oracle(model, batch, configs: dict, n_pairs: int) -> dict:
    """Own effect of each pair: bank losses after the siamese step on the batch minus after the step without it.

    ``configs``: name -> (optimizer kind, lr, optimizer state to restore before each step or None).
    Returns name -> (n_pairs,) summed relative increase of the image- and text-side bank losses of
    the batch's first ``n_pairs`` pairs (each left out in turn).
    """
    params = trainable(model)
    feats = {}
    losses = encode_groups(model, batch, ("pair", "bankI", "bankT"), _single(), first=("pair",), features=feats)
    before = torch.stack([losses["bankI"], losses["bankT"]]).detach()
    img, txt = feats["pair"]
    scale = logit_scale(model)
    b = img.shape[0]
    n_pairs = min(n_pairs, b)
    subsets = [torch.arange(b)] + [torch.cat([torch.arange(i), torch.arange(i + 1, b)]) for i in range(n_pairs)]
    siamese = copy.deepcopy(model)
    out = {}
    after = {name: [] for name in configs}
    for s in subsets:
        grads = torch.autograd.grad(clip_loss_per_sample(img[s], txt[s], scale).mean(), params, retain_graph=True,
                                    allow_unused=True)
        for name, (kind, lr, state) in configs.items():
            with torch.no_grad():
                torch._foreach_copy_(trainable(siamese), params)
            opt = fresh_opt(siamese, kind, lr)
            if state is not None:  # a copy: load_state_dict keeps the tensors it is given, and steps update them in place
                opt.load_state_dict(copy.deepcopy(state))
                for g in opt.param_groups:
                    g["lr"] = lr
            for p, g in zip(trainable(siamese), grads):
                p.grad = torch.zeros_like(p) if g is None else g.detach().clone()
            opt.step()
            with torch.no_grad():
                a = encode_groups(siamese, batch, ("bankI", "bankT"), _single())
            after[name].append(torch.stack([a["bankI"], a["bankT"]]))
    for name, rows in after.items():
        full, without = rows[0], torch.stack(rows[1:])  # without[i]: (2, B), pair i left out
        own = full[:, :n_pairs] - without[torch.arange(n_pairs), :, torch.arange(n_pairs)].t()  # (2, n_pairs)
        out[name] = (own / before[:, :n_pairs]).sum(0)
    return out


def _single():
    from npc.distributed import DistInfo

    return DistInfo()


def study_one(noise: str, which: str, args) -> list:
    torch.manual_seed(0)
    model, preprocess, tokenizer = create_model("npc-tiny", "demo-base", demo_base_path=_base_path())
    siamese_state = None
    if which == "npc_epoch1":
        ckpt_path = npc_checkpoint(noise, args.logs)
        ckpt = load_checkpoint_weights(model, ckpt_path)
        siamese_state = ckpt.get("siamese_optimizer")
    split, mask = data.load_train_split(ROOT, "demo", 5, float(noise) if noise != "0.0" else 0.0,
                                        log=lambda *_: None)
    bank_dir = data.memory_bank_dir(ROOT)
    bank = mb.load_bank(bank_dir, noise, split)
    p_clean = mb.load_pclean(bank_dir, noise, len(split))
    ds = loaders.PairBatches(split, preprocess, tokenizer, bank)
    sampler = loaders.EpochBatchSampler(len(split), 128, seed=0)
    batches = [b for b, _ in zip(sampler, range(args.batches))]
    model.train()

    siamese = copy.deepcopy(model)
    specs = {  # name -> (optimizer kind, variant, siamese_state, restore the run's persistent state)
        "siamese_paper": ("adamw", "paper", "persistent", True),
        "siamese_release": ("adamw", "release", "persistent", True),
        "siamese_fresh": ("adamw", "paper", "fresh", False),
        "siamese_beta1_0": ("beta1_0", "paper", "persistent", False),
        "siamese_sgd": ("sgd", "paper", "persistent", False),
    }
    opts = {}
    for name, (kind, _, _, restore) in specs.items():
        opts[name] = fresh_opt(siamese, kind, args.sgd_lr if kind == "sgd" else LR)
        if restore and siamese_state is not None:  # a copy each: the optimizers must not share moment tensors
            opts[name].load_state_dict(copy.deepcopy(siamese_state))
            for g in opts[name].param_groups:
                g["lr"] = LR
    first_order = methods.get_method("npc_first_order").build_estimator()
    scores = {k: [] for k in ("index",)}
    t0 = time.perf_counter()
    timing = {}
    oracle_idx, oracle = [], {}
    for n_batch, idx in enumerate(batches):
        batch = ds[idx]
        scores["index"].append(batch["index"].numpy())
        for name, (kind, variant, state, _) in specs.items():
            t = time.perf_counter()
            out = estimate(model, batch, siamese_estimator(siamese, opts[name], variant, state))
            timing[name] = timing.get(name, 0.0) + time.perf_counter() - t
            _collect(scores, name, out)
        t = time.perf_counter()
        out = estimate(model, batch, first_order)
        timing["first_order"] = timing.get("first_order", 0.0) + time.perf_counter() - t
        _collect(scores, "first_order", out)
        for name, score in first_order_raw(model, batch).items():
            scores.setdefault(name, []).append(score)
        scores.setdefault("small_loss", []).append(-out["pair_loss"].numpy())
        if n_batch < args.oracle_batches:
            configs = {"persistent": ("adamw", LR, siamese_state), "sgd": ("sgd", args.sgd_lr, None)}
            for name, own in loo_oracle(model, batch, configs, args.oracle_pairs).items():
                oracle.setdefault(f"oracle_loo_{name}", []).append(-own.numpy())
            oracle_idx.append(batch["index"].numpy()[:args.oracle_pairs])
        print(f"  {noise} {which}: batch {n_batch + 1}/{len(batches)} ({time.perf_counter() - t0:.0f}s)", flush=True)

    index = np.concatenate(scores.pop("index"))
    clean = ~mask[index]
    rows = []
    scores["gmm_p_clean"] = [p_clean[index]]
    for name, parts in scores.items():
        s = np.concatenate(parts)
        row = {"estimator": name, "noise_ratio": float(noise), "checkpoint": which, "n_pairs": int(len(s)),
               "auc": weight_auc(s, ~clean), **_mnr(s, clean)}
        if name in specs or name in ("first_order", "first_order_uncentred"):
            row.update(mean_w_clean=float(s[clean].mean()), mean_w_noisy=float(s[~clean].mean()),
                       seconds_per_step=timing[name] / len(batches) if name in timing else None)
        rows.append(row)
    if oracle:
        o_index = np.concatenate(oracle_idx)
        for name, parts in oracle.items():
            o_score = np.concatenate(parts)
            rows.append({"estimator": name, "noise_ratio": float(noise), "checkpoint": which,
                         "n_pairs": int(len(o_index)), "auc": weight_auc(o_score, mask[o_index]),
                         **_mnr(o_score, ~mask[o_index])})
    return rows


def _mnr(score: np.ndarray, clean: np.ndarray) -> dict:
    """OSA Table 9's mean noise rank on 2,000 of the scored pairs (all when fewer), with its optimum and chance."""
    r = mean_noise_rank(score, ~clean, n=2000, seed=0)
    return {"mean_noise_rank": r["mean_noise_rank"], "mean_noise_rank_optimal": r["mean_noise_rank_optimal"],
            "mean_noise_rank_random": r["mean_noise_rank_random"], "mean_noise_rank_n": r["n"]}


def first_order_raw(model, batch) -> dict:
    """The first-order quantity before the shipped map: its continuous score, and the paper's map on it.

    ``first_order_score``: minus the summed relative first-order increase of both bank losses.
    ``first_order_uncentred``: ``npc_weights`` with ``after = before + lr * delta`` (lr 2e-4, no
    centring): the paper's formula applied to the raw estimate.
    """
    from npc.distributed import DistInfo
    from npc.negative_impact import first_order_impact, npc_weights

    feats = {}
    with torch.no_grad():
        losses = encode_groups(model, batch, ("pair", "bankI", "bankT"), DistInfo(), features=feats)
        scale = logit_scale(model)
        d = {g: first_order_impact(*feats["pair"], *feats[g], scale, 1.0) for g in ("bankI", "bankT")}
        b = {g: losses[g] for g in ("bankI", "bankT")}
        w = npc_weights(b["bankI"], b["bankI"] + LR * d["bankI"], b["bankT"], b["bankT"] + LR * d["bankT"])[0]
    return {"first_order_score": -(d["bankI"] / b["bankI"] + d["bankT"] / b["bankT"]).numpy(),
            "first_order_uncentred": w.numpy()}


def _collect(scores: dict, name: str, out: dict) -> None:
    before_i, after_i, before_t, after_t = out["bank_losses"].numpy()
    scores.setdefault(name, []).append(out["weights"].numpy())
    scores.setdefault(f"{name}_img_side", []).append(before_i / after_i)
    scores.setdefault(f"{name}_txt_side", []).append(before_t / after_t)


def _base_path() -> Path:
    from npc.demo import demo_base_path

    return demo_base_path(REPO / "pre-trained_models", "npc-tiny", ROOT)


ORDER = ["siamese_paper", "siamese_release", "siamese_fresh", "siamese_beta1_0", "siamese_sgd",
         "siamese_paper_img_side", "siamese_paper_txt_side", "siamese_fresh_img_side", "siamese_fresh_txt_side",
         "oracle_loo_persistent", "oracle_loo_sgd", "first_order_score", "first_order_uncentred", "first_order",
         "first_order_img_side", "first_order_txt_side",
         "gmm_p_clean", "small_loss"]


def render(record: dict, out_md: Path, out_png: Path) -> str:
    rows = record["rows"]
    cols = sorted({(r["noise_ratio"], r["checkpoint"]) for r in rows}, key=lambda c: (c[0], c[1] != "base"))
    names = [n for n in ORDER if any(r["estimator"] == n for r in rows)]
    names += sorted({r["estimator"] for r in rows} - set(names))
    get = {(r["estimator"], r["noise_ratio"], r["checkpoint"]): r for r in rows}
    head = " | ".join(f"AUC {n:.0%} {c}" for n, c in cols) + " | " + " | ".join(f"MNR {n:.0%} {c}" for n, c in cols)
    lines = [f"| estimator | {head} | mean w clean / noisy ({cols[0][0]:.0%} {cols[0][1]}) |",
             "|---" * (2 * len(cols) + 2) + "|"]
    for name in names:
        cells = []
        for c in cols:
            r = get.get((name, *c))
            cells.append(f"{r['auc']:.3f}" if r else "–")
        for c in cols:  # OSA Table 9's mean noise rank (higher is better); rows measured before it have none
            r = get.get((name, *c)) or {}
            cells.append(f"{r['mean_noise_rank']:.1f}" if r.get("mean_noise_rank") is not None else "–")
        r0 = get.get((name, *cols[0]), {})
        w = f"{r0['mean_w_clean']:.3f} / {r0['mean_w_noisy']:.3f}" if "mean_w_clean" in r0 else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {w} |")
    ref = {c: next((r for r in rows if (r["noise_ratio"], r["checkpoint"]) == c and "mean_noise_rank_optimal" in r
                    and not r["estimator"].startswith("oracle")), None) for c in cols}
    if any(ref.values()):
        lines += ["", "MNR: OSA Table 9's mean noise rank of the noisy pairs among 2,000 scored pairs drawn with seed 0 "
                  "(ranked by score, descending; oracle rows: their own pairs). Optimal / random: "
                  + "; ".join(f"{n:.0%} {c} {r['mean_noise_rank_optimal']:.1f} / {r['mean_noise_rank_random']:.1f}"
                              for (n, c), r in ref.items() if r) + "."]
    table = write_table(lines, out_md)
    plt = pyplot()
    if plt is None:
        return table
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(cols)
    for k, c in enumerate(cols):
        ys = [get[(n, *c)]["auc"] if (n, *c) in get else np.nan for n in names]
        ax.bar(np.arange(len(names)) + k * width, ys, width, label=f"{c[0]:.0%} noise, {c[1]}")
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.axhline(0.9, color="g", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    ax.set_xticklabels(names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("ROC-AUC vs noise mask")
    ax.set_ylim(0.3, 1.0)
    ax.legend(fontsize=8)
    ax.set_title("negative-impact estimators on the demo (0.5 = chance)")
    save_figure(fig, out_png)
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noise", default="0.4,0.6", help="comma list of noise ratios")
    p.add_argument("--checkpoints", default="base,npc_epoch1", help="comma list of base, npc_epoch1")
    p.add_argument("--batches", type=int, default=40, help="training batches (of 128 pairs) scored per setting")
    p.add_argument("--oracle_batches", type=int, default=2, help="batches of the leave-one-out oracle")
    p.add_argument("--oracle_pairs", type=int, default=48, help="pairs left out in turn per oracle batch")
    p.add_argument("--sgd_lr", type=float, default=0.05, help="lr of the SGD siamese and the SGD oracle")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--logs", type=Path, default=Path("bench/runs"))
    p.add_argument("--out", type=Path, default=RESULTS / "negative_impact_study.json")
    p.add_argument("--render", action="store_true", help="only redraw table and figure from the JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.chdir(REPO)
    import json

    if not args.render:
        # Settings (noise, checkpoint) already in the JSON are replaced, the others kept: the study can
        # run in parts. Each row carries the command and commit that produced it.
        record = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
        meta = {**environment(__file__, argv, torch.device("cpu")), "lr": LR, "sgd_lr": args.sgd_lr,
                "batches": args.batches, "oracle_batches": args.oracle_batches,
                "oracle_pairs": args.oracle_pairs, "batch_size": 128}
        for noise in args.noise.split(","):
            for which in args.checkpoints.split(","):
                rows = [{**r, **meta} for r in study_one(noise, which, args)]
                record["rows"] = [r for r in record["rows"]
                                  if (r["noise_ratio"], r["checkpoint"]) != (float(noise), which)] + rows
                atomic_write_json(args.out, record)
    record = json.loads(args.out.read_text())
    print(render(record, args.out.with_suffix(".md"), args.out.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
