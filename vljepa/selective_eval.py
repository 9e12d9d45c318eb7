"""Runs the selective-decoding strategies of `vljepa.segment` over embedding streams and scores them.

Data flow: `VideoStream`s (times (T,), predicted embeddings (T, D), timestamped ground truth) ->
`select` picks decode points per strategy at a target rate (offline Ward segments, the online
trigger, uniform stride) -> `eval.selective_decoding.score` decodes, matches and computes CIDEr
-> one row per (strategy, rate). The online trigger has a threshold, not a rate: for each target
rate it is calibrated by bisection on *separate calibration streams* (`calibrate_trigger`), and
the rate budget caps it on the test streams.

    rows = sweep(streams, decode_fn, rates=[2, 1, 0.5, 0.2, 0.1], calibration=cal_streams)
    table = eval.selective_decoding.decode_reduction(rows, "offline")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from eval.selective_decoding import DecodeFn, Strategy, VideoStream, score
from vljepa.segment import (
    DecodeBudget,
    DecodePoint,
    Representative,
    TriggerConfig,
    online_points,
    segment_offline,
    uniform_points,
)


def select(stream: VideoStream, strategy: Strategy, rate_hz: float, trigger: TriggerConfig | None = None,
           rep: Representative = Representative.MEAN) -> list[DecodePoint]:
    """Decode points for one video at a target average rate."""
    budget = DecodeBudget(rate_hz=rate_hz)
    if strategy is Strategy.OFFLINE:
        return segment_offline(stream.times, stream.embeddings, budget, rep)
    if strategy is Strategy.UNIFORM:
        return uniform_points(stream.times, stream.embeddings, budget)
    if trigger is None:
        raise ValueError("Strategy.ONLINE needs a calibrated TriggerConfig (see calibrate_trigger)")
    return online_points(stream.times, stream.embeddings, trigger, budget)


def calibrate_trigger(streams: Sequence[VideoStream], rate_hz: float, base: TriggerConfig,
                      iters: int = 14) -> TriggerConfig:
    """Bisect the cosine threshold so the unbudgeted trigger decodes at about `rate_hz` on `streams`."""
    duration = sum(s.duration for s in streams)
    lo, hi = 0.0, 2.0  # cosine distance range
    gap = min(base.min_gap_s, 0.5 / rate_hz)  # a gap above 1/rate would make the rate unreachable
    for _ in range(iters):
        mid = (lo + hi) / 2
        cfg = dataclasses.replace(base, cosine_threshold=mid, variance_threshold=None, min_gap_s=gap)
        n = sum(len(online_points(s.times, s.embeddings, cfg)) for s in streams)
        lo, hi = (mid, hi) if n / duration > rate_hz else (lo, mid)
    return dataclasses.replace(base, cosine_threshold=hi, variance_threshold=None, min_gap_s=gap)


def sweep(streams: Sequence[VideoStream], decode_fn: DecodeFn, rates: Sequence[float],
          strategies: Sequence[Strategy] = tuple(Strategy), calibration: Sequence[VideoStream] = (),
          trigger: TriggerConfig | None = None) -> list[dict]:
    """One row {strategy, target_hz, decodes_per_s, n_decodes, cider, ...} per (strategy, rate)."""
    rows = []
    for strategy in strategies:
        for rate in rates:
            cfg = None
            if strategy is Strategy.ONLINE:
                if not calibration:
                    raise ValueError("online sweep needs calibration streams separate from the test streams")
                cfg = calibrate_trigger(calibration, rate, trigger or TriggerConfig())
            pts = [select(s, strategy, rate, cfg) for s in streams]
            row = {"strategy": strategy.value, "target_hz": rate, **score(streams, pts, decode_fn)}
            if cfg is not None:
                row["cosine_threshold"] = cfg.cosine_threshold
            rows.append(row)
    return rows
