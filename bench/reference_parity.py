"""Parity with the authors' code: their training steps, unmodified, beside this project's on identical inputs.

    git clone https://github.com/ZhangXu0963/NPC ../NPC       # the NPC release
    git clone https://github.com/leolee99/OSA ../OSA           # OSA
    python bench/reference_parity.py --npc_release ../NPC --osa ../OSA

Checks (each in fp32 and, where the reference has it, in the release's pure fp16):

``npc_release``  the release's ``main_NPC.py`` (its ``main()``: model, siamese copy, both AdamW
                 optimizers and their schedulers as it builds them, then its ``train()``) against
                 ``--method npc_release``;
``clip``         the release's ``main_CLIP.py`` against ``--method clip`` with the real-data defaults of
                 ``main_CLIP.py`` (no gradient clipping);
``osa``          OSA's ``main_clip.py`` (its CPU path: fp32) against ``--method osa`` (no clipping);
``bank``         the release's ``get_memorybank.py`` (its ``get_mbank``, fp32) against this project's memory bank
                 (npc/bank_math.py on its own encoding), under ``--bank_recipe release`` and the default.

The bank check runs a copy of the release's bank script with the smallest patches that make it run
(``BANK_PATCHES``: a hard-coded GPU id, an undefined logger, the second pass's batch tuple order, the
output folder), on the step checks' weights and ``--bank_images`` random images of two captions each in
batches of ``--batch`` consecutive pairs; its GMM is observed (input and p(clean)) by a subclass that
computes nothing else, and numpy's global generator is seeded with 99 before it, as the release's
scripts seed it. It passes when ``--bank_recipe release`` gives the release's clean set and every chosen
entry exactly, per-pair losses within 64 units in the last place of fp32 and p(clean) within 1e-4; the
default recipe's differences (min-max scaled GMM input, normalized neighbours) are reported beside it.

How their code runs here, unmodified: in a child process of its own, with the reference checkout
first on ``sys.path``; ``.cuda()`` is an identity (CPU only); ``clip.clip.load`` returns their own
``build_model`` of the shared weights (converted to fp16 by their ``convert_weights`` for the fp16
check, as their loader does on a GPU; ``.float()`` for fp32, as it does on CPU); their data loaders
yield the shared batches and their evaluation returns 0; everything else (argument parsing, seeding,
optimizers, schedulers, losses, the training loop) is theirs. Their modules import ``pandas`` and
``pkg_resources`` for code the step does not reach; where those are not installed an empty module
(and ``packaging``) stands in, and the record says so. Their step is observed, never changed:
optimizer step hooks copy parameters and moments after each step, a ``TorchFunctionMode`` sees the
tensors ``backward`` is called on (the step's losses) and the weights their code computes.

The shared inputs: a small OpenAI-architecture CLIP (224 px, patch 32, width 64, 2 layers per
tower, 49,408-token vocabulary), random initial weights, random images and token sequences, and for
NPC the image-side and text-side memory-bank pairs of each training pair (some of them the batch's own
pairs, as in a real bank). Both sides take ``--steps`` steps (AdamW state kept across steps); this
project's side is given the learning rate the reference's scheduler set at each step.

The noise floor: each side runs again (``--permutations`` times) on the same batches with their
pairs permuted (the same pairs, so the same mathematics; only the order of float sums changes), and
once with every image pixel moved by one unit in the last place (rounding noise at the input, which
reaches per-pair values that a permutation leaves untouched). A
quantity passes when the largest difference between the two sides is within ``--floor_factor`` times
the noise floor: the largest of the sides' differences to themselves, and at least 4 units in the
last place (of the check's precision, fp32 or fp16) of the quantity's largest magnitude, the rounding
of one computation, which a permutation cannot show where it does not disturb a quantity (a per-pair
value computed row by row). Adam turns rounding noise on elements whose second moment is about eps
into steps of about lr, so parameters are compared where ``sqrt(v_hat)`` of the reference is above
``--well_conditioned`` x eps or is 0 (an fp16 underflow: there the step is ``lr * m_hat / eps``,
linear in m); every element is reported too. The number of parameter elements that differ between
the sides is judged against the number that differ between a side's reruns (in fp16 an update is a
few units in the last place, so the count says more than the largest difference). Moments are
compared everywhere.

Writes ``bench/results/parity/parity.json`` (every number, the references' commits, device,
versions, this project's commit) and ``parity.md``. No code of the references enters this repository.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
import types
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's npc, whatever an editable install points at
    sys.path.insert(1, str(REPO))
OUT = REPO / "bench" / "results" / "parity"
ARCH = dict(embed_dim=32, image_size=224, patch=32, width=64, layers=2, context=77, vocab=49408)
LR = {"fp32": 1e-5, "fp16": 2e-7}   # fp16: the release's NPC lr, in the numerics it was tuned in
ULPS = 4   # the least noise floor: 4 units in the last place (of the check's precision) of a quantity's magnitude
CHECKS = {"npc_release": ("npc_release", "main_NPC"), "clip": ("npc_release", "main_CLIP"),
          "osa": ("osa", "main_clip"), "bank": ("npc_release", "get_memorybank")}
# check -> (the reference checkout it needs, its script)


# ----------------------------------------------------------------------------- shared inputs

def _tokens(n: int, g: torch.Generator) -> torch.Tensor:
    """Token sequences as CLIP's tokenizer writes them: start, 3-20 tokens, end (the largest id), zeros."""
    out = torch.zeros(n, ARCH["context"], dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(3, 21, (1,), generator=g))
        out[i, 0] = ARCH["vocab"] - 2
        out[i, 1:k + 1] = torch.randint(1, ARCH["vocab"] - 2, (k,), generator=g)
        out[i, k + 1] = ARCH["vocab"] - 1
    return out


