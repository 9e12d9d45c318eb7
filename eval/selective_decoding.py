"""The selective-decoding protocol: quality-versus-decode-rate curves, their monotone fits, the
decode rate each strategy needs for equal quality, and bootstrap confidence intervals over videos.

Protocol (VL-JEPA paper, "selective decoding"; DESIGN.md section 1), model-agnostic:
  per strategy, a fine grid of settings (uniform: every stride; offline: every segment count in
  range; online: a threshold sweep) -> per setting, the decode points of each video -> each
  ground-truth event is matched to the temporally nearest decoded point (distance 0 inside the
  event, else to its nearest edge; ties go to the point nearest the event's midpoint) -> only the
  matched points are decoded (`CaptionCache`: each distinct embedding once) -> corpus CIDEr-D over
  all events of all videos (`eval.captioning`, IDF from the whole reference set) -> a `Curve`.
  `analyze` then fits each curve with isotonic regression of quality on log decode rate, reads the
  rate each strategy needs to reach 90 / 95 / 100 % of the best uniform quality (the baseline is
  the better of its poolings at every rate), the ratio of those rates ("N x fewer decodes at equal
  quality") and the area between the curves over log rate, and repeats all of it on bootstrap
  resamples of the videos (CIDEr recomputed on each resampled corpus, IDF included) for 95 %
  intervals. `combine_seeds` averages seeds (geometric mean of rates and ratios) with a two-level
  bootstrap (seeds, then videos). A ratio of 0 means the strategy never reached that quality.

Choosing the decode points (Ward segments, the online trigger, uniform stride) is the model side
and lives in `vljepa.segment` / `vljepa.selective_eval`; here streams are arrays, decode points
anything with `.t`, `.embedding` and `.emitted_t`, and the decoder any callable.

    curves = vljepa.selective_eval.measure(streams, CaptionCache(decode_fn), trigger)   # model side
    result = analyze(Corpus.of(streams), curves, baseline=["uniform/mean", "uniform/midpoint"],
                     selective=["offline/mean", "online"])  # point values + bootstrap replicates
    summarize(result, ProtocolConfig())                       # JSON: metrics with CIs, cost, latency
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import sklearn
from sklearn.isotonic import isotonic_regression

from eval.captioning import CorpusCider, cider_score

DecodeFn = Callable[[np.ndarray], list[str]]  # (N, D) embeddings -> N captions


class DecodePoint(Protocol):
    """Anything with the time of a decode, the embedding to decode there and when it was decided."""

    t: float
    embedding: np.ndarray  # (D,)
    emitted_t: float | None


@dataclass
class VideoStream:
    """One long video: its embedding stream, ground truth [(start_s, end_s, references)], its kind."""

    times: np.ndarray  # (T,)
    embeddings: np.ndarray  # (T, D)
    truth: list[tuple[float, float, list[str]]]
    kind: str = "hard_cut"

    def __post_init__(self) -> None:
        times, embs = np.asarray(self.times), np.asarray(self.embeddings)
        if times.ndim != 1 or embs.ndim != 2 or len(times) != len(embs) or not len(times):
            raise ValueError(f"VideoStream needs times (T,) and embeddings (T, D) with T >= 1, got shapes "
                             f"{times.shape} and {embs.shape}")
        if not np.isfinite(embs).all():
            raise ValueError("VideoStream embeddings contain NaN or inf (a diverged model or a broken input)")

    @property
    def duration(self) -> float:
        step = float(np.median(np.diff(self.times))) if len(self.times) > 1 else 0.0
        return float(self.times[-1] - self.times[0] + step)


@dataclass
class Corpus:
    """All ground-truth events of a set of videos, in order: references and the video of each."""

    refs: list[list[str]]
    video: np.ndarray  # (E,) index of each event's video
    duration_s: float
    strata: np.ndarray | None = None  # (V,) group of each video (e.g. seed), resampled separately
    event_s: np.ndarray | None = None  # (E,) length of each event in seconds

    @classmethod
    def of(cls, streams: Sequence[VideoStream], strata: Sequence[int] | None = None) -> Corpus:
        refs = [list(r) for s in streams for _, _, r in s.truth]
        video = np.array([v for v, s in enumerate(streams) for _ in s.truth], dtype=np.int64)
        event_s = np.array([end - start for s in streams for start, end, _ in s.truth], dtype=np.float64)
        return cls(refs, video, sum(s.duration for s in streams), None if strata is None else np.asarray(strata),
                   event_s)

    @property
    def n_videos(self) -> int:
        return int(self.video.max()) + 1 if len(self.video) else 0

    def bootstrap_weights(self, n_boot: int, rng: np.random.Generator) -> np.ndarray:
        """(B, E) how often each event occurs when videos are resampled with replacement (per stratum)."""
        strata = np.zeros(self.n_videos, dtype=np.int64) if self.strata is None else self.strata
        counts = np.zeros((n_boot, self.n_videos))
        for g in np.unique(strata):
            members = np.flatnonzero(strata == g)
            draws = rng.choice(members, size=(n_boot, len(members)))  # (B, V_g)
            for b in range(n_boot):
                counts[b] += np.bincount(draws[b], minlength=self.n_videos)
        return counts[:, self.video]


def nearest_decoded(truth: Sequence[tuple[float, float, object]], times: Sequence[float]) -> list[int]:
    """For each ground-truth event, the index of the temporally nearest decoded caption."""
    if not len(times):
        raise ValueError("no decoded captions to match the ground truth against")
    d = np.asarray(times, dtype=np.float64)  # (K,)
    out = []
    for start, end, _ in truth:
        gap = np.maximum(0.0, np.maximum(start - d, d - end))  # 0 inside the event
        mid = np.abs(d - (start + end) / 2)
        out.append(int(np.lexsort((mid, gap))[0]))
    return out


class CaptionCache:
    """Decode each distinct embedding once (a greedy decoder is deterministic) and count the real work:
    `calls` batched calls, `decoded` embeddings, `seconds` of decoder wall time."""

    def __init__(self, decode_fn: DecodeFn):
        self.fn, self.memo = decode_fn, {}
        self.calls, self.decoded, self.seconds = 0, 0, 0.0

    def __call__(self, embeddings: np.ndarray) -> list[str]:
        embs = np.asarray(embeddings)  # (N, D)
        keys = [e.tobytes() for e in embs]
        new: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self.memo and k not in new:
                new[k] = i
        todo = list(new.values())
        if todo:
            t0 = time.perf_counter()
            captions = self.fn(embs[todo])
            self.seconds += time.perf_counter() - t0
            if len(captions) != len(todo):
                raise ValueError(f"decode_fn returned {len(captions)} captions for {len(todo)} embeddings")
            self.calls, self.decoded = self.calls + 1, self.decoded + len(todo)
            self.memo.update((keys[i], c) for i, c in zip(todo, captions))
        return [self.memo[k] for k in keys]


@dataclass
class Curve:
    """Quality versus decode rate of one strategy: per setting (knob value) the number of decodes,
    the caption matched to every event (index into `texts`) and the change-to-caption latency of
    every event boundary (NaN where no caption landed inside the new event)."""

    label: str
    params: np.ndarray  # (S,) knob value of each setting (rate, stride, threshold)
    n_decodes: np.ndarray  # (S,)
    duration_s: float
    captions: np.ndarray  # (S, E) int
    texts: list[str]
    latency_s: np.ndarray  # (S, boundaries)
    cider: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,) filled by `analyze`

    @property
    def rates(self) -> np.ndarray:
        return self.n_decodes / self.duration_s


def concat_curves(curves: Sequence[Curve]) -> Curve:
    """One curve over the union of several corpora (e.g. seeds, each with its own model): the
    settings whose knob value occurs in every part, events and boundaries concatenated in order."""
    common = set.intersection(*[{round(float(p), 12) for p in c.params} for c in curves])
    if not common:
        raise ValueError(f"{curves[0].label}: the parts share no setting; build them on the same grid of knob values")
    params = sorted(common)
    texts: dict[str, int] = {}
    n, caps, lat = np.zeros(len(params)), [], []
    for c in curves:
        rows = [{round(float(p), 12): i for i, p in enumerate(c.params)}[p] for p in params]
        remap = np.array([texts.setdefault(t, len(texts)) for t in c.texts], dtype=np.int64)
        n += c.n_decodes[rows]
        caps.append(remap[c.captions[rows]])
        lat.append(c.latency_s[rows])
    return Curve(curves[0].label, np.array(params), n, sum(c.duration_s for c in curves),
                 np.concatenate(caps, axis=1), list(texts), np.concatenate(lat, axis=1))


def change_latency(truth: Sequence[tuple[float, float, object]], points: Sequence[DecodePoint],
                   lag_s: float) -> list[float]:
    """Per boundary (start of every event but the first): seconds from the change to the first
    caption whose content lies inside the new event, counted from when it could be emitted
    (`emitted_t` + `lag_s`, e.g. half a window: an embedding exists once its window has ended)."""
    out = []
    for start, end, _ in truth[1:]:
        inside = [p.emitted_t for p in points if start <= p.t < end and p.emitted_t is not None]
        out.append(min(inside) + lag_s - start if inside else float("nan"))
    return out


def evaluate_curve(label: str, streams: Sequence[VideoStream], settings: Sequence[tuple[float, Sequence]],
                   decode: CaptionCache, lag_s: float = 0.0, chunk: int = 512) -> Curve:
    """Match and decode every setting `(param, [points of video 0, points of video 1, ...])`; the
    matched points of all settings are decoded together, `chunk` embeddings per decoder call."""
    matched, n_decodes, latency = [], [], []
    for _, per_video in settings:
        if len(per_video) != len(streams):
            raise ValueError(f"{label}: a setting has points for {len(per_video)} videos, not {len(streams)}")
        matched += [pts[j].embedding for s, pts in zip(streams, per_video)
                    for j in nearest_decoded(s.truth, [p.t for p in pts])]
        n_decodes.append(sum(len(p) for p in per_video))
        latency.append([x for s, pts in zip(streams, per_video) for x in change_latency(s.truth, pts, lag_s)])
    embs = np.stack(matched)  # (S * E, D): only what the protocol reads is ever decoded
    decoded = [c for i in range(0, len(embs), chunk) for c in decode(embs[i:i + chunk])]
    texts: dict[str, int] = {}
    ids = np.array([texts.setdefault(c, len(texts)) for c in decoded], dtype=np.int64)
    return Curve(label, np.array([p for p, _ in settings], dtype=np.float64), np.array(n_decodes, dtype=np.float64),
                 sum(s.duration for s in streams), ids.reshape(len(settings), -1), list(texts),
                 np.array(latency, dtype=np.float64).reshape(len(settings), -1))


def curve_cider(corpus: Corpus, curves: Sequence[Curve], weights: np.ndarray | None = None) -> list[np.ndarray]:
    """(B, S) corpus CIDEr-D of every setting of every curve, per resampled corpus (`weights` (B, E);
    None: the corpus itself, B = 1). Each distinct (event, caption) pair is scored once."""
    pairs: dict[tuple[int, str], int] = {}
    index = []
    for cv in curves:
        idx = np.empty(cv.captions.shape, dtype=np.int64)  # (S, E) -> pair
        for s, row in enumerate(cv.captions):
            for e, c in enumerate(row):
                idx[s, e] = pairs.setdefault((e, cv.texts[c]), len(pairs))
        index.append(idx)
    w = np.ones((1, len(corpus.refs))) if weights is None else weights
    scores = CorpusCider(corpus.refs).scores(list(pairs), w)  # (B, P)
    total = w.sum(axis=1, keepdims=True)  # (B, 1)
    return [np.stack([(w * scores[:, row]).sum(axis=1) for row in idx], axis=1) / total for idx in index]


def check_against_pycocoevalcap(corpus: Corpus, curve: Curve, cider: np.ndarray) -> None:
    """The vectorised scorer must give pycocoevalcap's number: checked on one setting per curve."""
    s = len(curve.params) // 2
    ref, _ = cider_score(corpus.refs, [curve.texts[i] for i in curve.captions[s]])
    if abs(ref - cider[s]) > 1e-9 * max(1.0, abs(ref)):
        raise AssertionError(f"{curve.label}: vectorised CIDEr {cider[s]} != pycocoevalcap {ref}")


