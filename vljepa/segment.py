"""Where to decode in a stream of predicted embeddings: offline segmentation, the online
trigger, the decode budget and the uniform-stride baseline (VL-JEPA paper, "selective decoding").

Data flow: a sequence of `(t, embedding)` from `vljepa.stream` -> one of the selectors below ->
a list of `DecodePoint(t, embedding, start, end)` -> the Y-decoder turns each into text. Choosing
the points never calls the decoder, so the cost of a run is exactly `len(points)` decodes.

- `segment_offline`: N contiguous segments by Ward-linkage agglomerative clustering where a
  cluster may only merge with its temporal neighbours (scikit-learn with a chain connectivity
  graph), decoded at each segment's midpoint from the mean (the paper's better choice) or the
  midpoint embedding.
- `OnlineTrigger`: causal; moving-average smoothing, then a decode when the cosine distance
  from the last decoded embedding, or the variance inside a local window, passes a threshold,
  with a minimum gap and a running rate budget.
- `uniform_points`: the baseline, one decode per equal-length span.

    points = segment_offline(times, embs, DecodeBudget(rate_hz=0.35))
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.cluster import AgglomerativeClustering


class Representative(enum.Enum):
    """Which embedding stands for a segment when it is decoded."""

    MEAN = "mean"  # mean over the segment (better in the paper)
    MIDPOINT = "midpoint"  # the embedding at the segment's temporal midpoint


class OnlineEmit(enum.Enum):
    """What the online trigger hands to the decoder when it fires."""

    CURRENT = "current"  # the smoothed embedding now: lowest latency, timestamp = now
    SEGMENT_MEAN = "segment_mean"  # mean of the segment that just closed, timestamped at its midpoint


@dataclass
class DecodeBudget:
    """How many decodes a stream may spend: an average rate, a hard cap, or both (None = no limit)."""

    rate_hz: float | None = None
    max_decodes: int | None = None

    def __post_init__(self) -> None:
        if self.rate_hz is not None and self.rate_hz <= 0:
            raise ValueError(f"DecodeBudget.rate_hz must be > 0, got {self.rate_hz}; use None for no rate limit")
        if self.max_decodes is not None and self.max_decodes < 1:
            raise ValueError(f"DecodeBudget.max_decodes must be >= 1, got {self.max_decodes}")

    def count(self, duration_s: float, n_steps: int) -> int:
        """Number of decodes for a stream of `duration_s` seconds with `n_steps` embeddings."""
        n = n_steps
        if self.rate_hz is not None:
            n = min(n, max(1, round(self.rate_hz * duration_s)))
        if self.max_decodes is not None:
            n = min(n, self.max_decodes)
        return max(1, n) if n_steps else 0

    def allows(self, n_done: int, elapsed_s: float) -> bool:
        """Online check: may one more decode happen `elapsed_s` after the stream started?"""
        if self.max_decodes is not None and n_done >= self.max_decodes:
            return False
        # At most one decode up front, then `rate_hz` per second on average at every moment.
        return self.rate_hz is None or n_done < 1 + self.rate_hz * elapsed_s


@dataclass
class DecodePoint:
    """One decode: the time its caption is stamped at, the embedding to decode, its span."""

    t: float
    embedding: np.ndarray  # (D,)
    start: float
    end: float


def _as_arrays(times: Iterable[float], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    times = np.asarray(list(times), dtype=np.float64)  # (T,)
    embs = np.asarray(embeddings, dtype=np.float64)  # (T, D)
    if embs.ndim != 2 or len(times) != len(embs):
        raise ValueError(f"need times (T,) and embeddings (T, D); got {times.shape} and {embs.shape}")
    if len(times) > 1 and np.any(np.diff(times) <= 0):
        raise ValueError("times must be strictly increasing (one embedding per stream step)")
    return times, embs


def _step(times: np.ndarray) -> float:
    return float(np.median(np.diff(times))) if len(times) > 1 else 0.0


def chain_connectivity(n: int) -> sparse.csr_matrix:
    """(n, n) adjacency of a path graph: step i touches only i-1 and i+1."""
    ones = np.ones(max(n - 1, 0))
    return sparse.diags([ones, ones], [-1, 1], shape=(n, n), format="csr")


def contiguous_segments(embeddings: np.ndarray, n_segments: int) -> list[tuple[int, int]]:
    """Split (T, D) into `n_segments` contiguous [start, end) index ranges by Ward clustering
    restricted to temporal neighbours. Embeddings are L2-normalised first (cosine geometry)."""
    embs = np.asarray(embeddings, dtype=np.float64)
    n = len(embs)
    if not 1 <= n_segments <= n:
        raise ValueError(f"n_segments must be in [1, {n}] for a stream of {n} steps, got {n_segments}")
    if n_segments == n:
        return [(i, i + 1) for i in range(n)]
    if n_segments == 1:
        return [(0, n)]
    x = embs / np.maximum(np.linalg.norm(embs, axis=1, keepdims=True), 1e-12)
    labels = AgglomerativeClustering(n_clusters=n_segments, linkage="ward",
                                     connectivity=chain_connectivity(n)).fit_predict(x)
    bounds = [0] + [i for i in range(1, n) if labels[i] != labels[i - 1]] + [n]
    segments = list(zip(bounds[:-1], bounds[1:]))
    # Chain connectivity makes every cluster one contiguous run; anything else is a bug.
    assert len(segments) == n_segments, f"Ward with chain connectivity gave {len(segments)} runs"
    return segments


def _represent(times: np.ndarray, embs: np.ndarray, lo: int, hi: int, step: float,
               rep: Representative) -> DecodePoint:
    start, end = times[lo] - step / 2, times[hi - 1] + step / 2
    mid = (lo + hi - 1) // 2
    emb = embs[lo:hi].mean(axis=0) if rep is Representative.MEAN else embs[mid]
    return DecodePoint(t=float((times[lo] + times[hi - 1]) / 2), embedding=emb, start=float(start), end=float(end))


def _budgeted(times: Iterable[float], embeddings: np.ndarray, budget: DecodeBudget
              ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Arrays, sampling step and the number of decodes the budget allows (0 for an empty stream)."""
    times, embs = _as_arrays(times, embeddings)
    if not len(times):
        return times, embs, 0.0, 0
    step = _step(times)
    return times, embs, step, budget.count(times[-1] - times[0] + step, len(times))


