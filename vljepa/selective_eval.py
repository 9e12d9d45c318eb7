"""Runs the selective-decoding strategies of `vljepa.segment` over embedding streams and turns them
into the protocol's curves (`eval.selective_decoding`).

Data flow: `VideoStream`s (times (T,), predicted embeddings (T, D), timestamped ground truth) ->
per strategy a fine grid of settings (uniform: every stride, then log-spaced; offline Ward: a dense
log grid of rates, i.e. every segment count in range, all cut from one `WardTree` per video;
online: a threshold sweep of the settled trigger) -> `eval.selective_decoding.evaluate_curve`
matches, decodes (through a `CaptionCache`) and records the captions -> one `Curve` per
(strategy, pooling). The online trigger's settle tolerance is calibrated on *separate calibration
streams* (`calibrate_trigger`), never on the test streams; its threshold is what the sweep varies.
`oracle_stream` simulates a perfect model over the same ground truth (the bound on what *where to decode*
can give on those videos; decoded by `nearest_caption_decoder`). `decoder_quality` scores the decoder alone: ground-truth caption embeddings, and predicted
embeddings pooled over each true event (an oracle segmentation). `long_video_streams` turns
synthetic long videos into a model's embedding streams; `window_targets` labels the windows of
*training* videos with their dominant caption, for the Y-decoder.

    result = evaluate(streams, CaptionCache(decode_fn), calibrate_trigger(cal_streams))  # measure + analyze
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eval.captioning import cider_score
from eval.selective_decoding import (
    Analysis,
    CaptionCache,
    Corpus,
    Curve,
    ProtocolConfig,
    VideoStream,
    analyze,
    evaluate_curve,
)
from vljepa.processing import VideoTransform
from vljepa.segment import (
    DecodeBudget,
    Representative,
    TriggerConfig,
    WardTree,
    online_points,
    segment_offline,
    stride_points,
)
from vljepa.stream import StreamConfig, embed_stream, iter_windows
from vljepa.synthetic import StreamKind, dominant_event, make_long_video, reference_captions

UNIFORM_MEAN, UNIFORM_MIDPOINT = "uniform/mean", "uniform/midpoint"
OFFLINE_MEAN, OFFLINE_MIDPOINT, ONLINE = "offline/mean", "offline/midpoint", "online"
BASELINE = (UNIFORM_MEAN, UNIFORM_MIDPOINT)  # the baseline is the better of the two at every rate
SELECTIVE = (OFFLINE_MEAN, OFFLINE_MIDPOINT, ONLINE)


@dataclass
class SweepConfig:
    """The settings grid of every strategy."""

    min_hz: float = 0.005  # lowest decode rate of the uniform and offline grids
    every_stride: int = 40  # uniform: every stride of 1..every_stride steps, then log-spaced
    per_decade: int = 40  # density of the log-spaced parts (offline rates, long strides)
    thresholds: tuple[float, float, int] = (0.002, 1.5, 40)  # online: cosine thresholds lo, hi, count (log)
    lag_s: float = 1.0  # an embedding exists half a window after its centre: window_s / 2

    def __post_init__(self) -> None:
        lo, hi, n = self.thresholds
        if not 0 < lo < hi or n < 2 or self.min_hz <= 0:
            raise ValueError(f"SweepConfig: need 0 < thresholds lo < hi, count >= 2 and min_hz > 0, got "
                             f"{self.thresholds}, {self.min_hz}")


def _stream_hz(streams: Sequence[VideoStream]) -> float:
    return float(1 / np.median(np.concatenate([np.diff(s.times) for s in streams])))


def _log_grid(lo: float, hi: float, per_decade: int) -> np.ndarray:
    return np.geomspace(lo, hi, max(2, int(np.ceil(np.log10(hi / lo) * per_decade)) + 1))


def _dedup(settings: list[tuple[float, list]]) -> list[tuple[float, list]]:
    """Drop settings that choose exactly the same points as an earlier one."""
    seen, out = set(), []
    for param, per_video in settings:
        key = tuple((len(p), *(round(x.t, 6) for x in p)) for p in per_video)
        if key not in seen:
            seen.add(key)
            out.append((param, per_video))
    return out


def select(stream: VideoStream, label: str, param: float, trigger: TriggerConfig | None = None,
           tree: WardTree | None = None) -> list:
    """Decode points of one video for strategy `label` at knob value `param` (uniform: the rate of
    a stride, stream rate / stride steps; offline: a rate in Hz; online: a cosine threshold)."""
    rep = Representative.MIDPOINT if label.endswith("midpoint") else Representative.MEAN
    if label.startswith("uniform"):  # every k steps, k = stream rate / param
        return stride_points(stream.times, stream.embeddings, max(1, round(_stream_hz([stream]) / param)), rep)
    if label.startswith("offline"):
        return segment_offline(stream.times, stream.embeddings, DecodeBudget(rate_hz=param), rep, tree)
    if label == ONLINE:
        if trigger is None:
            raise ValueError("the online strategy needs a TriggerConfig (see calibrate_trigger)")
        return online_points(stream.times, stream.embeddings, dataclasses.replace(trigger, cosine_threshold=param))
    raise ValueError(f"unknown strategy {label!r}; choose one of {BASELINE + SELECTIVE}")


def settings(streams: Sequence[VideoStream], label: str, cfg: SweepConfig, trigger: TriggerConfig | None = None,
             trees: Sequence[WardTree] | None = None) -> list[tuple[float, list]]:
    """The strategy's grid: uniform at every stride of 1..`every_stride` steps, then log-spaced
    strides down to `min_hz`; offline at a dense log grid of rates (each video's segment count =
    rate x duration); online at every threshold of the sweep (no budget: the threshold sets the rate)."""
    hz = _stream_hz(streams)
    if label.startswith("uniform"):
        strides = list(range(1, cfg.every_stride + 1))
        longest = max(len(s.times) for s in streams)
        strides += [int(k) for k in np.unique(_log_grid(cfg.every_stride, hz / cfg.min_hz, cfg.per_decade).round())
                    if cfg.every_stride < k <= 2 * longest]
        params = [hz / k for k in strides]
    elif label.startswith("offline"):
        params = [float(r) for r in _log_grid(cfg.min_hz, hz, cfg.per_decade)]
    else:
        params = [float(t) for t in np.geomspace(*cfg.thresholds[:2], cfg.thresholds[2])]
    if trees is None:
        trees = [WardTree(s.embeddings) if label.startswith("offline") else None for s in streams]
    return _dedup([(p, [select(s, label, p, trigger, tree) for s, tree in zip(streams, trees)]) for p in params])


def calibrate_trigger(streams: Sequence[VideoStream], base: TriggerConfig | None = None, quantile: float = 0.97,
                      lag_s: float = 1.0) -> TriggerConfig:
    """Settle tolerance = the `quantile` of step-to-step cosine distances between windows that lie
    wholly inside one ground-truth event of the *calibration* streams (how much a settled stream
    still moves: motion inside an event, predictor noise). The defaults (0.97, one settle step)
    were chosen on development videos of the demo model, never on its test videos."""
    if not streams:
        raise ValueError("calibrate_trigger needs at least one calibration stream")
    dists = []
    for s in streams:
        unit = s.embeddings / np.linalg.norm(s.embeddings, axis=1, keepdims=True)  # (T, D)
        step = 1 - (unit[1:] * unit[:-1]).sum(axis=1)  # (T - 1,)
        for start, end, _ in s.truth:
            inside = (s.times - lag_s >= start) & (s.times + lag_s <= end)  # (T,)
            dists.append(step[inside[1:] & inside[:-1]])
    dists = np.concatenate(dists)
    if not dists.size:
        raise ValueError("calibrate_trigger: no event is longer than a window in the calibration streams")
    return dataclasses.replace(base or TriggerConfig(), settle_tol=float(np.quantile(dists, quantile)))


def measure(streams: Sequence[VideoStream], decode: CaptionCache, trigger: TriggerConfig,
            cfg: SweepConfig | None = None) -> dict[str, Curve]:
    """All curves of the protocol: uniform and offline with both poolings, and the online trigger."""
    if not streams:
        raise ValueError("measure needs at least one test stream")
    cfg = cfg or SweepConfig()
    trees = [WardTree(s.embeddings) for s in streams]
    return {label: evaluate_curve(label, streams, settings(streams, label, cfg, trigger, trees), decode, cfg.lag_s)
            for label in BASELINE + SELECTIVE}


def evaluate(streams: Sequence[VideoStream], decode: CaptionCache, trigger: TriggerConfig,
             cfg: SweepConfig | None = None, proto: ProtocolConfig | None = None) -> Analysis:
    """`measure` every strategy on `streams`, then `eval.selective_decoding.analyze` them against the
    uniform baseline (isotonic fits, equal-quality rates, bootstrap over the videos)."""
    return analyze(Corpus.of(streams), measure(streams, decode, trigger, cfg), BASELINE, SELECTIVE, proto)


def decoder_quality(streams: Sequence[VideoStream], decode: Callable[[np.ndarray], list[str]],
                    text_embed: Callable[[list[str]], np.ndarray] | None = None, lag_s: float = 1.0,
                    bank: Sequence[str] | None = None) -> dict:
    """CIDEr-D of the decoder alone, one caption per event: from the Y-encoder embedding of the
    event's caption (`text`, the decoder's ceiling), from the mean predicted embedding of the
    windows wholly inside the event (`event_mean`, an oracle segmentation) and from the window at
    its midpoint (`event_midpoint`); `ceiling` scores the first reference itself (CIDEr-D of an exact
    caption against several paraphrased references stays well below 10). With a caption `bank` (and `text_embed`), `retrieval_event_mean`
    replaces the decoder by the nearest caption of the bank: what the predicted embedding holds.
    `event_mean_captions` are the decoded captions, for per-attribute checks."""
    refs = [r for s in streams for _, _, r in s.truth]
    means, mids = [], []
    for s in streams:
        for start, end, _ in s.truth:
            inside = np.flatnonzero((s.times - lag_s >= start) & (s.times + lag_s <= end))
            if not inside.size:  # shorter than a window: the windows centred inside it
                inside = np.flatnonzero((s.times >= start) & (s.times < end))
            if not inside.size:
                inside = np.array([int(np.argmin(np.abs(s.times - (start + end) / 2)))])
            means.append(s.embeddings[inside].mean(axis=0))
            mids.append(s.embeddings[inside[len(inside) // 2]])
    captions = decode(np.stack(means))
    out = {"event_mean": cider_score(refs, captions)[0], "event_midpoint": cider_score(refs, decode(np.stack(mids)))[0],
           "ceiling": cider_score(refs, [r[0] for r in refs])[0],  # the first reference itself, word for word
           "n_events": len(refs), "event_mean_captions": captions}
    if text_embed is not None:
        out["text"] = cider_score(refs, decode(np.asarray(text_embed([r[0] for r in refs]))))[0]
        if bank is not None:
            unit = np.asarray(text_embed(list(bank)))  # (C, D)
            unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
            nearest = (np.stack(means) @ unit.T).argmax(axis=1)
            out["retrieval_event_mean"] = cider_score(refs, [bank[i] for i in nearest])[0]
    return out


def long_video_streams(model, seeds: Sequence[int], kind: str, cfg: StreamConfig, n_events: int,
                       fps: float = 4, size: int = 32) -> list[VideoStream]:
    """Synthetic long videos of one `StreamKind` -> sliding-window predicted-embedding streams."""
    transform = VideoTransform.for_encoder(model.config.x_encoder)
    streams = []
    for seed in seeds:
        frames, truth = make_long_video(seed, n_events, fps=fps, size=size, kind=kind)
        pairs = list(embed_stream(model, iter_windows(((i / fps, f) for i, f in enumerate(frames)), cfg, transform), cfg))
        streams.append(VideoStream(times=np.array([t for t, _ in pairs]), embeddings=np.stack([e for _, e in pairs]),
                                   truth=[(s, e, reference_captions(c)) for s, e, c in truth], kind=str(kind)))
    return streams


def window_targets(streams: Sequence[VideoStream], lag_s: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """Decoder training pairs from streams of *training* videos: every window labelled with the
    caption of the event it overlaps most (mixed windows decode to the dominant event), plus the
    mean embedding of each event's windows (what mean-pooled decoding hands the decoder)."""
    embs, texts = [], []
    for s in streams:
        for t, e in zip(s.times, s.embeddings):
            embs.append(e)
            texts.append(s.truth[dominant_event(s.truth, t - lag_s, t + lag_s)][2][0])
        for start, end, refs in s.truth:
            inside = (s.times >= start) & (s.times < end)
            if inside.any():
                embs.append(s.embeddings[inside].mean(axis=0))
                texts.append(refs[0])
    return np.stack(embs), texts  # (N, D), N canonical captions


