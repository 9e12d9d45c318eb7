"""Tests for vljepa.segment: offline Ward segmentation (one tree, every cut), the settled online
trigger, budgets, and the uniform-stride baseline with the same pooling choices."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering

from vljepa.segment import (
    DecodeBudget,
    Reference,
    Representative,
    TriggerConfig,
    WardTree,
    chain_connectivity,
    contiguous_segments,
    online_points,
    segment_offline,
    uniform_points,
)


def piecewise_stream(lengths, dim=16, noise=0.02, seed=0, ramp=0):
    """A stream that holds one random direction per piece (plus small noise), with `ramp`-step
    linear mixes between pieces like a sliding window over a cut; returns times, embs, starts."""
    rng = np.random.default_rng(seed)
    levels = rng.normal(size=(len(lengths), dim))
    rows = []
    for i, n in enumerate(lengths):
        rows += [levels[i]] * n
        if ramp and i + 1 < len(lengths):
            rows += [(1 - a) * levels[i] + a * levels[i + 1] for a in np.linspace(0, 1, ramp + 2)[1:-1]]
    embs = np.stack(rows) + noise * rng.normal(size=(len(rows), dim))
    starts = np.cumsum([n + ramp for n in lengths])[:-1].tolist()  # first step of each later piece
    return np.arange(len(embs)) * 0.5, embs, starts  # 2 Hz stream


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
        np.testing.assert_allclose(p.embedding, embs[lo:lo + n].mean(axis=0))
        assert p.emitted_t == times[-1]  # offline: known only once the stream has ended


def test_one_ward_tree_gives_every_cut_of_sklearns_clustering():
    rng = np.random.default_rng(7)
    embs = np.cumsum(rng.normal(size=(60, 8)), axis=0)  # a wandering stream: no obvious cuts
    tree = WardTree(embs)
    x = embs / np.linalg.norm(embs, axis=1, keepdims=True)
    for n in (1, 2, 3, 5, 11, 30, 59, 60):
        labels = AgglomerativeClustering(n_clusters=n, linkage="ward",
                                         connectivity=chain_connectivity(60)).fit_predict(x)
        expected = [0] + [i for i in range(1, 60) if labels[i] != labels[i - 1]] + [60]
        assert [lo for lo, _ in tree.segments(n)] + [60] == expected, n


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


def test_uniform_pools_like_selective_and_spans_are_equal():
    times, embs, _ = piecewise_stream([40], seed=2)
    mean = uniform_points(times, embs, DecodeBudget(max_decodes=4))  # default pooling: the span mean
    assert [round(p.t, 2) for p in mean] == [2.25, 7.25, 12.25, 17.25]
    np.testing.assert_allclose(mean[1].embedding, embs[10:20].mean(axis=0))
    assert mean[1].emitted_t == times[19]  # a live uniform decoder needs the whole span
    mid = uniform_points(times, embs, DecodeBudget(max_decodes=4), rep=Representative.MIDPOINT)
    np.testing.assert_allclose(mid[1].embedding, embs[14])


def test_online_decodes_each_change_once_after_it_settles():
    """10 pieces joined by 4-step window mixes (what a 2-s window at 2 Hz sees at a cut): one
    decode per piece, of the settled content, never of the half-mixed transition."""
    lengths = [12, 9, 15, 10, 8, 14, 11, 9, 13, 10]
    times, embs, starts = piecewise_stream(lengths, noise=0.01, seed=3, ramp=4)
    for smooth in (1, 3):
        cfg = TriggerConfig(cosine_threshold=0.3, smooth=smooth, settle_steps=2, settle_tol=0.01, min_gap_s=0.0,
                            pool_steps=0)  # decode as soon as settled
        points = online_points(times, embs, cfg)
        assert len(points) == len(lengths), smooth
        for p, lo, n in zip(points, [0, *starts], lengths):
            level = embs[lo:lo + n].mean(axis=0)
            cos = p.embedding @ level / np.linalg.norm(p.embedding) / np.linalg.norm(level)
            assert cos > 0.99  # the piece itself, not a mixture (a half mix has cos ~0.7)
            assert times[lo] <= p.t <= times[lo + n - 1]
            assert times[lo] <= p.emitted_t <= times[lo] + 0.5 * (1 + smooth)  # settle lag only


def test_a_passing_distractor_is_not_decoded_but_a_slow_drift_is():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 16))
    blip = np.stack([a] * 20 + [b] * 2 + [a] * 20)  # 2 steps away and back: settles where it was
    cfg = TriggerConfig(cosine_threshold=0.3, settle_steps=2, settle_tol=0.05, min_gap_s=0.0)
    assert len(online_points(np.arange(42) * 0.5, blip, cfg)) == 1
    drift = np.stack([(1 - w) * a + w * b for w in np.linspace(0, 1, 60)])  # never settles at this tol
    points = online_points(np.arange(60) * 0.5, drift, TriggerConfig(cosine_threshold=0.3, settle_tol=1e-4,
                                                                     max_wait_s=4.0, min_gap_s=0.0))
    assert len(points) >= 2  # the drift is decoded although it never settles ...
    assert all(q.emitted_t - p.emitted_t >= 4.0 for p, q in zip(points[1:], points[2:]))  # ... after max_wait


def test_an_event_shorter_than_the_window_is_decoded_at_its_least_mixed_moment():
    rng = np.random.default_rng(8)
    a, b, c = rng.normal(size=(3, 16))
    ramp = lambda x, y: [(1 - w) * x + w * y for w in np.linspace(0, 1, 6)[1:-1]]  # noqa: E731
    rows = [a] * 20 + ramp(a, b) + [b] + ramp(b, c) + [c] * 20  # b is never stable for 2 steps
    times = np.arange(len(rows)) * 0.5
    cfg = TriggerConfig(cosine_threshold=0.2, settle_steps=2, settle_tol=0.01, max_wait_s=3.0, min_gap_s=0.0)
    points = online_points(times, np.stack(rows), cfg)
    assert len(points) == 3
    short = points[1]
    cos = [short.embedding @ v / np.linalg.norm(v) for v in (a, b, c)]
    assert int(np.argmax(cos)) == 1 and abs(short.t - times[24]) <= 0.5  # centred on b
    assert short.emitted_t - times[20] <= 3.0 + 2.0  # detection inside the 2-s ramp, then at most max_wait


def test_online_min_gap_and_budget_are_respected():
    times, embs, _ = piecewise_stream([4] * 30, seed=5)  # a change every 2 s
    cfg = TriggerConfig(cosine_threshold=0.1, settle_tol=0.05, min_gap_s=0.0)
    free = online_points(times, embs, cfg)
    assert len(free) == 30
    gap = online_points(times, embs, TriggerConfig(cosine_threshold=0.1, settle_tol=0.05, min_gap_s=3.0))
    assert min(b.emitted_t - a.emitted_t for a, b in zip(gap, gap[1:])) >= 3.0
    capped = online_points(times, embs, cfg, DecodeBudget(max_decodes=7))
    assert len(capped) == 7
    rated = online_points(times, embs, cfg, DecodeBudget(rate_hz=0.25))
    for i, p in enumerate(rated):  # at every decode the running rate stays within budget
        assert i < 1 + 0.25 * (p.emitted_t - times[0])


def test_online_variance_signal_detects_a_shift():
    cfg = TriggerConfig(cosine_threshold=None, variance_threshold=0.3, window=3, settle_tol=0.05, min_gap_s=0.0,
                        pool_steps=0)
    times, embs, starts = piecewise_stream([20, 20], noise=0.01, seed=6)
    points = online_points(times, embs, cfg)
    assert len(points) == 2 and times[starts[0]] < points[1].t <= times[starts[0] + 3]


def test_bad_budget_and_trigger_settings_fail_clearly():
    with pytest.raises(ValueError, match="rate_hz"):
        DecodeBudget(rate_hz=0)
    with pytest.raises(ValueError, match="both are None"):
        TriggerConfig(cosine_threshold=None, variance_threshold=None)
    with pytest.raises(ValueError, match="settle_tol"):
        TriggerConfig(cosine_threshold=None, variance_threshold=0.5)
    with pytest.raises(ValueError, match="n_segments"):
        contiguous_segments(np.zeros((3, 2)), 5)


def test_segment_mean_reference_ignores_noise_that_fires_against_the_last_decoded_embedding():
    rng = np.random.default_rng(11)
    a, b = rng.normal(size=(2, 32))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    clean = np.stack([a] * 80 + [b] * 80)  # one change, at step 80
    noisy = clean + 0.25 * rng.normal(size=clean.shape) / np.sqrt(32)
    times = np.arange(160) * 0.5
    counts = {}
    for ref in Reference:
        cfg = TriggerConfig(cosine_threshold=0.04, settle_tol=1.0, min_gap_s=0.0, reference=ref.value, pool_steps=0)
        points = online_points(times, noisy, cfg)
        assert any(40 <= p.t <= 45 for p in points)  # the real change is caught either way
        counts[ref] = len(points)
    # the running mean of the segment is a steadier reference than one noisy decoded step
    assert counts[Reference.SEGMENT_MEAN] <= 3 < 10 < counts[Reference.DECODED]
    with pytest.raises(ValueError):
        TriggerConfig(reference="nearest")


def _cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_pooling_decodes_the_mean_of_more_settled_steps_once_per_piece():
    """pool_steps=8 on a noisy stream of long pieces: still one decode per piece, each later (the wait for
    8 steps) and nearer the piece's clean direction than the 2-step decode without pooling."""
    lengths = [20, 16, 24, 18, 22]
    rng = np.random.default_rng(12)
    levels = rng.normal(size=(len(lengths), 32))
    clean = np.concatenate([np.repeat(lv[None], n, axis=0) for lv, n in zip(levels, lengths)])
    noisy = clean + 0.35 * rng.normal(size=clean.shape)
    times, starts = np.arange(len(clean)) * 0.5, np.cumsum([0, *lengths[:-1]])
    base = dict(cosine_threshold=0.5, settle_tol=1.0, min_gap_s=0.0)
    plain, pooled = (online_points(times, noisy, TriggerConfig(**base, pool_steps=k)) for k in (0, 8))
    assert len(plain) == len(pooled) == len(lengths)
    for p, q, lo in zip(plain, pooled, starts):
        assert q.end - q.start == pytest.approx(7 * 0.5) and times[lo] <= q.start  # 8 steps of this piece
        assert q.emitted_t == pytest.approx(p.emitted_t + 6 * 0.5)  # 6 more steps than the 2-step decode
    gain = [_cos(q.embedding, lv) - _cos(p.embedding, lv) for p, q, lv in zip(plain, pooled, levels)]
    assert np.mean(gain) > 0.015 and min(gain) > 0, gain  # cos ~0.96 -> ~0.99


def test_a_change_ends_the_pool_early_and_the_end_of_the_stream_flushes_it():
    rng = np.random.default_rng(13)
    a, b, c = rng.normal(size=(3, 16))
    rows = np.stack([a] * 10 + [b] * 4 + [c] * 5)  # b lasts 4 steps, c runs out before 12 steps
    times = np.arange(len(rows)) * 0.5
    points = online_points(times, rows, TriggerConfig(cosine_threshold=0.3, settle_tol=0.01, min_gap_s=0.0,
                                                      pool_steps=12))
    assert [int(np.argmax([_cos(p.embedding, v) for v in (a, b, c)])) for p in points] == [0, 1, 2]
    assert points[1].emitted_t == times[14]  # b's pool ended by c's first step
    assert points[2].emitted_t == times[-1] and points[2].start == times[14]  # c flushed at the end
    with pytest.raises(ValueError, match="pool_steps"):
        TriggerConfig(pool_steps=-1)