def segment_offline(times: Iterable[float], embeddings: np.ndarray, budget: DecodeBudget,
                    rep: Representative = Representative.MEAN) -> list[DecodePoint]:
    """The paper's offline selective decoding: one decode per Ward segment, at its midpoint."""
    times, embs, step, n = _budgeted(times, embeddings, budget)
    if n == 0:
        return []
    return [_represent(times, embs, lo, hi, step, rep) for lo, hi in contiguous_segments(embs, n)]


def uniform_points(times: Iterable[float], embeddings: np.ndarray, budget: DecodeBudget,
                   rep: Representative = Representative.MIDPOINT) -> list[DecodePoint]:
    """Baseline: N equal-length spans, decoded at their centres (MIDPOINT = the embedding there)."""
    times, embs, step, n = _budgeted(times, embeddings, budget)
    if n == 0:
        return []
    edges = np.linspace(0, len(times), n + 1).round().astype(int)
    return [_represent(times, embs, lo, hi, step, rep) for lo, hi in zip(edges[:-1], edges[1:])]


@dataclass
class TriggerConfig:
    """Online trigger settings (all windows in stream steps, not seconds)."""

    smooth: int = 3  # moving-average length applied to the raw stream
    window: int = 4  # local window whose variance is watched
    cosine_threshold: float | None = 0.15  # 1 - cos(smoothed now, smoothed at last decode); None = off
    variance_threshold: float | None = None  # mean squared distance to the window mean; None = off
    min_gap_s: float = 1.0  # never two decodes closer than this
    emit: OnlineEmit = OnlineEmit.CURRENT

    def __post_init__(self) -> None:
        if self.cosine_threshold is None and self.variance_threshold is None:
            raise ValueError("TriggerConfig needs cosine_threshold or variance_threshold (or both); both are None")
        if self.smooth < 1 or self.window < 2:
            raise ValueError(f"TriggerConfig: smooth must be >= 1 and window >= 2, got {self.smooth}, {self.window}")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)