def monotone_fit(rates: np.ndarray, quality: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Isotonic (non-decreasing) fit of quality on log rate, evaluated at log rates `grid`: equal
    rates are averaged first and the fit is linear between them, as `sklearn.isotonic.IsotonicRegression`
    does (clamped to its end values outside the data). `quality` may be (S,) or (B, S) -> (B, G)."""
    x = np.log(rates)
    ux, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    q = np.atleast_2d(quality)  # (B, S)
    mean = np.stack([np.bincount(inverse, weights=row, minlength=len(ux)) for row in q]) / counts  # (B, U)
    w = counts.astype(np.float64)
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):  # thousands of tiny fits
        fits = np.stack([np.interp(grid, ux, isotonic_regression(row, sample_weight=w)) for row in mean])
    return fits[0] if np.ndim(quality) == 1 else fits


def rate_to_reach(grid: np.ndarray, fit: np.ndarray, target: float) -> float:
    """Smallest rate (exp of the log-rate `grid`) at which the monotone `fit` reaches `target`;
    NaN if it never does. Linear interpolation between grid points."""
    ok = fit >= target - 1e-12 * max(1.0, abs(target))
    if not ok.any():
        return float("nan")
    i = int(np.argmax(ok))
    if i == 0 or fit[i] == fit[i - 1]:
        return float(np.exp(grid[i]))
    frac = (target - fit[i - 1]) / (fit[i] - fit[i - 1])
    return float(np.exp(grid[i - 1] + frac * (grid[i] - grid[i - 1])))


@dataclass
class ProtocolConfig:
    """How curves are summarised: quality levels (fractions of the best uniform quality), the
    headline level, bootstrap size and interval, and the log-rate grid of the monotone fits."""

    levels: tuple[float, ...] = (0.9, 0.95, 1.0)
    headline_level: float = 0.95
    n_boot: int = 1000
    ci: float = 0.95
    grid_points: int = 400
    seed: int = 0
    event_bins_s: tuple[float, ...] = (2.0, 3.0, 5.0, 8.0, 13.0)  # edges of the event-length bins (seconds)

    def __post_init__(self) -> None:
        if list(self.event_bins_s) != sorted(set(self.event_bins_s)) or min(self.event_bins_s, default=1) <= 0:
            raise ValueError(f"event_bins_s must be positive, strictly increasing seconds, got {self.event_bins_s}")
        if self.headline_level not in self.levels:
            raise ValueError(f"headline_level {self.headline_level} must be one of levels {self.levels}")
        if self.n_boot < 1 or not 0 < self.ci < 1:
            raise ValueError(f"need n_boot >= 1 and 0 < ci < 1, got {self.n_boot}, {self.ci}")


@dataclass
class Analysis:
    """Point values of every metric, their bootstrap replicates (B,), and the curves they came from."""

    point: dict[str, float]
    replicates: dict[str, np.ndarray]
    curves: dict[str, Curve]
    baseline: list[str]
    selective: list[str]
    grid: np.ndarray  # (G,) log rates of the fits
    fits: dict[str, np.ndarray]  # label -> (G,) point fit; "uniform" = the baseline envelope
    corpus: Corpus | None = None  # the events the curves were scored on


def fit_domain(grid: np.ndarray, curves: Sequence[Curve]) -> np.ndarray:
    """(G,) grid points inside the curves' rate range; at least the one nearest to it (a curve
    whose settings all share one rate still has a value there)."""
    lo = min(float(np.log(c.rates.min())) for c in curves)
    hi = max(float(np.log(c.rates.max())) for c in curves)
    mask = (grid >= lo - 1e-9) & (grid <= hi + 1e-9)
    if not mask.any():
        mask[int(np.argmin(np.abs(grid - (lo + hi) / 2)))] = True
    return mask


def _metrics(grid: np.ndarray, fits: dict[str, np.ndarray], curves: dict[str, Curve], baseline: Sequence[str],
             selective: Sequence[str], levels: Sequence[float]) -> dict[str, float]:
    base = fit_domain(grid, [curves[b] for b in baseline])
    env = np.max([fits[b] for b in baseline], axis=0)  # the better uniform pooling at every rate
    best = float(env[base].max())
    out = {"uniform:best_cider": best}
    for s in selective:
        own = fit_domain(grid, [curves[s]])
        common = own & base
        gain = fits[s][common] - env[common]  # CIDEr, selective minus uniform, over log rate
        out[f"{s}:best_cider"] = float(fits[s][own].max())
        out[f"{s}:area"] = float(gain.mean() * (grid[common][-1] - grid[common][0]) / np.log(10)) if common.any() else 0.0
        for level in levels:
            u = rate_to_reach(grid[base], env[base], level * best)
            r = rate_to_reach(grid[own], fits[s][own], level * best)
            out[f"uniform@{level}:hz"] = u
            out[f"{s}@{level}:hz"] = r
            out[f"{s}@{level}:reduction"] = u / r if r == r else 0.0  # 0: never reached
    return out


def analyze(corpus: Corpus, curves: dict[str, Curve], baseline: Sequence[str], selective: Sequence[str],
            cfg: ProtocolConfig | None = None) -> Analysis:
    """CIDEr of every setting, monotone fits, equal-quality rates and ratios, with bootstrap replicates."""
    cfg = cfg or ProtocolConfig()
    cvs = list(curves.values())
    for cv, q in zip(cvs, curve_cider(corpus, cvs)):
        cv.cider = q[0]
        check_against_pycocoevalcap(corpus, cv, cv.cider)
    rates = np.concatenate([cv.rates for cv in cvs])
    grid = np.linspace(np.log(rates.min()), np.log(rates.max()), cfg.grid_points)
    fits = {cv.label: monotone_fit(cv.rates, cv.cider, grid) for cv in cvs}
    point = _metrics(grid, fits, curves, baseline, selective, cfg.levels)
    fits["uniform"] = np.max([fits[b] for b in baseline], axis=0)
    weights = corpus.bootstrap_weights(cfg.n_boot, np.random.default_rng(cfg.seed))
    reps = {cv.label: monotone_fit(cv.rates, q, grid) for cv, q in zip(cvs, curve_cider(corpus, cvs, weights))}
    rows = [_metrics(grid, {k: v[b] for k, v in reps.items()}, curves, baseline, selective, cfg.levels)
            for b in range(cfg.n_boot)]
    replicates = {k: np.array([row[k] for row in rows]) for k in point}
    return Analysis(point, replicates, curves, list(baseline), list(selective), grid, fits, corpus)


def _interval(values: np.ndarray, ci: float) -> list[float]:
    v = np.where(np.isnan(values), np.inf, values)  # never reached: an unbounded rate
    return [float(np.quantile(v, q, method="inverted_cdf")) for q in ((1 - ci) / 2, (1 + ci) / 2)]


def summarize(analysis: Analysis, cfg: ProtocolConfig, seconds_per_decode: float | None = None) -> dict:
    """JSON-ready summary: every metric with its CI, the curves, and per quality level the decoder cost
    per hour and the change-to-caption latency of every strategy at its equal-quality rate
    (`cost_by_level`, `latency_by_level`; `cost_per_hour` and `latency` are the headline level's), and
    per level the mean per-event CIDEr-D of each event-length bin (`quality_by_event_length`).
    Rates are NaN / intervals inf where a quality is never reached."""
    metrics = {k: {"value": v, "ci": _interval(analysis.replicates[k], cfg.ci)} for k, v in analysis.point.items()}
    cost, latency, by_length = {}, {}, {}
    corpus = analysis.corpus
    scorer = CorpusCider(corpus.refs) if corpus is not None and corpus.event_s is not None else None  # built once
    for lv in cfg.levels:
        cost[str(lv)] = {name: _cost(analysis.point[f"{name}@{lv}:hz"], seconds_per_decode)
                         for name in ["uniform", *analysis.selective]}
        hz = {label: analysis.point[f"{'uniform' if label in analysis.baseline else label}@{lv}:hz"]
              for label in analysis.curves}
        latency[str(lv)] = {label: latency_at(cv, hz[label]) for label, cv in analysis.curves.items()}
        if scorer is not None:
            by_length[str(lv)] = {label: quality_by_event_length(analysis.corpus, cv, hz[label], cfg.event_bins_s,
                                                                 scorer) for label, cv in analysis.curves.items()}
    level = str(cfg.headline_level)
    curves = {label: {"param": cv.params.tolist(), "hz": cv.rates.tolist(), "cider": cv.cider.tolist(),
                      "n_decodes": cv.n_decodes.tolist()} for label, cv in analysis.curves.items()}
    return {"metrics": metrics, "headline_level": cfg.headline_level, "cost_per_hour": cost[level],
            "latency": latency[level], "cost_by_level": cost, "latency_by_level": latency,
            "quality_by_event_length": by_length,
            "seconds_per_decode": seconds_per_decode, "curves": curves, "n_boot": cfg.n_boot, "ci": cfg.ci}


def _cost(hz: float, seconds_per_decode: float | None) -> dict:
    """Decoder calls and decoder seconds per hour of video at `hz` decodes per second."""
    return {"hz": hz, "decoder_calls_per_hour": 3600 * hz,
            "decoder_s_per_hour": None if seconds_per_decode is None else 3600 * hz * seconds_per_decode}


def _nearest_setting(curve: Curve, hz: float) -> int:
    """Index of the setting whose decode rate is nearest `hz` (log scale)."""
    return int(np.argmin(np.abs(np.log(curve.rates) - np.log(hz))))


def latency_at(curve: Curve, hz: float) -> dict:
    """Change-to-caption latency at the setting whose decode rate is nearest `hz` (log scale)."""
    if not hz == hz or not curve.latency_s.size:
        return {"hz": None, "median_s": None, "p90_s": None, "missed": None}
    s = _nearest_setting(curve, hz)
    lat = curve.latency_s[s]
    seen = lat[~np.isnan(lat)]
    return {"hz": float(curve.rates[s]), "median_s": float(np.median(seen)) if seen.size else None,
            "p90_s": float(np.quantile(seen, 0.9)) if seen.size else None, "missed": float(np.isnan(lat).mean())}


def quality_by_event_length(corpus: Corpus, curve: Curve, hz: float, edges_s: Sequence[float],
                            scorer: CorpusCider | None = None) -> dict:
    """Where a strategy gains or loses: at the setting whose rate is nearest `hz` (log scale), the mean
    per-event CIDEr-D of the events in each length bin (`edges_s` inner edges: below the first,
    between, from the last on). The IDF is the whole corpus's, so the bins weighted by their event
    counts average to the corpus score. Bins with no events get None; a strategy that never reaches
    the quality (`hz` NaN) gets None everywhere. `scorer`: a `CorpusCider` of `corpus.refs` to reuse."""
    if corpus.event_s is None or len(corpus.event_s) != curve.captions.shape[1]:
        raise ValueError("quality_by_event_length needs a Corpus with event_s (Corpus.of) for the curve's events")
    edges = [0.0, *edges_s, math.inf]
    bins = np.digitize(corpus.event_s, edges[1:-1])  # (E,) bin of each event
    n = np.bincount(bins, minlength=len(edges) - 1)
    out = {"edges_s": list(edges_s), "n_events": n.tolist(), "hz": None, "cider": [None] * len(n)}
    if not hz == hz:
        return out
    s = _nearest_setting(curve, hz)
    pairs = [(e, curve.texts[c]) for e, c in enumerate(curve.captions[s])]
    per_event = (scorer or CorpusCider(corpus.refs)).scores(pairs)[0]  # (E,)
    out["hz"] = float(curve.rates[s])
    out["cider"] = [float(per_event[bins == b].mean()) if n[b] else None for b in range(len(n))]
    return out


def combine_seeds(analyses: Sequence[Analysis], cfg: ProtocolConfig) -> dict:
    """Mean over seeds of every metric (geometric for rates and ratios, arithmetic otherwise) with a
    two-level bootstrap CI: resample seeds, then one video-bootstrap replicate of each drawn seed."""
    rng = np.random.default_rng(cfg.seed + 1)
    n = len(analyses)
    out = {}
    for key in analyses[0].point:
        geometric = key.endswith((":hz", ":reduction"))
        mean = _geomean if geometric else np.mean
        values = [a.point[key] for a in analyses]
        draws = []
        for _ in range(cfg.n_boot):
            picks = rng.integers(n, size=n)
            draws.append(mean([analyses[i].replicates[key][rng.integers(len(analyses[i].replicates[key]))]
                               for i in picks]))
        out[key] = {"value": float(mean(values)), "ci": _interval(np.array(draws), cfg.ci),
                    "per_seed": [float(v) for v in values]}
    return out


def _geomean(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).any():
        return float("nan")
    with np.errstate(divide="ignore"):
        return float(np.exp(np.log(v).mean()))
