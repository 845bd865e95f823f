"""The NPC step: weights formula, paper vs release definitions, efficient == naive."""
import copy

import pytest
import torch

from npc.losses import clip_loss_per_sample
from npc.model import compile_towers, create_model, encode, logit_scale
from npc.distributed import DistInfo
from npc.negative_impact import encode_groups, npc_weights
from helpers import _per_sample, _setup, clip_step, method_step


def test_weights_hand_computed():
    before_i = torch.tensor([1.0, 2.0, 3.0, 0.5])
    after_i = torch.tensor([2.0, 1.0, 3.0, 0.25])
    before_t = torch.tensor([1.0, 2.0, 1.5, 0.5])
    after_t = torch.tensor([4.0, 4.0, 3.0, 1.0])
    w, ratio = npc_weights(before_i, after_i, before_t, after_t)
    # ratios: (0.5+0.25)/2, (2+0.5)/2, (1+0.5)/2, (2+0.5)/2
    assert torch.allclose(ratio, torch.tensor([0.375, 1.25, 0.75, 1.25]))
    expected = torch.tensor([torch.tanh(torch.tensor(0.375)), 1.0, torch.tanh(torch.tensor(0.75)), 1.0])
    assert torch.allclose(w, expected)
    assert (w <= 1).all()


def _opt(model, lr=1e-3):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2)


def _run(variant, impl, seed=0, siamese_eps=1e-6, compile_backend=None):
    model, batch = _setup(seed)
    siamese = copy.deepcopy(model)
    if compile_backend:
        compile_towers(model, backend=compile_backend)
        compile_towers(siamese, backend=compile_backend)
    opt, sopt = torch.optim.SGD(model.parameters(), lr=1.0), _opt(siamese)
    sopt.param_groups[0]["eps"] = siamese_eps
    before = copy.deepcopy(model)
    out = method_step(model, siamese, opt, sopt, batch, variant=variant, impl=impl, grad_clip=0.0)
    return before, model, siamese, out, batch


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_weights_and_update_match_the_definition(variant):
    a0, a1, _, out, batch = _run(variant, "efficient")
    # Step 1 written out: A' = copy of A, one AdamW step on the mean batch loss (4x its gradient for release).
    sia = copy.deepcopy(a0)
    sopt = _opt(sia)
    with torch.no_grad():
        li0, lt0 = _per_sample(sia, batch, "bankI"), _per_sample(sia, batch, "bankT")
    loss = _per_sample(sia, batch, "pair").mean() * (4.0 if variant == "release" else 1.0)
    loss.backward()
    sopt.step()
    with torch.no_grad():
        li1, lt1 = _per_sample(sia, batch, "bankI"), _per_sample(sia, batch, "bankT")
    ratio = (li0 / li1 + lt0 / lt1) / 2
    w = torch.where(ratio < 1, torch.tanh(ratio), torch.ones_like(ratio))
    assert torch.allclose(out["weights"], w, atol=1e-5)
    assert torch.allclose(out["ratio"], ratio, atol=1e-5)
    # Step 2 written out; with SGD(lr=1) and no clipping the update is exactly minus the gradient.
    ref = copy.deepcopy(a0)
    pair = _per_sample(ref, batch, "pair")
    bank = _per_sample(ref, batch, "bankI").mean() + _per_sample(ref, batch, "bankT").mean()
    total = (w * pair).mean() + bank if variant == "paper" else w.mean() * pair.mean()
    grads = torch.autograd.grad(total, list(ref.parameters()), allow_unused=True)
    for p0, p1, g in zip(a0.parameters(), a1.parameters(), grads):
        expected = p0 - (g if g is not None else 0)
        assert torch.allclose(p1, expected, atol=1e-5), "update of A differs from its definition"