@dataclass
class OracleConfig:
    """A simulated stream of a *perfect* model over the same ground truth: each window's embedding is
    the mean over its frames of the Y-encoder embedding of the caption on screen (gradual kinds blend
    the two captions linearly over a 2-s transition), plus a distractor direction (distractor kind)
    and Gaussian noise of relative size `noise`; decoded by the nearest caption of the caption bank."""

    fps: float = 4.0
    window_s: float = 2.0
    hz: float = 2.0  # embedding stream rate
    noise: float = 0.0  # predictor error, relative to a unit embedding (0: a perfect predictor)
    distractor: float = 0.3  # norm of the distractor direction (distractor kind only)


def frame_weights(truth: Sequence[tuple[float, float, str]], fps: float, kind: str) -> np.ndarray:
    """(frames, events) share of each event on screen: one-hot, or linear 2-s ramps for gradual."""
    n = int(round(truth[-1][1] * fps))
    t = (np.arange(n) + 0.5) / fps
    w = np.zeros((n, len(truth)))
    for i, (s, e, _) in enumerate(truth):
        w[(t >= s) & (t < e), i] = 1.0
    if kind == StreamKind.GRADUAL.value:
        for i, (_, e, _) in enumerate(truth[:-1]):
            idx = np.flatnonzero((t >= e - 1.0) & (t < e + 1.0))
            a = np.clip((t[idx] - (e - 1.0)) / 2.0, 0, 1)  # 0 -> 1 over the fade
            w[idx, i], w[idx, i + 1] = 1 - a, a
    return w


