"""Tests of vljepa.pretrain: the V-JEPA objective on a tiny V-JEPA 2 X-encoder.

The padded (masked-attention) forward equals the Hugging Face layers where nothing is padded,
padding never leaks into real rows, the loss ignores padded slots, the schedules follow V-JEPA,
the EMA target gets no gradient, and the saved checkpoint loads as any X-encoder.

    pytest tests/test_pretrain.py
"""

from __future__ import annotations

import copy

import pytest
import torch

from vljepa.builders import build_tiny_vljepa
from vljepa.masking import MaskBatch, MaskSpec, multiblock_masks, pad_rows, paper_mask_specs
from vljepa.pretrain import (
    EncoderConfig,
    PretrainConfig,
    PretrainOptim,
    build_encoder,
    install_x_encoder,
    jepa_loss,
    lr_at,
    momentum_at,
    param_groups,
    pretrain_loss,
    pretrain_x_encoder,
    token_grid,
    variance_covariance,
    weight_decay_at,
)
from vljepa.pretrain_forward import encode_context, masked_layer, predict_targets, rope_tables
from vljepa.processing import VideoTransform
from vljepa.synthetic import make_clip_dataset


def _encoder(layers: int = 2) -> torch.nn.Module:
    return build_encoder(EncoderConfig(pred_layers=layers, pred_hidden_size=32), num_mask_tokens=2)


def _pixels(encoder, n: int = 8) -> torch.Tensor:
    transform = VideoTransform.for_encoder(encoder.config.to_dict())
    return torch.stack([transform(c["frames"]) for c in make_clip_dataset(n, n_frames=8, seed=1)])  # (n, T, 3, S, S)


def _quiet(max_steps: int, batch: int = 8, **optim) -> PretrainConfig:
    cfg = PretrainConfig(optim=PretrainOptim(max_steps=max_steps, batch_size=batch, warmup_steps=2, **optim))
    cfg.run.progress = False
    return cfg


def test_masked_layer_equals_hf_layer_without_padding():
    enc = _encoder().eval()
    x = torch.randn(3, 64, 64)
    layer = enc.encoder.layer[0]
    full = torch.arange(64).expand(3, -1)
    ones = torch.ones(3, 64, dtype=torch.bool)
    torch.testing.assert_close(masked_layer(layer, x, rope_tables(layer.attention, full), ones), layer(x, None)[0])
    ids = torch.tensor([[0, 5, 17, 40, 63]] * 3)  # a subset keeps its RoPE positions = its token ids
    torch.testing.assert_close(masked_layer(layer, x[:, :5], rope_tables(layer.attention, ids), ones[:, :5]),
                               layer(x[:, :5], ids)[0])


def test_padding_does_not_leak_into_real_rows():
    enc = _encoder().eval()
    px = _pixels(enc, 2)
    rows = [(torch.tensor([0, 1, 2, 20, 40]), torch.tensor([3, 50, 63])),
            (torch.tensor([4, 9, 33]), torch.tensor([10, 11, 12, 13, 60, 61]))]
    ctx, ctx_valid = pad_rows([c for c, _ in rows])
    tgt, tgt_valid = pad_rows([t for _, t in rows])
    batch = MaskBatch(ctx, ctx_valid, tgt, tgt_valid, torch.tensor([1, 1]))
    with torch.no_grad():
        pred = predict_targets(enc.predictor, encode_context(enc, px, batch), batch, 64)  # (2, 6, D)
        for i, (c, t) in enumerate(rows):
            one = MaskBatch(c[None], torch.ones(1, len(c), dtype=torch.bool), t[None],
                            torch.ones(1, len(t), dtype=torch.bool), torch.tensor([1]))
            alone = predict_targets(enc.predictor, encode_context(enc, px[i:i + 1], one), one, 64)
            torch.testing.assert_close(pred[i, :len(t)], alone[0], atol=1e-5, rtol=1e-4)


def test_predictor_matches_hf_predictor_without_padding():
    enc = _encoder().eval()
    px = _pixels(enc, 2)
    ctx, tgt = torch.tensor([[0, 3, 8, 30, 62]] * 2), torch.tensor([[1, 2, 40, 41]] * 2)
    ones = torch.ones(2, 5, dtype=torch.bool)
    batch = MaskBatch(ctx, ones, tgt, ones[:, :4], torch.tensor([1, 1]))  # HF uses mask token 1
    with torch.no_grad():
        z = encode_context(enc, px, batch)  # (2, 5, D)
        ours = predict_targets(enc.predictor, z, batch, 64)
        scattered = z.new_zeros(2, 64, z.shape[-1]).scatter(1, ctx[..., None].expand_as(z), z)
        hf = enc.predictor(encoder_hidden_states=scattered, context_mask=[ctx], target_mask=[tgt]).last_hidden_state
    torch.testing.assert_close(ours, hf, atol=1e-5, rtol=1e-4)


def test_loss_ignores_padded_slots_and_averages_mask_types():
    target = torch.zeros(3, 4, 2)
    pred = torch.ones(3, 4, 2)
    valid = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    pred[~valid] = 100.0  # padded slots: must not count
    pred[2] = 3.0
    masks = MaskBatch(torch.zeros(3, 1, dtype=torch.long), torch.ones(3, 1, dtype=torch.bool),
                      torch.zeros(3, 4, dtype=torch.long), valid, torch.tensor([0, 0, 1]))
    out = jepa_loss(pred, target, masks)
    assert out["loss_mask0"].item() == pytest.approx(1.0) and out["loss_mask1"].item() == pytest.approx(3.0)
    assert out["loss_jepa"].item() == pytest.approx(2.0)  # mean over mask types, as V-JEPA