class OnlineTrigger:
    """Causal decode decisions, one `update(t, embedding)` per stream step, in O(window) memory.

    Returns a `DecodePoint` when a decode should happen, else None; `flush()` at the end of the
    stream closes the open segment (SEGMENT_MEAN only). Never calls a decoder itself."""

    def __init__(self, cfg: TriggerConfig, budget: DecodeBudget | None = None):
        self.cfg, self.budget = cfg, budget or DecodeBudget()
        self._smooth: deque[np.ndarray] = deque(maxlen=cfg.smooth)
        self._window: deque[np.ndarray] = deque(maxlen=cfg.window)
        self._last_emb: np.ndarray | None = None
        self._last_t = -math.inf
        self._t0: float | None = None
        self._seg_sum: np.ndarray | None = None
        self._seg_n, self._seg_start, self._t = 0, 0.0, 0.0
        self.n_decodes = 0

    def scores(self) -> tuple[float, float]:
        """(cosine distance from the last decode, local-window variance) for the current step."""
        s = self._window[-1]
        dist = 1.0 - float(s @ self._last_emb) if self._last_emb is not None else math.inf
        w = np.stack(self._window)  # (W, D)
        var = float(((w - w.mean(axis=0)) ** 2).sum(axis=1).mean()) if len(w) > 1 else 0.0
        return dist, var

    def _fires(self, t: float) -> bool:
        if self._last_emb is None:
            return True
        dist, var = self.scores()
        c = self.cfg
        changed = (c.cosine_threshold is not None and dist > c.cosine_threshold) or (
            c.variance_threshold is not None and var > c.variance_threshold)
        reserve = 1 if c.emit is OnlineEmit.SEGMENT_MEAN else 0  # keep one decode for flush()
        return changed and t - self._last_t >= c.min_gap_s and self.budget.allows(
            self.n_decodes + reserve, t - self._t0)

    def update(self, t: float, embedding: np.ndarray) -> DecodePoint | None:
        emb = _unit(np.asarray(embedding, dtype=np.float64))  # (D,)
        self._t0 = t if self._t0 is None else self._t0
        self._smooth.append(emb)
        s = _unit(np.mean(self._smooth, axis=0))
        self._window.append(s)
        first = self._last_emb is None
        point = None
        if self._fires(t):
            self._last_emb, self._last_t = s, t
            if self.cfg.emit is OnlineEmit.CURRENT:
                point = DecodePoint(t=t, embedding=s, start=t, end=t)
                self.n_decodes += 1
            elif not first:
                point = self._close(t)
            self._seg_sum, self._seg_n, self._seg_start = np.zeros_like(emb), 0, t
        self._seg_sum = emb if self._seg_sum is None else self._seg_sum + emb
        self._seg_n += 1
        self._t = t
        return point

    def _close(self, end: float) -> DecodePoint:
        self.n_decodes += 1
        return DecodePoint(t=(self._seg_start + end) / 2, embedding=self._seg_sum / self._seg_n,
                           start=self._seg_start, end=end)

    def flush(self) -> DecodePoint | None:
        """End of stream: the open segment's decode (SEGMENT_MEAN), else None."""
        if self.cfg.emit is not OnlineEmit.SEGMENT_MEAN or not self._seg_n:
            return None
        point = self._close(self._t)
        self._seg_n = 0
        return point


def online_points(times: Iterable[float], embeddings: np.ndarray, cfg: TriggerConfig,
                  budget: DecodeBudget | None = None) -> list[DecodePoint]:
    """Run the online trigger over a whole recorded stream (for evaluation)."""
    return list(iter_online(zip(times, embeddings), cfg, budget))


def iter_online(stream: Iterable[tuple[float, np.ndarray]], cfg: TriggerConfig,
                budget: DecodeBudget | None = None) -> Iterator[DecodePoint]:
    """Lazily yield decode points from a live `(t, embedding)` stream."""
    trig = OnlineTrigger(cfg, budget)
    for t, emb in stream:
        point = trig.update(float(t), emb)
        if point is not None:
            yield point
    last = trig.flush()
    if last is not None:
        yield last