def oracle_stream(truth: Sequence[tuple[float, float, str]], caption_emb: Mapping[str, np.ndarray], kind: str,
                  rng: np.random.Generator, cfg: OracleConfig | None = None) -> VideoStream:
    """The `OracleConfig` stream of one video from its `(start_s, end_s, canonical caption)` truth."""
    cfg = cfg or OracleConfig()
    if not truth:
        raise ValueError("oracle_stream needs a ground truth of at least one (start_s, end_s, caption) event")
    missing = sorted({c for _, _, c in truth} - set(caption_emb))
    if missing:
        raise ValueError(f"oracle_stream: no embedding for {len(missing)} caption(s), e.g. {missing[0]!r}; pass "
                         "caption_emb with an embedding for every caption of the ground truth")
    if truth[-1][1] < cfg.window_s:
        raise ValueError(f"oracle_stream: the video lasts {truth[-1][1]} s, shorter than one {cfg.window_s}-s window")
    w = frame_weights(truth, cfg.fps, kind)  # (F, E)
    frames = w @ np.stack([caption_emb[c] for _, _, c in truth])  # (F, D)
    dim = frames.shape[1]
    if kind == StreamKind.DISTRACTOR.value:
        walk = np.cumsum(rng.normal(size=(len(frames), dim)), axis=0)
        frames = frames + cfg.distractor * walk / np.linalg.norm(walk, axis=1, keepdims=True)
    win, stride = int(round(cfg.window_s * cfg.fps)), int(round(cfg.fps / cfg.hz))
    starts = range(0, len(frames) - win + 1, stride)
    out = np.stack([frames[s:s + win].mean(axis=0) for s in starts])  # (T, D)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out += cfg.noise * rng.normal(size=out.shape) / np.sqrt(dim)  # relative noise norm ~ `noise`
    times = np.array([(s + win / 2) / cfg.fps for s in starts])
    return VideoStream(times=times, embeddings=out, truth=[(s, e, reference_captions(c)) for s, e, c in truth], kind=kind)


def nearest_caption_decoder(bank: Sequence[str], bank_emb: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    """A decoder that returns the caption of the bank nearest (cosine) to each embedding: perfect up to
    what the embedding holds."""
    bank_emb = np.asarray(bank_emb, dtype=np.float64)
    if not len(bank) or bank_emb.ndim != 2 or len(bank_emb) != len(bank):
        raise ValueError(f"nearest_caption_decoder needs one embedding row per caption: {len(bank)} captions, "
                         f"embeddings of shape {bank_emb.shape}")
    unit = bank_emb / np.linalg.norm(bank_emb, axis=1, keepdims=True)  # (C, D)

    def decode(embs: np.ndarray) -> list[str]:
        return [bank[i] for i in (np.asarray(embs) @ unit.T).argmax(axis=1)]

    return decode