def test_schedules_follow_vjepa():
    cfg = PretrainOptim(max_steps=800, schedule_scale=1.25, warmup_steps=40, start_lr=2e-4, lr=6.25e-4,
                        final_lr=1e-6, weight_decay=0.04, final_weight_decay=0.4, ema=[0.998, 1.0])
    assert lr_at(0, cfg) == pytest.approx(2e-4) and lr_at(40, cfg) == pytest.approx(6.25e-4)
    assert lr_at(1000, cfg) == pytest.approx(1e-6) and lr_at(600, cfg) < lr_at(300, cfg)
    assert weight_decay_at(0, cfg) == pytest.approx(0.04) and weight_decay_at(1000, cfg) == pytest.approx(0.4)
    # momentum by optimizer step over max_steps * schedule_scale, so it stays below 1.0 in the run
    assert momentum_at(0, cfg) == 0.998 and momentum_at(500, cfg) == pytest.approx(0.999)
    assert momentum_at(799, cfg) < 1.0 and momentum_at(1000, cfg) == pytest.approx(1.0)
    vjepa2 = PretrainOptim(ema=[0.99925, 0.99925])
    assert {momentum_at(s, vjepa2) for s in (0, 10, 999)} == {0.99925}


def test_no_weight_decay_on_biases_and_norms():
    decay, plain = param_groups(_encoder())
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert plain["weight_decay"] == 0.0


def test_variance_covariance_terms():
    collapsed = variance_covariance(torch.ones(64, 8))
    assert collapsed["variance"].item() == pytest.approx(0.99, abs=0.01)
    spread = variance_covariance(torch.randn(4096, 8, generator=torch.Generator().manual_seed(0)) * 2)
    assert spread["variance"].item() == 0.0 and spread["covariance"].item() < 0.05


def test_encoder_starts_from_the_random_demo_encoder():
    tiny = build_tiny_vljepa(embed_dim=32, seed=3).x_encoder
    enc = build_encoder(EncoderConfig(seed=3, pred_layers=3), num_mask_tokens=2)
    for (name, a), b in zip(enc.encoder.state_dict().items(), tiny.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert len(enc.predictor.layer) == 3 and enc.predictor.embeddings.mask_tokens.shape[0] == 2


def test_loss_decreases_and_only_the_online_encoder_learns():
    enc = _encoder()
    px = _pixels(enc, 16)
    target, history, _ = pretrain_x_encoder(enc, px, _quiet(30, 16, lr=2e-3))
    losses = [h["loss"] for h in history]
    assert len(losses) == 30 and sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses
    assert not any(p.requires_grad or p.grad is not None for p in target.parameters())
    assert {"loss_mask0", "loss_mask1", "variance", "covariance", "momentum", "lr"} <= set(history[0])
    # the target moved by EMA only: not equal to its start, not equal to the online encoder
    start = _encoder()
    moved = max((a - b).abs().max().item() for a, b in zip(target.encoder.parameters(), start.encoder.parameters()))
    gap = max((a - b).abs().max().item() for a, b in zip(target.encoder.parameters(), enc.encoder.parameters()))
    assert moved > 0 and gap > 0
    # the saved target carries the trained predictor
    for a, b in zip(target.predictor.parameters(), enc.predictor.parameters(), strict=True):
        assert torch.equal(a, b)


def test_backward_reaches_encoder_and_predictor_only():
    online = _encoder().train()
    target = copy.deepcopy(online).requires_grad_(False)
    px = _pixels(online, 4)
    masks = multiblock_masks(token_grid(online.config), 4, paper_mask_specs(), torch.Generator().manual_seed(0))
    out = pretrain_loss(online, target, px, masks, PretrainConfig().loss)
    out["loss"].backward()
    assert all(p.grad is None for p in target.parameters())
    assert online.encoder.embeddings.patch_embeddings.proj.weight.grad.abs().sum() > 0
    assert online.predictor.embeddings.mask_tokens.grad.abs().sum() > 0


def test_variance_weight_changes_the_loss():
    online = _encoder().train()
    target = copy.deepcopy(online).requires_grad_(False)
    px = _pixels(online, 4)
    masks = multiblock_masks(token_grid(online.config), 4, [MaskSpec(2, [0.3, 0.3])], torch.Generator())
    cfg = PretrainConfig().loss
    plain = pretrain_loss(online, target, px, masks, cfg)
    cfg.variance_weight = 1.0
    reg = pretrain_loss(online, target, px, masks, cfg)
    assert reg["loss"].item() == pytest.approx(plain["loss"].item() + reg["variance"].item(), rel=1e-5)


def test_install_x_encoder_replaces_and_freezes(tmp_path):
    model = build_tiny_vljepa(embed_dim=32, seed=0)
    enc = _encoder(layers=3)
    install_x_encoder(model, enc)
    assert not any(p.requires_grad for p in model.x_encoder.parameters())
    model.save_pretrained(tmp_path)
    from vljepa.modeling import VLJepaModel

    loaded = VLJepaModel.from_pretrained(tmp_path)
    for (name, a), b in zip(loaded.x_encoder.state_dict().items(), enc.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
