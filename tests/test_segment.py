"""Tests for vljepa.segment: offline Ward segmentation, the online trigger, budgets, uniform stride."""

from __future__ import annotations

import numpy as np
import pytest

from vljepa.segment import (
    DecodeBudget,
    OnlineEmit,
    Representative,
    TriggerConfig,
    contiguous_segments,
    online_points,
    segment_offline,
    uniform_points,
)


def piecewise_stream(lengths, dim=16, noise=0.02, seed=0):
    """A stream that holds one random direction per piece, plus small noise; returns times, embs, bounds."""
    rng = np.random.default_rng(seed)
    levels = rng.normal(size=(len(lengths), dim))
    embs = np.concatenate([np.repeat(levels[i:i + 1], n, axis=0) for i, n in enumerate(lengths)])
    embs = embs + noise * rng.normal(size=embs.shape)
    times = np.arange(len(embs)) * 0.5  # 2 Hz stream
    bounds = np.cumsum(lengths)[:-1].tolist()
    return times, embs, bounds


def test_piecewise_constant_stream_is_segmented_at_its_change_points():
    lengths = [7, 3, 12, 5, 9]
    times, embs, bounds = piecewise_stream(lengths)
    segs = contiguous_segments(embs, len(lengths))
    assert [lo for lo, _ in segs[1:]] == bounds
    assert segs[0][0] == 0 and segs[-1][1] == len(embs)
    points = segment_offline(times, embs, DecodeBudget(max_decodes=len(lengths)))
    # midpoint timestamps fall inside their pieces, and the mean embedding is the piece's level
    starts = [0] + bounds
    for p, lo, n in zip(points, starts, lengths):
        assert times[lo] <= p.t <= times[lo + n - 1]
        level = embs[lo:lo + n].mean(axis=0)
        np.testing.assert_allclose(p.embedding, level)


def test_midpoint_representative_takes_the_middle_embedding():
    times, embs, _ = piecewise_stream([4, 6])
    points = segment_offline(times, embs, DecodeBudget(max_decodes=2), rep=Representative.MIDPOINT)
    np.testing.assert_allclose(points[1].embedding, embs[4 + 2])


@pytest.mark.parametrize("rate", [2.0, 0.5, 0.1, 0.01])
def test_budget_rate_is_respected_by_offline_and_uniform(rate):
    times, embs, _ = piecewise_stream([20, 30, 50, 40], seed=1)  # 140 steps = 70 s at 2 Hz
    duration = 70.0
    for select in (segment_offline, uniform_points):
        points = select(times, embs, DecodeBudget(rate_hz=rate))
        assert len(points) == max(1, min(len(times), round(rate * duration)))
        assert len(points) <= max(1, rate * duration + 0.5)
        assert all(a.t < b.t for a, b in zip(points, points[1:]))


def test_uniform_spans_are_equal_and_cover_the_stream():
    times, embs, _ = piecewise_stream([40], seed=2)
    points = uniform_points(times, embs, DecodeBudget(max_decodes=4))
    assert [round(p.t, 2) for p in points] == [2.25, 7.25, 12.25, 17.25]


def test_online_trigger_fires_on_a_shift_and_not_on_noise_below_threshold():
    cfg = TriggerConfig(smooth=2, window=3, cosine_threshold=0.3, min_gap_s=0.0)
    # one direction with noise well below the threshold: only the initial decode
    times, embs, _ = piecewise_stream([60], noise=0.05, seed=3)
    assert len(online_points(times, embs, cfg)) == 1
    # the same noise plus two shifts: one decode per piece, each shortly after its change point
    times, embs, bounds = piecewise_stream([20, 20, 20], noise=0.05, seed=3)
    points = online_points(times, embs, cfg)
    assert len(points) == 3
    for p, b in zip(points[1:], bounds):
        assert times[b] <= p.t <= times[b] + 1.5  # at most smoothing lag after the change


def test_online_variance_signal_fires_on_a_shift():
    cfg = TriggerConfig(smooth=1, window=3, cosine_threshold=None, variance_threshold=0.5, min_gap_s=3.0)
    times, embs, bounds = piecewise_stream([20, 20], noise=0.05, seed=4)
    points = online_points(times, embs, cfg)
    assert len(points) == 2 and points[1].t == times[bounds[0]]


def test_online_min_gap_and_budget_are_respected():
    times, embs, _ = piecewise_stream([2] * 40, seed=5)  # a change every second
    cfg = TriggerConfig(smooth=1, cosine_threshold=0.1, min_gap_s=0.0)
    free = online_points(times, embs, cfg)
    assert len(free) == 40
    gap = online_points(times, embs, TriggerConfig(smooth=1, cosine_threshold=0.1, min_gap_s=3.0))
    assert min(b.t - a.t for a, b in zip(gap, gap[1:])) >= 3.0
    capped = online_points(times, embs, cfg, DecodeBudget(max_decodes=7))
    assert len(capped) == 7
    rated = online_points(times, embs, cfg, DecodeBudget(rate_hz=0.25))
    for i, p in enumerate(rated):  # at every decode the running rate stays within budget
        assert i < 1 + 0.25 * (p.t - times[0])


def test_online_segment_mean_emits_closed_segments_and_respects_the_cap():
    times, embs, bounds = piecewise_stream([10, 10, 10], noise=0.01, seed=6)
    cfg = TriggerConfig(smooth=1, cosine_threshold=0.3, min_gap_s=0.0, emit=OnlineEmit.SEGMENT_MEAN)
    points = online_points(times, embs, cfg)
    assert len(points) == 3
    assert points[0].start == times[0] and points[0].end == times[bounds[0]]
    unit = embs / np.linalg.norm(embs, axis=1, keepdims=True)  # the trigger works on unit vectors
    np.testing.assert_allclose(points[0].embedding, unit[:10].mean(axis=0))
    assert len(online_points(times, embs, cfg, DecodeBudget(max_decodes=2))) == 2


def test_bad_budget_and_trigger_settings_fail_clearly():
    with pytest.raises(ValueError, match="rate_hz"):
        DecodeBudget(rate_hz=0)
    with pytest.raises(ValueError, match="both are None"):
        TriggerConfig(cosine_threshold=None, variance_threshold=None)
    with pytest.raises(ValueError, match="n_segments"):
        contiguous_segments(np.zeros((3, 2)), 5)
