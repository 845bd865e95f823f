"""npc.osa against OSA's written-out definition on hand-sized batches (numbers computed by hand)."""
import math

import pytest
import torch

from npc import osa

L = torch.tensor([[10.0, 2.0, 1.0],
                  [3.0, 6.0, 0.0],
                  [1.0, 1.0, 4.0]])


def test_weights_by_hand():
    # shift 2: diag - shift = 8, 4, 2; / max 8 -> x = 1, 0.5, 0.25; w = x^2 (1 - x^2)
    w_i2t, w_t2i = osa.osa_weights(L, 2.0)
    expect = torch.tensor([0.0, 0.25 * 0.75, 0.0625 * 0.9375])
    assert torch.allclose(w_i2t, expect) and torch.allclose(w_t2i, expect)
    # shift 5: 5, 1, -1 -> clipped 5, 1, 0 -> x = 1, 0.2, 0 -> w = 0, 0.04 * 0.96, 0
    w, _ = osa.osa_weights(L, 5.0)
    assert torch.allclose(w, torch.tensor([0.0, 0.0384, 0.0]))
    # every pair at or below the shift: 0 (the authors' code would divide 0 by 0)
    w, _ = osa.osa_weights(L, 20.0)
    assert torch.equal(w, torch.zeros(3))
    assert torch.allclose(osa.debiased_score(L, 2.0), torch.tensor([8.0, 4.0, 2.0]))


def test_weight_function_is_the_authors_polynomial():
    x = torch.linspace(0, 1, 11)
    logits = torch.diag(x * 7 + 3)   # shift 3, max 7: x back
    w = osa.osa_weight_function(logits, 3.0)
    assert torch.allclose(w, -x.pow(2) * (x - 1) * (x + 1), atol=1e-6)
    assert float(w.max()) <= 0.25 + 1e-6


def _lse(row):
    return math.log(sum(math.exp(v) for v in row))


def test_per_direction_ce_and_loss_by_hand():
    rows = L.tolist()
    cols = L.t().tolist()
    ce_i2t_hand = [_lse(rows[i]) - rows[i][i] for i in range(3)]
    ce_t2i_hand = [_lse(cols[i]) - cols[i][i] for i in range(3)]
    ce_i2t, ce_t2i = osa.per_direction_ce(L)
    assert ce_i2t.tolist() == pytest.approx(ce_i2t_hand, abs=1e-6)
    assert ce_t2i.tolist() == pytest.approx(ce_t2i_hand, abs=1e-6)
    w_i = torch.tensor([0.0, 0.1875, 0.05859375])
    w_t = torch.tensor([0.5, 0.0, 1.0])
    loss = osa.osa_loss(ce_i2t, ce_t2i, w_i, w_t)
    hand = (sum(a * b for a, b in zip(w_i.tolist(), ce_i2t_hand)) / 3
            + sum(a * b for a, b in zip(w_t.tolist(), ce_t2i_hand)) / 3) / 2   # not divided by sum(w)
    assert float(loss) == pytest.approx(hand, abs=1e-6)


def test_loss_gradient_does_not_flow_into_weights():
    logits = L.clone().requires_grad_(True)
    ce_i, ce_t = osa.per_direction_ce(logits)
    w_i, w_t = osa.osa_weights(logits, 2.0)
    osa.osa_loss(ce_i, ce_t, w_i, w_t).backward()
    # d loss / d logits equals the gradient with the weights held as constants
    logits2 = L.clone().requires_grad_(True)
    ce_i2, ce_t2 = osa.per_direction_ce(logits2)
    (((w_i.detach() * ce_i2).mean() + (w_t.detach() * ce_t2).mean()) / 2).backward()
    assert torch.allclose(logits.grad, logits2.grad)


def test_table10_rates_by_hand():
    r = osa.table10_rates([3.0, -1.0, 0.0, 2.0], [False, True, True, False])
    assert r == {"noisy_caught": 1.0, "clean_kept": 1.0}
    r = osa.table10_rates([-1.0, 2.0, 0.5, 0.0, 4.0], [False, True, True, False, False])
    assert r["noisy_caught"] == 0.0 and r["clean_kept"] == pytest.approx(1 / 3)


def test_random_shift_and_frozen_copy_on_a_tiny_model():
    from npc.model import create_model

    torch.manual_seed(0)
    model, _, _ = create_model("npc-micro", "none")
    est = osa.frozen_copy(model)
    assert not any(p.requires_grad for p in est.parameters()) and not est.training
    assert all(p.requires_grad for p in model.parameters())
    g = torch.Generator().manual_seed(3)
    shift = osa.random_shift(est, 6, generator=g)
    g = torch.Generator().manual_seed(3)
    img = torch.rand(6, 3, 32, 32, generator=g)
    txt = (torch.rand(6, est.context_length, generator=g) * 100).long()
    assert txt.max() < 100
    with torch.no_grad():
        logits = osa.batch_logits(est, img, txt)
    assert logits.shape == (6, 6)
    assert shift == pytest.approx(float(logits.mean()), rel=1e-5)