def make_inputs(path: Path, batch: int, steps: int, seed: int) -> None:
    """Weights (OpenAI parameter names, fp32) and ``steps`` batches with their bank pairs."""
    import open_clip

    cfg = {"embed_dim": ARCH["embed_dim"], "quick_gelu": True,
           "vision_cfg": {"image_size": ARCH["image_size"], "layers": ARCH["layers"], "width": ARCH["width"],
                          "patch_size": ARCH["patch"]},
           "text_cfg": {"context_length": ARCH["context"], "vocab_size": ARCH["vocab"], "width": ARCH["width"],
                        "heads": ARCH["width"] // 64, "layers": ARCH["layers"]}}
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps):
        n_img, n_txt = batch + batch // 2, batch + batch // 2
        images = torch.randn(n_img, 3, ARCH["image_size"], ARCH["image_size"], generator=g)
        texts = _tokens(n_txt, g)
        pair = torch.arange(batch)
        # Bank entries: the pair itself, another pair of the batch, or a pair outside it.
        bank = {k: torch.randint(0, n_img, (batch,), generator=g) for k in ("bankI", "bankT")}
        batches.append({"images": images, "texts": texts, "pair_img": pair, "pair_txt": pair,
                        "bankI_img": bank["bankI"], "bankI_txt": bank["bankI"],
                        "bankT_img": bank["bankT"], "bankT_txt": bank["bankT"], "index": pair.clone()})
    # fp16 values, as OpenAI publishes CLIP's weights: the release's loader rounds every weight it converts
    # to fp16 before it loads, on CPU too (then casts back to fp32).
    weights = {k: v.half().float() for k, v in model.state_dict().items()}
    torch.save({"config": cfg, "state_dict": weights, "batches": batches, "seed": seed}, path)


def jitter_inputs(src: Path, dst: Path, precision: str, seed: int) -> None:
    """The inputs with every image pixel moved by one unit in the last place of ``precision`` (random sign)."""
    inputs = torch.load(src, weights_only=False)
    unit = {"fp32": 2.0 ** -23, "fp16": 2.0 ** -10}[precision]
    g = torch.Generator().manual_seed(seed + 100)
    for b in inputs["batches"]:
        sign = torch.randint(0, 2, b["images"].shape, generator=g).float() * 2 - 1
        b["images"] = b["images"] * (1 + unit * sign)
    torch.save(inputs, dst)


def permuted(b: Dict[str, torch.Tensor], perm: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The same pairs in another order (each pair keeps its bank entries)."""
    return {k: (v[perm] if k not in ("images", "texts") else v) for k, v in b.items()}


def release_batch(b: Dict[str, torch.Tensor]):
    """The release's batch tuple: images, texts, _, img_ids, mbankI_imgs, mbankI_txts, mbankT_txts, mbankT_imgs."""
    im, tx = b["images"], b["texts"]
    return (im[b["pair_img"]], tx[b["pair_txt"]], b["index"], b["pair_img"], im[b["bankI_img"]], tx[b["bankI_txt"]],
            tx[b["bankT_txt"]], im[b["bankT_img"]])


# ----------------------------------------------------------------------------- observing a step

class _Observer(torch.overrides.TorchFunctionMode):
    """Records the tensors ``backward`` is called on and the per-pair results of ``torch.where``."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch, self.backward, self.where = batch, [], []

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.backward:
            self.backward.append(float(args[0].detach().float()))
        out = func(*args, **kwargs)
        if func is torch.where and isinstance(out, torch.Tensor) and out.shape == (self.batch,):
            self.where.append(out.detach().float().clone())
        return out


def _snapshot(named_params, optimizer) -> Dict[str, Dict[str, torch.Tensor]]:
    out = {"param": {}, "exp_avg": {}, "exp_avg_sq": {}, "step": {}}
    for name, p in named_params:
        out["param"][name] = p.detach().float().clone()
        st = optimizer.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                out[k][name] = st[k].detach().float().clone()
        if "step" in st:
            out["step"][name] = torch.as_tensor(float(st["step"]))
    return out


# ----------------------------------------------------------------------------- the reference's side

def _empty_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    return module


def _shims(note: List[str], pandas: bool = True) -> None:
    """Empty stand-ins for modules the references import but their training step never uses (``pandas=False``:
    no stand-in for pandas, which the bank script does not import and scikit-learn must not find empty)."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        if pandas:
            sys.modules["pandas"] = _empty_module("pandas")
            note.append("pandas (imported by util.py, unused by the step) stood in by an empty module")
    try:
        from pkg_resources import packaging  # noqa: F401
    except ImportError:
        import packaging.version

        shim = _empty_module("pkg_resources")
        shim.packaging = packaging
        sys.modules["pkg_resources"] = shim
        note.append("pkg_resources (imported by clip/clip.py for a version check) stood in by the packaging library")


def run_reference(check: str, ref_dir: Path, inputs: Dict, precision: str, perm, workdir: Path) -> Dict:
    note: List[str] = []
    _shims(note)
    sys.path.insert(0, str(ref_dir))
    os.chdir(workdir)
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    import clip  # noqa: F401  (theirs)
    from clip.model import build_model

    module = __import__(CHECKS[check][1])
    batches = [permuted(b, perm) for b in inputs["batches"]]
    B, steps = len(batches[0]["index"]), len(batches)

    models: List = []   # the models their main() loads: the trained one first (then the siamese / estimator copy)

    def load(name, device="cpu", jit=False):
        model = build_model({k: v.clone() for k, v in inputs["state_dict"].items()})  # their fp16 conversion
        models.append(model.float() if precision == "fp32" else model)
        return models[-1], None

    module.clip.clip.load = load
    loader = [release_batch(b) if check == "npc_release" else release_batch(b)[:3] for b in batches]
    fake = (loader, B * steps)  # their loaders report the number of samples
    if check == "osa":
        module.prepare_dataloaders = lambda *a, **k: {"train": fake, "val": ([], 0), "test": ([], 0)}
    else:
        module.prepare_dataloader = lambda args, root, pre, logger, split: {split: fake if "train" in split else ([], 0)}
    module.evaluate = lambda *a, **k: 0.0
    # OSA's main() reloads the checkpoint it has just saved (its optimizer state holds numpy scalars), with
    # torch.load's default, which is weights_only=True since torch 2.6: let it read what it wrote.
    real_torch_load = torch.load
    torch.load = lambda f, *a, **k: real_torch_load(f, *a, **{"weights_only": False, **k})
    if check == "osa":
        original = module.weight_function
        seen, shifts = [], []

        def weight_function(x, thr=15):
            shifts.append(float(thr))
            seen.append(original(x, thr))
            return seen[-1]

        module.weight_function = weight_function
    records: List[Dict] = []
    observer = _Observer(B)

    def install_hooks(main_opt, siamese_opt=None):
        """Copies of parameters and moments after every step of each optimizer their main() built."""
        model, siamese = models[0], models[1] if siamese_opt is not None else None
        if siamese is not None:
            siamese_opt.register_step_post_hook(
                lambda opt, a, k: records.append({"siamese": _snapshot(siamese.named_parameters(), opt)}))
        else:
            main_opt.register_step_pre_hook(lambda opt, a, k: records.append({}))
        main_opt.register_step_post_hook(lambda opt, a, k: records[-1].update(
            model=_snapshot(model.named_parameters(), opt), lr=float(opt.param_groups[0]["lr"])))

    optimizers = []

    class AdamW(torch.optim.AdamW):  # records each optimizer their main() builds; computes nothing else
        def __init__(self, params, *a, **k):
            super().__init__(list(params), *a, **k)
            optimizers.append(self)
            if len(optimizers) == (2 if check == "npc_release" else 1):  # the model's, then the siamese's
                install_hooks(*optimizers)

    torch.optim.AdamW = AdamW
    module.optim.AdamW = AdamW
    # Their flags, parsed by their own parser. The lr is the fp32/fp16 check's; warmup 0 and their
    # samples-counted cosine keep it within 1e-3 of constant over the few steps run here.
    sys.argv = [f"{CHECKS[check][1]}.py", "--batch_size", str(B), "--epochs", "1", "--lr", str(LR[precision]),
                "--warmup", "0", "--checkpoint_path", str(workdir), "--experiments", "run", "--dataset", "coco",
                "--display", "1000000", "--seed", str(inputs["seed"])]
    with observer:
        module.main()
    out = {"records": records, "backward": observer.backward, "note": note,
           "initial": {k: v.float().clone() for k, v in inputs["state_dict"].items()}}
    if check == "npc_release":
        out["weights"] = observer.where
        out["loss"] = observer.backward[2::3]          # per step: siamese loss twice, then final_loss
    elif check == "osa":
        out["weights"] = [w.detach().float().clone() for w in seen[0::2]]  # i2t's; t2i's are the same numbers
        out["loss"] = observer.backward
        out["osa_shift"] = shifts[0]
    else:
        out["loss"] = observer.backward
    return out


# ----------------------------------------------------------------------------- this project's side

def run_project(check: str, inputs: Dict, precision: str, perm, workdir: Path, lrs: List[float],
                shift: Optional[float] = None) -> Dict:
    import open_clip

    from npc import methods
    from npc.estimators import RunInputs
    from npc.distributed import DistInfo
    from npc.model import create_model
    from npc.params import parse_args
    from npc.steps import train_step
    from npc.train_utils import make_optimizer, set_lr

    cfg_dir = workdir / "configs"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / "parity-tiny.json").write_text(json.dumps(inputs["config"]))
    open_clip.add_model_config(cfg_dir)
    weights = workdir / "weights.pt"
    torch.save({"state_dict": inputs["state_dict"]}, weights)  # a release-format checkpoint
    script = "npc" if check == "npc_release" else "clip"
    optim = parse_args(["--dataset", "coco", "--method", check, "--seed", str(inputs["seed"])], script).optim
    model = create_model("parity-tiny", str(weights), precision=precision)[0]
    model.train()
    make_opt = partial(make_optimizer, lr=lrs[0], beta1=optim.beta1, beta2=optim.beta2, eps=optim.eps,
                       weight_decay=optim.weight_decay)
    batches = [permuted(b, perm) for b in inputs["batches"]]
    B = len(batches[0]["index"])
    estimator = methods.get_method(check).build_estimator()
    estimator.bind(RunInputs(model=model, make_optimizer=make_opt, info=DistInfo(), batch_size=B, seed=inputs["seed"]))
    notes = []
    if check == "osa":
        # OSA's shift is drawn from random inputs of a generator seeded with --seed; the reference draws them
        # from the global generator after building its models. The step is compared at the reference's shift.
        notes.append(f"OSA shift: this project's own draw {estimator.shift:.6g}; the reference's {shift:.6g} "
                     f"(used here, so that the steps are compared on equal terms)")
        estimator.shift = shift
    optimizer = make_opt(model)
    optimizers = [optimizer, *estimator.optimizers]
    method = methods.get_method(check)
    records, weights_out, losses = [], [], []
    for lr, batch in zip(lrs, batches):
        set_lr(optimizers, lr)
        out = train_step(model, optimizer, batch, estimator, method.objective, grad_clip=optim.grad_clip,
                         reweight=method.reweight)
        rec = {"model": _snapshot(model.named_parameters(), optimizer), "lr": lr}
        if check == "npc_release":
            rec["siamese"] = _snapshot(estimator.siamese.named_parameters(), estimator.optimizer)
        records.append(rec)
        losses.append(float(out["loss"]))
        if out.get("weights") is not None:
            weights_out.append(out["weights"].detach().float().clone())
    return {"records": records, "weights": weights_out, "loss": losses, "grad_clip": optim.grad_clip, "note": notes}


# ----------------------------------------------------------------------------- comparison

def _unpermute(vectors: List[torch.Tensor], perm: torch.Tensor) -> List[torch.Tensor]:
    out = []
    for v in vectors:
        u = torch.empty_like(v)
        u[perm] = v
        out.append(u)
    return out


def _cat(snapshot: Dict, key: str, names) -> torch.Tensor:
    return torch.cat([snapshot[key][n].flatten() for n in names])


def compare(check: str, precision: str, runs: Dict, perms: List[torch.Tensor], eps: float, factor: float,
            well: float) -> Dict:
    """Differences between the sides against each side's own permutation differences, per quantity and step."""
    ref, own = runs["ref"], runs["own"]
    for r, perm in zip(runs["ref_perms"] + runs["own_perms"], perms + perms):
        if r.get("weights"):
            r["weights"] = _unpermute(r["weights"], perm)
    rows = []

    unit = {"fp32": 2.0 ** -23, "fp16": 2.0 ** -10}[precision]

    def add(name, get):
        """``get(run)``: the quantity (a 1-D tensor) of a run."""
        a, b = get(ref), get(own)
        if not a.numel():
            return
        diff = float((a - b).abs().max())
        magnitude = float(a.abs().max())
        permuted_ = max([float((get(r) - a).abs().max()) for r in runs["ref_perms"]] +
                        [float((get(r) - b).abs().max()) for r in runs["own_perms"]])
        # A quantity the permutation cannot disturb (a max, a per-pair value computed row by row) still
        # carries the rounding of one computation: a few units in the last place of its magnitude.
        floor = max(permuted_, ULPS * unit * magnitude)
        rows.append({"quantity": name, "max_diff": diff, "noise_floor": floor, "permutation_diff": permuted_,
                     "magnitude": magnitude, "passes": diff <= factor * floor})

    steps = len(ref["records"])
    for s in range(steps):
        for part in ["model"] + (["siamese"] if check == "npc_release" else []):
            held = ref["records"][s][part]
            names = list(held["param"])
            differ = sorted(set(names) ^ set(own["records"][s][part]["param"]))
            if differ:
                raise SystemExit(f"{check}: parameter names differ between the sides: {differ[:5]}")
            snap = lambda r, key: _cat(r["records"][s][part], key, names)  # noqa: E731
            for key in ("exp_avg", "exp_avg_sq"):
                if all(n in held[key] for n in names):
                    add(f"step {s + 1} {part} {key}", partial(snap, key=key))
            init = torch.cat([ref["initial"][n].float().flatten() for n in names])
            update = lambda r: snap(r, "param") - init  # noqa: E731
            add(f"step {s + 1} {part} parameters (all elements; change from the initial weights)", update)
            # How many elements differ at all: in fp16 an update is a few units in the last place, so the
            # count says more than the largest difference (the fused kernel, for one, moves almost none).
            count = lambda x, y: int((snap(x, "param") != snap(y, "param")).sum())  # noqa: E731
            between = count(ref, own)
            within = max([count(r, ref) for r in runs["ref_perms"]] + [count(r, own) for r in runs["own_perms"]])
            moved = int((snap(ref, "param") != init).sum())
            rows.append({"quantity": f"step {s + 1} {part} parameter elements that differ (of {moved} the reference "
                                     f"moved)", "max_diff": between, "noise_floor": within, "magnitude": moved,
                         "passes": between <= factor * within})
            if all(n in held["exp_avg_sq"] for n in names):
                step_t = float(next(iter(held["step"].values())))
                v_hat = _cat(held, "exp_avg_sq", names) / (1 - 0.98 ** step_t)
                # Adam's step is g / (|g| + eps): near |g| ~ eps it turns rounding noise into lr-sized steps.
                # Where the second moment is 0 (fp16 underflow) the step is lr * m_hat / eps, linear in m.
                mask = (v_hat.sqrt() > well * eps) | (v_hat == 0)
                rows.append({"quantity": f"step {s + 1} {part} elements judged (well-conditioned or v = 0)",
                             "count": int(mask.sum()),
                             "of": int(mask.numel())})
                if mask.any():
                    add(f"step {s + 1} {part} parameters (sqrt(v_hat) > {well:g} eps or v = 0)",
                        lambda r: update(r)[mask])
        if ref.get("weights"):
            add(f"step {s + 1} per-pair weights", lambda r: r["weights"][s])
            differ = lambda x, y: int(((x - y).abs() > 1e-3).sum())  # noqa: E731
            rows[-1]["pairs_differing"] = differ(ref["weights"][s], own["weights"][s])
            rows[-1]["pairs_differing_in_reruns"] = max(
                [differ(r["weights"][s], ref["weights"][s]) for r in runs["ref_perms"]]
                + [differ(r["weights"][s], own["weights"][s]) for r in runs["own_perms"]])
        add(f"step {s + 1} loss", lambda r: torch.tensor([r["loss"][s]]))
    judged = [r for r in rows if "passes" in r and "all elements" not in r["quantity"]]
    return {"check": check, "precision": precision, "steps": steps, "batch": int(len(perms[0])), "rows": rows,
            "passes": all(r["passes"] for r in judged),
            "grad_clip_project": own.get("grad_clip"), "lr": [r["lr"] for r in ref["records"]],
            "reference_notes": ref.get("note", []) + own.get("note", [])}


# ----------------------------------------------------------------------------- the memory bank check
# The release's get_memorybank.py cannot run as shipped; these are the only changes made to a copy of it, each
# (what it replaces, what replaces it, why). Everything else in it runs as written.
BANK_PATCHES = [
    ('os.environ["CUDA_VISIBLE_DEVICES"] = "7"', "pass  # (patched: no hard-coded GPU id)",
     "a hard-coded GPU id: the script hides every GPU but the eighth"),
    ("global logger", "import logging\nlogger = logging.getLogger('release.get_memorybank')  # (patched)",
     "an undefined logger: `global logger` at module level defines nothing, and the first log line raises NameError"),
    ("images, img_ids, texts, txt_ids = batch", "images, texts, txt_ids, img_ids = batch  # (patched)",
     "two batch tuple orders: the second pass unpacks (images, img_ids, texts, txt_ids) from the loader the first "
     "pass reads as (image, text, text_idx, img_id), the order of the release's training data set; the second "
     "pass is given the first's"),
    ("annotations/query_bank/", "annotations/memory_bank/",
     "another output folder: it writes annotations/query_bank/, its training (data.py) reads annotations/memory_bank/"),
]
BANK_NOISE_RATIO = 0.4
BANK_SEED = 99   # the release's --seed (its scripts seed numpy with it) and this project's --bank_seed default


def make_bank_inputs(path: Path, images: int, captions: int, batch: int, seed: int, weights: Path) -> None:
    """``images`` random images with ``captions`` consecutive captions each (the SCAN layout), in batches of
    ``batch`` consecutive pairs, and the step checks' weights."""
    shared = torch.load(weights, weights_only=False)
    g = torch.Generator().manual_seed(seed + 7)
    torch.save({"config": shared["config"], "state_dict": shared["state_dict"], "seed": seed, "batch": batch,
                "images": torch.randn(images, 3, ARCH["image_size"], ARCH["image_size"], generator=g),
                "texts": _tokens(images * captions, g),
                "caption_image": torch.arange(images).repeat_interleave(captions)}, path)


def _bank_batches(inputs: Dict):
    """The release's training loader, unshuffled, its first four fields: image, text, pair index, image id."""
    ci, B = inputs["caption_image"], inputs["batch"]
    return [(inputs["images"][ci[s:s + B]], inputs["texts"][s:s + B], torch.arange(s, min(s + B, len(ci))),
             ci[s:s + B]) for s in range(0, len(ci), B)]


def run_reference_bank(ref_dir: Path, inputs: Dict, workdir: Path, bank_seed: int) -> Dict:
    """The release's get_mbank (a patched copy) on the shared weights and pairs; its GMM observed, not changed."""
    import numpy as np

    note: List[str] = []
    _shims(note, pandas=False)
    sys.path.insert(0, str(ref_dir))
    os.chdir(workdir)
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    source = (ref_dir / "get_memorybank.py").read_text(encoding="utf-8")
    for old, new, _ in BANK_PATCHES:
        if old not in source:
            raise SystemExit(f"get_memorybank.py of {ref_dir}: no {old!r} to patch (another commit?)")
        source = source.replace(old, new)
    (workdir / "release_get_memorybank.py").write_text(source, encoding="utf-8")
    sys.path.insert(0, str(workdir))
    module = __import__("release_get_memorybank")
    from clip.model import build_model

    model = build_model({k: v.clone() for k, v in inputs["state_dict"].items()}).float()  # as its loader on CPU
    seen = {}

    class GaussianMixture(module.GaussianMixture):  # records the GMM's input and output; computes nothing else
        def fit(self, X, y=None):
            seen["losses"] = np.asarray(X, dtype=np.float64).ravel().copy()
            return super().fit(X, y)

        def predict_proba(self, X):
            out = super().predict_proba(X)
            seen["p_clean"] = out[:, self.means_.argmin()].copy()
            return out

    module.GaussianMixture = GaussianMixture
    (workdir / "dataset" / "parity" / "annotations" / "memory_bank").mkdir(parents=True)
    np.random.seed(bank_seed)  # its scripts seed numpy's global generator (util.set_seed_logger); its GMM draws from it
    module.get_mbank(_bank_batches(inputs), model, BANK_NOISE_RATIO, "parity")
    folder = workdir / "dataset" / "parity" / "annotations" / "memory_bank"
    files = {k: (folder / f"{BANK_NOISE_RATIO}_mbank_{k}_idx.npy").read_bytes() for k in ("img", "txt")}
    return {"losses": seen["losses"], "p_clean": seen["p_clean"], "files": files, "note": note}


def run_project_bank(inputs: Dict, workdir: Path, bank_seed: int) -> Dict:
    """This project's bank of the same weights and pairs: its encoding (npc.model.encode, one pass per distinct
    image) and its arithmetic (npc.bank_math.build_memory_bank), under each --bank_recipe."""
    import numpy as np
    import open_clip

    from npc import bank_math
    from npc.bank_build import Unnormalized
    from npc.model import create_model, encode, logit_scale

    cfg_dir = workdir / "configs"
    cfg_dir.mkdir(exist_ok=True)
    (cfg_dir / "parity-tiny.json").write_text(json.dumps(inputs["config"]))
    open_clip.add_model_config(cfg_dir)
    weights = workdir / "weights.pt"
    torch.save({"state_dict": inputs["state_dict"]}, weights)
    model = create_model("parity-tiny", str(weights), precision="fp32")[0].eval()
    split = _bank_split(inputs)
    B, scale = inputs["batch"], None
    out = {}
    with torch.no_grad():
        scale = logit_scale(model).item()
        for recipe in bank_math.RECIPES:
            m = Unnormalized(model) if recipe == "release" else model
            img = torch.cat([encode(m, images=x)[0] for x in inputs["images"].split(B)]).float()
            txt = torch.cat([encode(m, texts=t)[1] for t in inputs["texts"].split(B)]).float()
            bank, _, p = bank_math.build_memory_bank(img, txt, split, scale, batch_size=B, clean_threshold=0.9,
                                                     seed=bank_seed, recipe=recipe)
            feats = (bank_math.normalized(img), bank_math.normalized(txt)) if recipe == "release" else (img, txt)
            out[recipe] = {"losses": bank_math.per_sample_losses(*feats, split.caption_image, scale, B),
                           "p_clean": p, "image_bank": bank.image_bank, "text_bank": bank.text_bank}
            if recipe == "release":  # the project's neighbours (normalized) on the release recipe's clean set
                mixed = bank_math.build_bank_index(*feats, split.caption_image, p, 0.9)
                out["project_neighbours"] = {"image_bank": mixed.image_bank, "text_bank": mixed.text_bank}
    out["logit_scale"] = scale
    out["clean_threshold"] = 0.9
    out["n"] = int(np.asarray(split.caption_image).shape[0])
    return out


def _bank_split(inputs: Dict):
    import numpy as np

    from npc.data import Split

    ci = inputs["caption_image"].numpy().astype(np.int64)
    n_img = int(ci.max()) + 1
    return Split(name="train", captions=[""] * len(ci), image_ids=[str(i) for i in range(n_img)],
                 image_paths=[Path(f"{i}.jpg") for i in range(n_img)], caption_image=ci,
                 num_anns=len(ci) // n_img)


def compare_bank(ref: Dict, own: Dict, inputs: Dict, workdir: Path) -> Dict:
    """Side by side: every pair's loss and p(clean), the clean sets, the chosen entries (read from the release's
    files by this project's loader, the restricted unpickler)."""
    import numpy as np

    from npc.bank_files import load_bank

    folder = workdir / "release_bank"
    folder.mkdir(exist_ok=True)
    for k, data in ref["files"].items():
        (folder / f"{BANK_NOISE_RATIO}_mbank_{k}_idx.npy").write_bytes(data)
    released = load_bank(folder, BANK_NOISE_RATIO, _bank_split(inputs))
    thr = own["clean_threshold"]
    ref_clean = set(np.nonzero(ref["p_clean"] > thr)[0].tolist())
    unit = 2.0 ** -23
    loss_tol = 64 * unit * float(np.abs(ref["losses"]).max())   # fp32 losses computed by two codes: rounding
    sides = {}
    for name, side in (("release recipe", own["release"]), ("project recipe", own["project"])):
        clean = set(np.nonzero(side["p_clean"] > thr)[0].tolist())
        sides[name] = {
            "loss_max_diff": float(np.abs(side["losses"] - ref["losses"]).max()),
            "p_clean_max_diff": float(np.abs(side["p_clean"] - ref["p_clean"]).max()),
            "n_clean": len(clean), "clean_only_here": sorted(clean - ref_clean),
            "clean_only_release": sorted(ref_clean - clean),
            "image_entries_differ": int((side["image_bank"] != released.image_bank).sum()),
            "text_entries_differ": int((side["text_bank"] != released.text_bank).sum())}
    mixed = own["project_neighbours"]
    rel = sides["release recipe"]
    # The release recipe must give the release's bank: identical clean set and entries, losses and p(clean)
    # within rounding (p(clean) is a smooth function of the losses; 1e-4 is far above what 64 ulps move it).
    passes = (rel["loss_max_diff"] <= loss_tol and rel["p_clean_max_diff"] <= 1e-4 and not rel["clean_only_here"]
              and not rel["clean_only_release"] and rel["image_entries_differ"] == 0 and rel["text_entries_differ"] == 0)
    pairs = [{"pair": j, "image": int(inputs["caption_image"][j]), "loss_release": float(ref["losses"][j]),
              "loss_release_recipe": float(own["release"]["losses"][j]),
              "loss_project": float(own["project"]["losses"][j]),
              "p_clean_release": float(ref["p_clean"][j]), "p_clean_release_recipe": float(own["release"]["p_clean"][j]),
              "p_clean_project": float(own["project"]["p_clean"][j]),
              "text_entry_release": int(released.text_bank[j]),
              "text_entry_release_recipe": int(own["release"]["text_bank"][j]),
              "text_entry_project": int(own["project"]["text_bank"][j])} for j in range(own["n"])]
    images = [{"image": i, "image_entry_release": int(released.image_bank[i]),
               "image_entry_release_recipe": int(own["release"]["image_bank"][i]),
               "image_entry_project": int(own["project"]["image_bank"][i])} for i in range(len(released.image_bank))]
    return {"check": "bank", "precision": "fp32", "passes": passes, "loss_tolerance": loss_tol,
            "p_clean_tolerance": 1e-4, "n_pairs": own["n"], "n_images": len(released.image_bank),
            "n_clean_release": len(ref_clean), "batch": inputs["batch"], "logit_scale": own["logit_scale"],
            "sides": sides,
            "normalization_alone": {
                "image_entries_differ": int((mixed["image_bank"] != released.image_bank).sum()),
                "text_entries_differ": int((mixed["text_bank"] != released.text_bank).sum())},
            "patches": [{"replaced": old, "by": new, "why": why} for old, new, why in BANK_PATCHES],
            "reference_notes": ref.get("note", []), "pairs": pairs, "images": images}


def bank_summary(res: Dict) -> str:
    rel, proj = res["sides"]["release recipe"], res["sides"]["project recipe"]
    return (f"{'bank':12s} fp32: {'PASS' if res['passes'] else 'FAIL'} (--bank_recipe release: "
            f"{rel['image_entries_differ']} image and {rel['text_entries_differ']} text entries differ from the "
            f"release's; the project's default: {proj['image_entries_differ']} of {res['n_images']} image and "
            f"{proj['text_entries_differ']} of {res['n_pairs']} text entries, clean set {proj['n_clean']} vs "
            f"{res['n_clean_release']})")


def render_bank(res: Dict) -> List[str]:
    rel, proj, alone = res["sides"]["release recipe"], res["sides"]["project recipe"], res["normalization_alone"]
    lines = [f"## bank, fp32: {'PASS' if res['passes'] else 'FAIL'}", "",
             f"The release's `get_memorybank.py` (its `get_mbank`, a copy with the patches below) and this project's "
             f"bank arithmetic (`npc/bank_math.py`, on its own encoding) of the same weights and {res['n_pairs']} pairs "
             f"({res['n_images']} images, two captions each, batches of {res['batch']} consecutive pairs, logit scale "
             f"{res['logit_scale']:.4g}, GMM seed {BANK_SEED}). The release's files are read by this project's loader "
             "(its restricted unpickler). Passes when `--bank_recipe release` gives the release's clean set and every "
             f"chosen entry, with per-pair losses within {res['loss_tolerance']:.2g} (64 units in the last place of "
             f"fp32) and p(clean) within {res['p_clean_tolerance']:g}.", "", "Patches to the release's script:", ""]
    lines += [f"* `{p['replaced']}` -> `{p['by'].splitlines()[-1]}`: {p['why']}" for p in res["patches"]]
    lines += [f"* {note}" for note in res["reference_notes"]]
    lines += ["", "| | --bank_recipe release | --bank_recipe project (default) |", "|---|---|---|"]
    for key, what in (("loss_max_diff", "per-pair loss, max difference to the release"),
                      ("p_clean_max_diff", "p(clean), max difference to the release"),
                      ("n_clean", f"clean pairs (the release: {res['n_clean_release']})"),
                      ("clean_only_here", "clean here only"), ("clean_only_release", "clean in the release only"),
                      ("image_entries_differ", f"image entries that differ (of {res['n_images']})"),
                      ("text_entries_differ", f"text entries that differ (of {res['n_pairs']})")):
        fmt = (lambda v: f"{v:.3g}") if "diff" in key and "entries" not in key else str
        lines.append(f"| {what} | {fmt(rel[key])} | {fmt(proj[key])} |")
    lines += ["", "The project's default deviates on purpose in two steps: its GMM is fitted to the min-max scaled "
              "losses (the release fits the raw losses, so its `reg_covar` 5e-4 weighs differently with their "
              "spread), and its neighbours compare L2-normalized features (the release divides the queries by their "
              "norm, not the clean pairs' features, so a clean pair of a larger feature norm draws more queries; on "
              "the image side it keeps one key per clean pair and takes whichever `torch.topk` returns among an "
              "image's clean captions, where this project takes the one of the highest p(clean)). The normalized "
              "neighbours alone, on the release recipe's clean set: "
              f"{alone['image_entries_differ']} image and {alone['text_entries_differ']} text entries differ. "
              "`--bank_recipe release` reproduces the release's bank.", "",
              "<details><summary>Every pair</summary>", "",
              "| pair | image | loss: release | release recipe | project | p(clean): release | release recipe | project "
              "| text entry: release | release recipe | project |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["pairs"]:
        lines.append(f"| {r['pair']} | {r['image']} | {r['loss_release']:.6f} | {r['loss_release_recipe']:.6f} | "
                     f"{r['loss_project']:.6f} | {r['p_clean_release']:.4f} | {r['p_clean_release_recipe']:.4f} | "
                     f"{r['p_clean_project']:.4f} | {r['text_entry_release']} | {r['text_entry_release_recipe']} | "
                     f"{r['text_entry_project']} |")
    lines += ["", "| image | image entry: release | release recipe | project |", "|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['image_entry_release']} | {r['image_entry_release_recipe']} | "
              f"{r['image_entry_project']} |" for r in res["images"]]
    return lines + ["", "</details>", ""]


# ----------------------------------------------------------------------------- driver

def _child(argv: List[str]) -> None:
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--side", choices=("ref", "own"))
    p.add_argument("--check")
    p.add_argument("--ref_dir")
    p.add_argument("--inputs")
    p.add_argument("--precision")
    p.add_argument("--perm")
    p.add_argument("--out")
    p.add_argument("--lrs", default="")
    p.add_argument("--shift", type=float, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    inputs = torch.load(a.inputs, weights_only=False)
    perm = torch.load(a.perm) if a.perm else None
    if perm is None and a.check != "bank":
        perm = torch.arange(len(inputs["batches"][0]["index"]))
    work = Path(tempfile.mkdtemp(prefix=f"parity_{a.side}_"))
    if a.check == "bank":
        result = (run_reference_bank(Path(a.ref_dir), inputs, work, BANK_SEED) if a.side == "ref"
                  else run_project_bank(inputs, work, BANK_SEED))
    elif a.side == "ref":
        result = run_reference(a.check, Path(a.ref_dir), inputs, a.precision, perm, work)
        # The reference's fp16 parameters are compared as they are held; its initial weights likewise.
        if a.precision == "fp16":
            from clip.model import build_model

            held = build_model({k: v.clone() for k, v in inputs["state_dict"].items()})
            result["initial"] = {n: p.detach().float().clone() for n, p in held.named_parameters()}
    else:
        result = run_project(a.check, inputs, a.precision, perm, work, [float(x) for x in a.lrs.split(",")], a.shift)
    torch.save(result, a.out)


def _spawn(side: str, check: str, ref_dir: str, inputs: Path, precision: str, perm, out: Path, lrs=None,
           shift=None) -> Dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", "--side", side, "--check", check,
           "--ref_dir", ref_dir or "", "--inputs", str(inputs), "--precision", precision, "--out", str(out)]
    if perm is not None:
        cmd += ["--perm", str(perm)]
    if lrs:
        cmd += ["--lrs", ",".join(repr(x) for x in lrs)]
    if shift is not None:
        cmd += ["--shift", repr(shift)]
    # This checkout's npc first (an editable install may point at another one).
    path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir() if side == "ref" else str(REPO))
    if proc.returncode:
        raise SystemExit(f"{side} side of {check} ({precision}) failed:\n{proc.stderr[-4000:]}")
    return torch.load(out, weights_only=False)


def _commit(path: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("-modified" if dirty else "")
    except OSError:
        return "unknown"


def render(record: Dict) -> str:
    lines = ["# Parity with the authors' code", "",
             f"References: NPC release `{record['references'].get('npc_release', '-')}`, "
             f"OSA `{record['references'].get('osa', '-')}`. This project: `{record['environment']['git_commit']}`. "
             f"Device: {record['environment']['device']}, torch {record['environment']['torch']}.", "",
             f"Command: `{record['environment']['command']}`", "",
             "A quantity passes when the largest difference between the two sides is within "
             f"{record['settings']['floor_factor']:g} x the noise floor: the largest difference of either side to "
             "itself on the same batches with their pairs permuted or with its images jittered in the last bit, and "
             "at least 4 units in the last place (of the check's precision) of the quantity's magnitude. Parameters "
             "are judged on their elements whose Adam denominator is well above eps or whose second moment is 0 (also "
             "shown over all elements, not judged), and by the number of elements that differ. The script's "
             "docstring explains each choice.", ""]
    for res in record["results"]:
        if res["check"] == "bank":
            lines += render_bank(res)
            continue
        lines += [f"## {res['check']}, {res['precision']}: {'PASS' if res['passes'] else 'FAIL'}", "",
                  f"lr per step (the reference's scheduler): {', '.join(f'{x:.3g}' for x in res['lr'])}; "
                  f"this project's --grad_clip: {res['grad_clip_project']:g}", ""]
        for note in res["reference_notes"]:
            lines.append(f"* {note}")
        lines += ["", "| quantity | max difference | noise floor | magnitude | passes |", "|---|---|---|---|---|"]
        for r in res["rows"]:
            if "passes" in r:
                judged = "" if "all elements" in r["quantity"] else ("yes" if r["passes"] else "**no**")
                extra = (f" ({r['pairs_differing']} of {res.get('batch', '')} pairs differ by > 1e-3; up to "
                         f"{r['pairs_differing_in_reruns']} in a side's reruns)" if "pairs_differing" in r else "")
                lines.append(f"| {r['quantity']}{extra} | {r['max_diff']:.3g} | {r['noise_floor']:.3g} | "
                             f"{r['magnitude']:.3g} | {judged} |")
            else:
                lines.append(f"| {r['quantity']}: {r['count']} of {r['of']} | | | | |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child"]:
        _child(argv[1:])
        return 0
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npc_release", type=str, help="checkout of github.com/ZhangXu0963/NPC")
    p.add_argument("--osa", type=str, help="checkout of github.com/leolee99/OSA")
    p.add_argument("--checks", default="npc_release,clip,osa,bank")
    p.add_argument("--precisions", default="fp32,fp16")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--permutations", type=int, default=2, help="permuted reruns of each side (the noise floor)")
    p.add_argument("--floor_factor", type=float, default=2.0)
    p.add_argument("--bank_images", type=int, default=24, help="bank check: images (two captions each)")
    p.add_argument("--well_conditioned", type=float, default=10.0)
    p.add_argument("--out", type=str, default=str(OUT.relative_to(REPO)))
    a = p.parse_args(argv)
    refs = {"npc_release": a.npc_release, "osa": a.osa}
    for check in a.checks.split(","):
        need = CHECKS[check][0]
        if not refs[need] or not (Path(refs[need]) / f"{CHECKS[check][1]}.py").is_file():
            raise SystemExit(f"--{need}: a checkout holding {CHECKS[check][1]}.py is needed for the {check} check "
                             f"(got {refs[need]!r})")
    from npc.reporting import environment
    from npc.io import atomic_write_json, atomic_write_text

    results = []
    with tempfile.TemporaryDirectory(prefix="parity_") as tmp:
        tmp = Path(tmp)
        inputs = tmp / "inputs.pt"
        make_inputs(inputs, a.batch, a.steps, a.seed)
        # The perturbed reruns: the pairs permuted, and the images jittered in their last bits.
        perms = [torch.randperm(a.batch, generator=torch.Generator().manual_seed(a.seed + 1 + k))
                 for k in range(a.permutations)]
        for k, perm in enumerate(perms):
            torch.save(perm, tmp / f"perm{k}.pt")
        jittered = {prec: tmp / f"inputs_jitter_{prec}.pt" for prec in a.precisions.split(",")}
        for prec, path in jittered.items():
            jitter_inputs(inputs, path, prec, a.seed)
        perturbed = [(inputs, tmp / f"perm{k}.pt", perm) for k, perm in enumerate(perms)]
        eps = 1e-6
        for check in a.checks.split(","):
            ref_dir = refs[CHECKS[check][0]]
            if check == "bank":
                bank_inputs = tmp / "bank_inputs.pt"
                make_bank_inputs(bank_inputs, a.bank_images, 2, a.batch, a.seed, inputs)
                ref = _spawn("ref", check, ref_dir, bank_inputs, "fp32", None, tmp / "rb.pt")
                own = _spawn("own", check, "", bank_inputs, "fp32", None, tmp / "ob.pt")
                res = compare_bank(ref, own, torch.load(bank_inputs, weights_only=False), tmp)
                results.append(res)
                print(bank_summary(res), flush=True)
                continue
            for precision in a.precisions.split(","):
                if check == "osa" and precision == "fp16":
                    continue  # OSA's code steps in fp32 on every device: no pure-fp16 regime to compare
                runs = {"ref": _spawn("ref", check, ref_dir, inputs, precision, None, tmp / "r.pt")}
                lrs = [r["lr"] for r in runs["ref"]["records"]]
                shift = runs["ref"].get("osa_shift")
                runs["own"] = _spawn("own", check, "", inputs, precision, None, tmp / "o.pt", lrs, shift)
                variants = perturbed + [(jittered[precision], None, torch.arange(a.batch))]
                runs["ref_perms"] = [_spawn("ref", check, ref_dir, src, precision, pp, tmp / "rp.pt")
                                     for src, pp, _ in variants]
                runs["own_perms"] = [_spawn("own", check, "", src, precision, pp, tmp / "op.pt", lrs, shift)
                                     for src, pp, _ in variants]
                res = compare(check, precision, runs, [perm for _, _, perm in variants], eps, a.floor_factor,
                              a.well_conditioned)
                results.append(res)
                print(f"{check:12s} {precision}: {'PASS' if res['passes'] else 'FAIL'}", flush=True)
    # The command as recorded names the checkouts, not where they lie on this machine.
    shown = [{a.npc_release: "NPC_CHECKOUT", a.osa: "OSA_CHECKOUT"}.get(x, x) for x in argv]
    record = {"environment": environment(__file__, shown, torch.device("cpu")),
              "references": {k: _commit(Path(v)) for k, v in refs.items() if v},
              "settings": {"batch": a.batch, "steps": a.steps, "seed": a.seed, "floor_factor": a.floor_factor,
                           "well_conditioned": a.well_conditioned, "arch": ARCH, "lr": LR},
              "results": results}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "parity.json", record)
    atomic_write_text(out / "parity.md", render(record) + "\n")
    return 0 if all(r["passes"] for r in results) else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