def test_paper_and_release_gradients_differ():
    a0, p, _, out_p, _ = _run("paper", "efficient")
    _, r, _, out_r, _ = _run("release", "efficient")
    delta_p = torch.cat([(x - y).flatten() for x, y in zip(p.parameters(), a0.parameters())])
    delta_r = torch.cat([(x - y).flatten() for x, y in zip(r.parameters(), a0.parameters())])
    assert (delta_p - delta_r).abs().max() > 1e-4
    # The release's update is a scalar multiple of the plain mean-loss gradient (no per-sample weighting)
    ref = copy.deepcopy(a0)
    g = torch.cat([x.flatten() for x in torch.autograd.grad(_per_sample(ref, _setup()[1], "pair").mean(),
                                                             list(ref.parameters()))])
    assert torch.allclose(-delta_r, out_r["weights"].mean() * g, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_efficient_step_equals_naive_step(variant):
    # Attention key biases have an exactly-zero gradient in theory (softmax is shift invariant) and
    # ~1e-10 of float noise in practice, which Adam's first step (g / (|g| + eps)) blows up to
    # +-lr with eps=1e-6. A larger eps compares the siamese update where its gradient is defined.
    _, eff, eff_sia, out_e, _ = _run(variant, "efficient", seed=3, siamese_eps=1e-4)
    _, nai, nai_sia, out_n, _ = _run(variant, "naive", seed=3, siamese_eps=1e-4)
    assert torch.allclose(out_e["weights"], out_n["weights"], atol=1e-5)
    for a, b in zip(eff.parameters(), nai.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(eff_sia.parameters(), nai_sia.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_siamese_is_resynced_and_keeps_its_optimizer_state():
    model, batch = _setup()
    siamese = copy.deepcopy(model)
    opt, sopt = _opt(model), _opt(siamese)
    for _ in range(2):
        method_step(model, siamese, opt, sopt, batch)
    state = sopt.state[next(iter(siamese.parameters()))]
    assert int(state["step"]) == 2  # moments accumulate across steps, as in the release


def test_pure_fp16_regime_steps_fp16_weights():
    """--precision fp16: the release's regime, AdamW directly on fp16 weights (no fp32 master copy)."""
    torch.manual_seed(0)
    model, _, _ = create_model("npc-micro", "none", precision="fp16")
    conv = model.visual.conv1.weight
    assert conv.dtype == torch.float16
    before = conv.detach().clone()
    _, batch = _setup()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, eps=1e-4)
    out = clip_step(model, opt, batch)
    assert torch.isfinite(out["loss"]) and conv.dtype == torch.float16
    assert not torch.equal(before, conv.detach())


def test_weights_off_ablation_is_unweighted_loss_plus_bank():
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    siamese = copy.deepcopy(model)
    out = method_step(model, siamese, torch.optim.SGD(model.parameters(), lr=1.0), _opt(siamese), batch,
                   grad_clip=0.0, reweight=False)
    assert (out["weights"] < 1).any()  # still computed and reported
    ref = copy.deepcopy(a0)
    total = (_per_sample(ref, batch, "pair").mean() + _per_sample(ref, batch, "bankI").mean()
             + _per_sample(ref, batch, "bankT").mean())
    grads = torch.autograd.grad(total, list(ref.parameters()), allow_unused=True)
    for p0, p1, g in zip(a0.parameters(), model.parameters(), grads):
        assert torch.allclose(p1, p0 - (g if g is not None else 0), atol=1e-5)


def test_siamese_gradient_back_propagates_through_the_pair_rows_only():
    # The efficient step encodes the pairs' rows in forward calls of their own, so the gradient of
    # the pair loss (A''s step) runs the encoders' backward once per tower, not also through the
    # bank-only rows with zero gradients; the full loss then reaches both calls of each tower.
    model, batch = _setup()
    calls = []

    def record(module, args, out):  # each forward output of a tower that receives a gradient
        out.register_hook(lambda grad: calls.append("image" if module is model.visual else "text"))

    for tower in (model.visual, model.transformer):
        tower.register_forward_hook(record)
    losses = encode_groups(model, batch, ("pair", "bankI", "bankT"), DistInfo(), first=("pair",))
    torch.autograd.grad(losses["pair"].mean(), list(model.parameters()), retain_graph=True, allow_unused=True)
    assert sorted(calls) == ["image", "text"]
    calls.clear()
    (losses["bankI"].mean() + losses["bankT"].mean()).backward()
    assert sorted(calls) == ["image", "image", "text", "text"]


def test_compiled_towers_take_the_same_step():
    # Dynamo's tracing (eager backend: no code generation in tests) of the towers, for the row counts
    # the step feeds them, changes nothing; parameter names stay those of the checkpoints.
    _, plain, _, out_p, _ = _run("paper", "efficient")
    _, compiled, _, out_c, _ = _run("paper", "efficient", compile_backend="eager")
    assert list(compiled.state_dict()) == list(plain.state_dict())
    torch.testing.assert_close(out_c["weights"], out_p["weights"], rtol=0, atol=1e-6)
    for a, b in zip(compiled.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- the first-order estimator

def test_own_row_grads_are_each_loss_gradient_wrt_its_own_row():
    from npc.negative_impact import own_row_grads

    torch.manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1).requires_grad_()
    txt = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1).requires_grad_()
    scale = torch.tensor(7.0)
    g_img, g_txt = own_row_grads(img, txt, scale)
    losses = clip_loss_per_sample(img, txt, scale)
    for i in range(4):
        gi, gt = torch.autograd.grad(losses[i], (img, txt), retain_graph=True)
        # only row i: l_i's gradient w.r.t. the other rows (its negatives) is not part of it
        assert torch.allclose(g_img[i], gi[i], atol=1e-6)
        assert torch.allclose(g_txt[i], gt[i], atol=1e-6)


def test_first_order_impact_written_out():
    from npc.negative_impact import first_order_impact

    torch.manual_seed(2)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s), dim=-1)  # noqa: E731
    u, v, a, c = unit(3, 4), unit(3, 4), unit(3, 4), unit(3, 4)  # pairs (u, v), bank pairs (a, c)
    scale, lr = torch.tensor(5.0), 0.1
    delta = first_order_impact(u, v, a, c, scale, lr)
    for i in range(3):
        # -lr * sum over towers of <dl_b/d(bank row), dl_i/d(own row)> * cosine(bank row, own row)
        leaves = [x.clone().requires_grad_() for x in (u, v, a, c)]
        li = clip_loss_per_sample(leaves[0], leaves[1], scale)[i]
        lb = clip_loss_per_sample(leaves[2], leaves[3], scale)[i]
        gu, gv = torch.autograd.grad(li, leaves[:2])
        ga, gc = torch.autograd.grad(lb, leaves[2:])
        expected = -lr * (ga[i] @ gu[i] * (a[i] @ u[i]) + gc[i] @ gv[i] * (c[i] @ v[i]))
        assert torch.allclose(delta[i], expected, atol=1e-6)
    # a bank entry that is the pair itself is always helped (a squared norm, kernel 1)
    assert (first_order_impact(u, v, u, v, scale, lr) < 0).all()


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_first_order_step_matches_its_definition(variant):
    from npc.negative_impact import first_order_impact

    model, batch = _setup()
    a0 = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    out = method_step(model, None, opt, None, batch, variant=variant, estimator="first_order", grad_clip=0.0)
    ref = copy.deepcopy(a0)
    feats = {g: encode(ref, batch["images"][batch[f"{g}_img"]], batch["texts"][batch[f"{g}_txt"]])
             for g in ("pair", "bankI", "bankT")}
    scale = logit_scale(ref)
    before = {g: clip_loss_per_sample(*feats[g], scale) for g in ("bankI", "bankT")}
    # relative first-order changes, minus their batch median, scaled so that median |c_I + c_T| = 1
    c = {g: first_order_impact(*feats["pair"], *feats[g], scale, 1.0) / before[g] for g in ("bankI", "bankT")}
    c = {g: x - x.median() for g, x in c.items()}
    eta = 1 / (c["bankI"] + c["bankT"]).abs().median()
    after = {g: before[g] * (1 + eta * c[g]) for g in ("bankI", "bankT")}
    w, ratio = npc_weights(before["bankI"].detach(), after["bankI"].detach(), before["bankT"].detach(),
                           after["bankT"].detach())
    assert torch.allclose(out["weights"], w, atol=1e-5)
    assert torch.allclose(out["ratio"], ratio, rtol=1e-4)  # after <= 0 (much help) gives before / 1e-12
    assert (w < 1).any() and (w == 1).any()
    pair = clip_loss_per_sample(*feats["pair"], scale)
    bank = before["bankI"].mean() + before["bankT"].mean()
    total = (w * pair).mean() + bank if variant == "paper" else w.mean() * pair.mean()
    grads = torch.autograd.grad(total, list(ref.parameters()), allow_unused=True)
    for p0, p1, g in zip(a0.parameters(), model.parameters(), grads):
        assert torch.allclose(p1, p0 - (g if g is not None else 0), atol=1e-5)


