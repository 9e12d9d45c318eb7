"""VL-JEPA losses (vljepa.losses): InfoNCE against log(B) and a plain loop, the multi-positive
mask, the ablation losses and the learnable temperature. Pure tensors, no models: fast."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vljepa.losses import info_nce, regression_loss, text_ids, vljepa_loss


def loop_info_nce(pred, target, scale, ids=None):
    """Reference: per-row softmax with explicit Python loops, -log(mass on positives)."""
    p, t = F.normalize(pred.double(), dim=-1), F.normalize(target.double(), dim=-1)
    b = p.shape[0]
    ids = list(range(b)) if ids is None else ids.tolist()

    def direction(a, c):
        total = 0.0
        for i in range(b):
            logits = [scale * float(a[i] @ c[j]) for j in range(b)]
            denom = sum(math.exp(x) for x in logits)
            pos = sum(math.exp(logits[j]) for j in range(b) if ids[j] == ids[i])
            total += -math.log(pos / denom)
        return total / b

    return (direction(p, t) + direction(t, p)) / 2


def test_identical_inputs_give_log_b():
    for b in (2, 5, 16):
        x = torch.randn(1, 32).expand(b, 32)
        out = info_nce(x, x, logit_scale=1 / 0.07)
        assert out["loss"].item() == pytest.approx(math.log(b), rel=1e-5)
        assert out["loss_v2t"].item() == pytest.approx(math.log(b), rel=1e-5)


@pytest.mark.parametrize("with_ids", [False, True])
def test_matches_plain_loop(with_ids):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(7, 16, generator=g), torch.randn(7, 16, generator=g)
    ids = torch.tensor([0, 1, 0, 2, 3, 1, 4]) if with_ids else None
    got = info_nce(pred, target, logit_scale=5.0, target_ids=ids)["loss"].item()
    assert got == pytest.approx(loop_info_nce(pred, target, 5.0, ids), rel=1e-5)


def test_multi_positive_mask_does_not_push_apart_identical_texts():
    # rows 0 and 2 share the same target text; each prediction equals its target exactly
    t = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    t[2] = t[0]
    ids = text_ids(["yes", "no", "yes", "2"])
    assert ids[0] == ids[2] and len(set(ids.tolist())) == 3
    masked = info_nce(t, t, logit_scale=100.0, target_ids=ids)
    unmasked = info_nce(t, t, logit_scale=100.0)
    # without the mask, the duplicate is a "negative" as similar as the positive: about log 2 per
    # affected row and direction; with it the loss vanishes
    assert masked["loss"].item() < 1e-3
    assert unmasked["loss"].item() == pytest.approx(2 * math.log(2) / 4, rel=1e-2)


def test_text_ids_stable_and_equal_for_equal_texts():
    a, b = text_ids(["a cat", "a dog", "a cat"]), text_ids(["a cat"])
    assert a[0] == a[2] == b[0] and a[0] != a[1]


def test_regression_losses():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    pn, tn = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    assert regression_loss(pred, target, "cosine")["loss"].item() == pytest.approx(
        (1 - F.cosine_similarity(pred, target)).mean().item(), rel=1e-5)
    assert regression_loss(pred, target, "l1")["loss_l1"].item() == pytest.approx((pn - tn).abs().mean().item())
    assert regression_loss(pred, target, "l2")["loss"].item() == pytest.approx(((pn - tn) ** 2).mean().item())
    for kind in ("cosine", "l1", "l2"):
        assert vljepa_loss(pred, 3 * pred, kind, 1.0)["loss"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="infonce"):
        regression_loss(pred, target, "infonce")


def test_learnable_temperature_gets_gradient_and_shape_errors():
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    pred = torch.randn(4, 8, requires_grad=True)
    out = info_nce(pred, torch.randn(4, 8), log_scale.exp())
    out["loss"].backward()
    assert log_scale.grad is not None and log_scale.grad.abs() > 0
    assert pred.grad.abs().sum() > 0
    assert out["temperature"].item() == pytest.approx(0.07, rel=1e-4)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        info_nce(torch.randn(4, 8), torch.randn(3, 8), 1.0)
