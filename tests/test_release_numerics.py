"""The release's numerics: pure fp16 weights stepped by torch's plain AdamW, whose moments are fp16.

Where ``(1 - beta2) g^2`` underflows in fp16 the second moment stays 0, the denominator is eps and
the step is ``lr * m_hat / eps``; the real-data defaults train in this regime on a GPU.
"""
import math

import numpy as np
import torch

from npc.params import parse_args
from npc.train_utils import make_optimizer, resolve_precision

LR, BETAS, EPS, WD = 2e-7, (0.9, 0.98), 1e-6, 0.2


class _One(torch.nn.Module):
    def __init__(self, value: float, dtype):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([value], dtype=dtype))


def test_fp16_adamw_element_whose_second_moment_underflows_moves_by_lr_m_hat_over_eps():
    g = 1e-4                      # 0.02 * g^2 = 2e-10: below fp16's smallest subnormal (6e-8)
    m = _One(0.01, torch.float16)
    opt = make_optimizer(m, LR, *BETAS, EPS, WD)
    m.w.grad = torch.tensor([g], dtype=torch.float16)
    before = m.w.detach().clone()
    opt.step()
    state = opt.state[m.w]
    assert state["exp_avg_sq"].dtype == torch.float16 and float(state["exp_avg_sq"]) == 0.0
    m_hat = float(state["exp_avg"]) / (1 - BETAS[0])   # bias-corrected first moment: g, in fp16
    expected = (before.float() * (1 - LR * WD) - LR * m_hat / EPS).half()
    assert torch.equal(m.w.detach(), expected)
    step = float(before) - float(m.w.detach())
    ulp = float(np.spacing(np.float16(0.01)))
    assert abs(step - LR * g / EPS) <= ulp   # 0.2 g = 2e-5 (to the fp16 grid), not an Adam step of lr = 2e-7
    # An fp32 parameter takes Adam's step of about lr (the fused kernel serves it).
    m32 = _One(0.01, torch.float32)
    opt32 = make_optimizer(m32, LR, *BETAS, EPS, WD)
    assert opt32.defaults["fused"]
    m32.w.grad = torch.tensor([g])
    w0 = m32.w.detach().double().clone()
    opt32.step()
    step32 = float(w0 - m32.w.detach().double())
    assert math.isclose(step32, LR * (g / (g + EPS)) + float(w0) * LR * WD, rel_tol=1e-2)   # about lr


def test_fp16_adamw_is_the_plain_optimizer_not_the_fused_kernel():
    # The fused kernel steps with the fp32 value of the second moment before storing it: an Adam step of
    # about lr, which rounds away on the fp16 weight, where the release's optimizer moves it by 0.2 g.
    moved = {}
    for name, build in (("plain", lambda m: make_optimizer(m, LR, *BETAS, EPS, WD)),
                        ("fused", lambda m: torch.optim.AdamW(m.parameters(), lr=LR, betas=BETAS, eps=EPS,
                                                              weight_decay=WD, fused=True))):
        m = _One(0.01, torch.float16)
        opt = build(m)
        assert bool(opt.defaults["fused"]) == (name == "fused")
        m.w.grad = torch.tensor([1e-4], dtype=torch.float16)
        before = float(m.w.detach())
        opt.step()
        moved[name] = before - float(m.w.detach())
    assert moved["fused"] == 0.0 and moved["plain"] > 1e-5


def test_real_data_defaults_train_in_the_release_numerics_on_a_gpu():
    from npc.model import create_model

    for script, argv in (("npc", ["--dataset", "coco"]), ("clip", ["--dataset", "f30k"])):
        o = parse_args(argv, script).optim
        assert resolve_precision(o.precision, torch.device("cuda"), argv[1]) == "fp16"
        assert resolve_precision(o.precision, torch.device("cpu"), argv[1]) == "fp32"
        assert o.lr == (2e-7 if script == "npc" else 5e-7)
        assert o.grad_clip == (10.0 if script == "npc" else 0.0)  # the release's CLIP baseline never clips
    demo = parse_args([], "npc")
    assert resolve_precision(demo.optim.precision, torch.device("cuda"), demo.data.dataset) == "amp_bf16"
    assert demo.optim.grad_clip == 10.0
    # The optimizer those defaults build for the fp16 model (a tiny one here): plain AdamW, fp16 moments.
    o = parse_args(["--dataset", "coco"], "npc").optim
    model = create_model("npc-micro", "none", precision="fp16")[0]
    opt = make_optimizer(model, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay)
    assert not opt.defaults["fused"]
    conv = model.visual.conv1.weight
    conv.grad = torch.full_like(conv, 1e-4)
    opt.step()
    assert opt.state[conv]["exp_avg_sq"].dtype == torch.float16 and not opt.state[conv]["exp_avg_sq"].any()


def test_pure_fp16_losses_follow_the_release_arithmetic():
    # The release's CLIP computes logit_scale * image_features @ text_features.t() in the features' dtype and
    # its criterion -diag(log_softmax(logits)): in fp16 under pure fp16 weights, in fp32 otherwise.
    import torch.nn.functional as F

    from npc.losses import clip_loss_per_sample

    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(8, 16, generator=g), dim=-1).half()
    txt = F.normalize(torch.randn(8, 16, generator=g), dim=-1).half()
    scale = torch.tensor(14.28)
    logits = scale * img @ txt.t()
    assert logits.dtype == torch.float16
    ce = lambda m: -torch.diag(F.log_softmax(m, dim=-1))  # noqa: E731
    expected = (ce(logits) + ce(logits.t())) / 2
    got = clip_loss_per_sample(img, txt, scale)
    assert got.dtype == torch.float16 and torch.equal(got, expected)
    # fp32 features: fp32 logits, as before
    got32 = clip_loss_per_sample(img.float(), txt.float(), scale)
    assert got32.dtype == torch.float32 and not torch.equal(got32, expected.float())