def test_fresh_siamese_state_starts_empty_every_step():
    model, batch = _setup()
    siamese = copy.deepcopy(model)
    opt, sopt = _opt(model), _opt(siamese)
    for _ in range(2):
        method_step(model, siamese, opt, sopt, batch, siamese_state="fresh")
    state = sopt.state[next(iter(siamese.parameters()))]
    assert int(state["step"]) == 1  # one step on an empty state: no momentum from earlier batches
    # and that step is the one a new optimizer takes from A's current parameters
    ref = copy.deepcopy(model)
    out = method_step(model, siamese, _opt(model), sopt, batch, siamese_state="fresh")
    ref_opt = _opt(ref)
    _per_sample(ref, batch, "pair").mean().backward()
    ref_opt.step()
    # compare A' after its step (bank losses after) with the fresh reference
    with torch.no_grad():
        after_i = _per_sample(ref, batch, "bankI")
    assert torch.allclose(out["bank_losses"][1], after_i, atol=1e-4)


def test_clip_step_weights_are_the_written_out_weighted_loss():
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    w = torch.tensor([1.0, 0.0, 0.5, 0.25, 1.0, 0.75])
    clip_step(model, torch.optim.SGD(model.parameters(), lr=1.0), batch, grad_clip=0.0, weights=w)
    ref = copy.deepcopy(a0)
    grads = torch.autograd.grad((w * _per_sample(ref, batch, "pair")).mean(), list(ref.parameters()), allow_unused=True)
    for p0, p1, g in zip(a0.parameters(), model.parameters(), grads):
        assert torch.allclose(p1, p0 - (g if g is not None else 0), atol=1e-5)


