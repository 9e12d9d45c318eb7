"""Tests of vljepa.pretrain: V-JEPA self-supervised pretraining of the tiny V-JEPA 2 X-encoder.

Checks that the L1 feature-prediction loss goes down, that the EMA target encoder gets no
gradients (it moves only by EMA), that the masks split the token grid into disjoint tubes,
and that the encoder installed into VL-JEPA is exactly the pretrained target encoder.

    pytest tests/test_pretrain.py
"""

from __future__ import annotations

import copy

import torch

from vljepa.builders import build_tiny_vljepa
from vljepa.pretrain import (
    PretrainConfig,
    ema_update,
    install_x_encoder,
    jepa_loss,
    pretrain_x_encoder,
    token_grid,
    tube_masks,
)
from vljepa.processing import VideoTransform
from vljepa.synthetic import make_clip_dataset


def _setup(n: int = 16):
    model = build_tiny_vljepa(embed_dim=32, seed=0)
    transform = VideoTransform.for_encoder(model.config.x_encoder)
    px = torch.stack([transform(c["frames"]) for c in make_clip_dataset(n, n_frames=8, seed=1)])  # (n, T, 3, S, S)
    return model, px


def test_tube_masks_are_disjoint_tubes():
    cfg = PretrainConfig(blocks=2, block_scale=0.25)
    grid = (4, 4, 4)
    ctx, tgt = tube_masks(grid, 5, cfg, torch.Generator().manual_seed(0))
    assert ctx.shape[0] == tgt.shape[0] == 5
    assert tgt.shape[1] > 0 and ctx.shape[1] > 0
    for c, t in zip(ctx.tolist(), tgt.tolist(), strict=True):
        assert not set(c) & set(t)
        spatial = {i % 16 for i in t}
        # a tube: every masked spatial position is masked in every time step (before trimming
        # to the batch minimum, which only drops ids from the end, i.e. the last time steps)
        assert {i % 16 for i in t if i < 16} == spatial


def test_loss_decreases_and_target_gets_no_gradient():
    model, px = _setup()
    enc = model.x_encoder
    cfg = PretrainConfig(max_steps=25, time_budget_s=0, batch_size=16, lr=2e-3, seed=0)
    target, history = pretrain_x_encoder(enc, px, cfg)
    losses = [h["loss"] for h in history]
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    assert all(p.grad is None for p in target.parameters())
    assert not any(p.requires_grad for p in target.parameters())
    # the target moved (by EMA) away from the random start but is not the online encoder
    diffs = [(t - o).abs().max().item() for t, o in zip(target.parameters(), enc.parameters(), strict=True)]
    assert max(diffs) > 0


def test_backward_touches_only_online_encoder():
    model, px = _setup(4)
    online = model.x_encoder.train().requires_grad_(True)
    target = copy.deepcopy(online).eval()
    ctx, tgt = tube_masks(token_grid(online.config), 4, PretrainConfig(), torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in target.parameters()]
    out = jepa_loss(online, target, px, ctx, tgt)
    out["loss"].backward()
    assert all(p.grad is None for p in target.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in online.encoder.parameters())
    ema_update(target, online, 0.5)
    after = list(target.parameters())
    for b, a, o in zip(before, after, online.parameters(), strict=True):
        torch.testing.assert_close(a, 0.5 * b + 0.5 * o.detach())


def test_installed_encoder_is_the_pretrained_target(tmp_path):
    model, px = _setup(8)
    target, _ = pretrain_x_encoder(model.x_encoder, px, PretrainConfig(max_steps=3, time_budget_s=0, batch_size=8))
    install_x_encoder(model, target)
    for (name, a), b in zip(model.x_encoder.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in model.x_encoder.parameters())
    # and it survives save/load (a tiny encoder has no hub source, so its weights are saved)
    model.save_pretrained(tmp_path)
    from vljepa.modeling import VLJepaModel

    loaded = VLJepaModel.from_pretrained(tmp_path)
    for (name, a), b in zip(loaded.x_encoder.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
