"""Tests for vljepa.decoder: the prefix-conditioned Y-decoder overfits captions and round-trips on disk."""

from __future__ import annotations

import torch

from vljepa.decoder import DecoderTrainConfig, YDecoder, load_decoder, save_decoder, train_decoder

CAPTIONS = ["a red 3 moves left", "a blue 7 grows", "a green 1 fades out", "a white 5 spins around",
            "a yellow 2 moves up"]


def _fitted_decoder():
    torch.manual_seed(0)
    emb = torch.randn(len(CAPTIONS), 24)  # stand-in Y-encoder embeddings, one per caption
    dec = YDecoder.build(embed_dim=24, corpus=CAPTIONS, hidden_size=64, num_layers=2, vocab_size=300)
    losses = train_decoder(dec, emb, CAPTIONS, DecoderTrainConfig(steps=150, batch_size=5, lr=5e-3),
                           progress=False)
    return dec, emb, losses


def test_decoder_overfits_a_handful_of_captions_and_round_trips(tmp_path):
    dec, emb, losses = _fitted_decoder()
    assert losses[-1] < 0.1 * losses[0]
    assert dec.generate(emb) == CAPTIONS
    # noisy embeddings near each caption's still decode to it (greedy)
    assert dec.generate(emb + 0.05 * torch.randn_like(emb)) == CAPTIONS
    save_decoder(dec, tmp_path)
    back = load_decoder(tmp_path)
    assert back.generate(emb) == CAPTIONS
    for (name, a), (_, b) in zip(dec.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    loss_a = dec(emb, CAPTIONS)["loss"]
    loss_b = back(emb, CAPTIONS)["loss"]
    torch.testing.assert_close(loss_a, loss_b)


def test_loss_covers_caption_tokens_only():
    dec = YDecoder.build(embed_dim=8, corpus=CAPTIONS, hidden_size=32, num_layers=1, vocab_size=300)
    emb = torch.randn(2, 8)
    out = dec(emb, CAPTIONS[:2])
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert dec.prefix.weight.grad is not None and dec.prefix.weight.grad.abs().sum() > 0


def test_load_decoder_names_the_missing_directory(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="save_decoder"):
        load_decoder(tmp_path)


def test_mixture_augmentation_keeps_the_label_dominant_and_is_validated():
    import pytest

    from vljepa.decoder import _mix

    z = torch.nn.functional.normalize(torch.randn(400, 16), dim=-1)
    cfg = DecoderTrainConfig(mix_prob=0.5, mix_min=0.7)
    out = _mix(z, cfg, torch.Generator().manual_seed(0))
    cos = (out * z).sum(dim=1)
    unchanged = torch.isclose(cos, torch.ones_like(cos), atol=1e-6)
    assert 0.35 < unchanged.float().mean() < 0.65  # about half the rows are mixed
    assert torch.allclose(out.norm(dim=1), torch.ones(400), atol=1e-5)
    # a mixed row stays nearer its own embedding than any other row of the batch
    assert bool(((out @ z.T).argmax(dim=1) == torch.arange(400)).all())
    with pytest.raises(ValueError, match="mix_min"):
        DecoderTrainConfig(mix_prob=0.5, mix_min=0.4)


def test_training_on_mixtures_decodes_windows_straddling_two_captions_to_the_dominant_one():
    torch.manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(len(CAPTIONS), 24), dim=-1)
    dec = YDecoder.build(embed_dim=24, corpus=CAPTIONS, hidden_size=64, num_layers=2, vocab_size=300)
    train_decoder(dec, emb, CAPTIONS, DecoderTrainConfig(steps=200, batch_size=5, lr=5e-3, mix_prob=0.5, mix_min=0.6),
                  progress=False)
    mixed = 0.7 * emb + 0.3 * emb.roll(1, dims=0)  # a window 70 % inside one event, 30 % in the previous
    assert dec.generate(mixed) == CAPTIONS