# ----------------------------------------------------------------------------- the release's arithmetic

@pytest.mark.parametrize("impl", ["efficient", "naive"])
def test_release_siamese_gradient_is_four_times_the_mean_pair_loss_gradient(impl):
    # The release's siamese loss is mean(ce_i2t) + mean(ce_t2i), twice the mean pair loss, and it is
    # back-propagated twice: A' steps on 4x the gradient of the mean pair loss. With SGD(lr=1) as A''s
    # optimizer its update is exactly minus the gradient it was given (Adam would hide the scale).
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    siamese = copy.deepcopy(model)
    method_step(model, siamese, torch.optim.SGD(model.parameters(), lr=0.0), torch.optim.SGD(siamese.parameters(), lr=1.0),
             batch, variant="release", impl=impl, grad_clip=0.0)
    ref = copy.deepcopy(a0)
    grads = torch.autograd.grad(_per_sample(ref, batch, "pair").mean(), list(ref.parameters()), allow_unused=True)
    moved = 0
    for p0, p1, g in zip(a0.parameters(), siamese.parameters(), grads):
        g = torch.zeros_like(p0) if g is None else g
        torch.testing.assert_close(p0 - p1, 4 * g, rtol=1e-4, atol=1e-6)
        moved += int((g.abs() > 1e-6).sum())
    assert moved > 0


def test_release_logged_loss_carries_the_release_bank_term():
    # final_loss = mean(mbankI + mbankT) + mean(w) * mean(l): the bank term is the two sides' losses
    # summed (no gradient in the release); it is what the step reports as its loss and bank loss.
    model, batch = _setup()
    a0 = copy.deepcopy(model)
    siamese = copy.deepcopy(model)
    out = method_step(model, siamese, torch.optim.SGD(model.parameters(), lr=0.0), _opt(siamese), batch,
                   variant="release", grad_clip=0.0)
    with torch.no_grad():
        bank = _per_sample(a0, batch, "bankI").mean() + _per_sample(a0, batch, "bankT").mean()
        pair = _per_sample(a0, batch, "pair").mean()
    torch.testing.assert_close(out["bank_loss"], bank, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], out["weights"].mean() * pair + bank, rtol=1e-5, atol=1e-6)
