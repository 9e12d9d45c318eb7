"""Where to decode in a stream of predicted embeddings: offline segmentation, the online
trigger, the decode budget and the uniform-stride baseline (VL-JEPA paper, "selective decoding").

Data flow: a sequence of `(t, embedding)` from `vljepa.stream` -> one of the selectors below ->
a list of `DecodePoint(t, embedding, start, end, emitted_t)` -> the Y-decoder turns each into
text. Choosing the points never calls the decoder, so the cost of a run is exactly `len(points)`.

- `segment_offline`: N contiguous segments by Ward-linkage agglomerative clustering where a
  cluster may only merge with its temporal neighbours (scikit-learn's `ward_tree` with a chain
  connectivity graph), decoded at each segment's midpoint from the mean (the paper's better
  choice) or the midpoint embedding. `WardTree` builds the merge tree once and cuts it at any N.
- `OnlineTrigger`: causal. A change is *detected* when the cosine distance from the last decoded
  embedding (or the variance of a local window) passes a threshold; it is *decoded* only once
  the stream has settled (the last `settle_steps` step-to-step distances are all below
  `settle_tol`) and the settled embedding still differs from the last decoded one by more than
  the threshold (hysteresis: a passing distractor is never decoded); a change that never settles
  (an event shorter than the window, a slow drift) is decoded after `max_wait_s`, from its least
  mixed moment so far. A minimum gap and a running rate budget hold.
  The decoded embedding is the mean of the settled steps, never a half-mixed transition window.
- `uniform_points` / `stride_points`: the baseline, one decode per equal-length span (a budget)
  or every `stride` steps, pooled like the selective strategies (segment mean or midpoint embedding).

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
from sklearn.cluster import ward_tree


class Representative(enum.Enum):
    """Which embedding stands for a segment when it is decoded (the same choices for every strategy)."""

    MEAN = "mean"  # mean over the segment (better in the paper)
    MIDPOINT = "midpoint"  # the embedding at the segment's temporal midpoint


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
    """One decode: the time its caption is stamped at (content time), the embedding to decode, the
    span it stands for, and `emitted_t`, the stream time at which the decision could be made (the
    step that fired, for the online trigger; the end of the stream for offline segmentation)."""

    t: float
    embedding: np.ndarray  # (D,)
    start: float
    end: float
    emitted_t: float | None = None


def _as_arrays(times: Iterable[float], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    times = np.asarray(list(times), dtype=np.float64)  # (T,)
    embs = np.asarray(embeddings, dtype=np.float64)  # (T, D)
    if embs.ndim != 2 or len(times) != len(embs):
        raise ValueError(f"need times (T,) and embeddings (T, D); got {times.shape} and {embs.shape}")
    if len(times) > 1 and np.any(np.diff(times) <= 0):
        raise ValueError("times must be strictly increasing (one embedding per stream step)")
    if not np.isfinite(embs).all():
        raise ValueError("embeddings contain NaN or inf (a diverged model or a broken input); need finite ones")
    return times, embs


def _step(times: np.ndarray) -> float:
    return float(np.median(np.diff(times))) if len(times) > 1 else 0.0


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def chain_connectivity(n: int) -> sparse.csr_matrix:
    """(n, n) adjacency of a path graph: step i touches only i-1 and i+1."""
    ones = np.ones(max(n - 1, 0))
    return sparse.diags([ones, ones], [-1, 1], shape=(n, n), format="csr")


class WardTree:
    """Every contiguous Ward segmentation of one stream from ONE clustering.

    Ward's merges are greedy, so the segmentation into N clusters is the first T - N merges of the
    full tree; with chain connectivity each merge joins two neighbouring runs, i.e. removes one
    boundary. `removed_at[b]` is the merge that removes the boundary before step b, so cutting
    at N segments keeps the boundaries removed at merge T - N or later: O(T) per cut."""

    def __init__(self, embeddings: np.ndarray):
        x = _unit_rows(np.asarray(embeddings, dtype=np.float64))  # (T, D), cosine geometry
        self.n = n = len(x)
        self.removed_at = np.full(n, n, dtype=np.int64)  # entry 0 unused
        if n < 2:
            return
        children = ward_tree(x, connectivity=chain_connectivity(n))[0]  # (T - 1, 2)
        span = {i: (i, i + 1) for i in range(n)}
        for step, (a, b) in enumerate(children):
            (a0, a1), (b0, b1) = span.pop(a), span.pop(b)
            if a1 != b0 and b1 != a0:  # chain connectivity makes every cluster one run
                raise AssertionError(f"Ward merged non-adjacent runs {(a0, a1)} and {(b0, b1)}")
            self.removed_at[max(a0, b0)] = step
            span[n + step] = (min(a0, b0), max(a1, b1))

    def segments(self, n_segments: int) -> list[tuple[int, int]]:
        """`n_segments` contiguous [start, end) index ranges."""
        if not 1 <= n_segments <= self.n:
            raise ValueError(f"n_segments must be in [1, {self.n}] for a stream of {self.n} steps, got {n_segments}")
        bounds = [0, *np.flatnonzero(self.removed_at[1:] >= self.n - n_segments) + 1, self.n]
        return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def contiguous_segments(embeddings: np.ndarray, n_segments: int) -> list[tuple[int, int]]:
    """Split (T, D) into `n_segments` contiguous [start, end) index ranges by Ward clustering
    restricted to temporal neighbours. Embeddings are L2-normalised first (cosine geometry)."""
    return WardTree(embeddings).segments(n_segments)


def represent(times: np.ndarray, embs: np.ndarray, lo: int, hi: int, rep: Representative,
              emitted_t: float | None = None, half: float | None = None) -> DecodePoint:
    """The decode point of steps [lo, hi): stamped at the span's centre, embedding per `rep`
    (`half`: half the stream step, computed from `times` when not given)."""
    half = _step(times) / 2 if half is None else half
    emb = embs[lo:hi].mean(axis=0) if rep is Representative.MEAN else embs[(lo + hi - 1) // 2]
    return DecodePoint(t=float((times[lo] + times[hi - 1]) / 2), embedding=emb, start=float(times[lo] - half),
                       end=float(times[hi - 1] + half), emitted_t=emitted_t)


def _budgeted(times: Iterable[float], embeddings: np.ndarray, budget: DecodeBudget
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """Arrays and the number of decodes the budget allows (0 for an empty stream)."""
    times, embs = _as_arrays(times, embeddings)
    if not len(times):
        return times, embs, 0
    return times, embs, budget.count(times[-1] - times[0] + _step(times), len(times))


def segment_offline(times: Iterable[float], embeddings: np.ndarray, budget: DecodeBudget,
                    rep: Representative = Representative.MEAN, tree: WardTree | None = None) -> list[DecodePoint]:
    """The paper's offline selective decoding: one decode per Ward segment, at its midpoint.
    Pass the stream's `tree` to cut a prebuilt `WardTree` (sweeping many budgets)."""
    times, embs, n = _budgeted(times, embeddings, budget)
    if n == 0:
        return []
    if tree is not None and tree.n != len(embs):
        raise ValueError(f"tree was built on a stream of {tree.n} steps, not this one of {len(embs)}")
    tree, half = tree or WardTree(embs), _step(times) / 2
    return [represent(times, embs, lo, hi, rep, float(times[-1]), half) for lo, hi in tree.segments(n)]


def uniform_points(times: Iterable[float], embeddings: np.ndarray, budget: DecodeBudget,
                   rep: Representative = Representative.MEAN) -> list[DecodePoint]:
    """Baseline: N equal-length spans decoded at their centres, pooled by `rep` like the selective
    strategies. A live uniform decoder can decide at the span's end, so `emitted_t` is that step."""
    times, embs, n = _budgeted(times, embeddings, budget)
    if n == 0:
        return []
    edges = np.linspace(0, len(times), n + 1).round().astype(int)
    return _spans(times, embs, edges, rep)


def stride_points(times: Iterable[float], embeddings: np.ndarray, stride: int,
                  rep: Representative = Representative.MEAN) -> list[DecodePoint]:
    """Baseline at a fixed stride: one decode per `stride` steps (the last span may be shorter)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1 stream step, got {stride}")
    times, embs = _as_arrays(times, embeddings)
    return _spans(times, embs, np.array([*range(0, len(times), stride), len(times)]), rep) if len(times) else []


def _spans(times: np.ndarray, embs: np.ndarray, edges: np.ndarray, rep: Representative) -> list[DecodePoint]:
    mid, half = rep is Representative.MIDPOINT, _step(times) / 2
    return [represent(times, embs, lo, hi, rep, float(times[(lo + hi - 1) // 2 if mid else hi - 1]), half)
            for lo, hi in zip(edges[:-1], edges[1:])]


class Reference(str, enum.Enum):
    """What the online trigger compares the stream against to detect a change."""

    DECODED = "decoded"  # the embedding decoded last (a few settled steps)
    SEGMENT_MEAN = "segment_mean"  # the running mean of every step since the last decode: steadier under noise


@dataclass
class TriggerConfig:
    """Online trigger settings (window lengths in stream steps, times in seconds)."""

    cosine_threshold: float | None = 0.15  # detect: 1 - cos(smoothed now, last decoded) > this; None = off
    variance_threshold: float | None = None  # detect: mean squared distance to the window mean; None = off
    smooth: int = 1  # moving-average length applied to the raw stream before detection
    window: int = 4  # local window whose variance is watched
    settle_steps: int = 1  # settled = the last `settle_steps` step-to-step distances are all small ...
    settle_tol: float | None = None  # ... below this cosine distance (None: half the cosine threshold)
    max_wait_s: float = 3.0  # a change that never settles (short event, slow drift): decode its least
    #                          mixed moment after this long
    min_gap_s: float = 1.0  # never two decodes closer than this
    reference: Reference = Reference.DECODED
    pool_steps: int = 8  # > settle_steps + 1: once settled, wait for this many steps of the new segment and
    #                     decode their mean (less noise, more latency); a new change ends the pool early

    def __post_init__(self) -> None:
        self.reference = Reference(self.reference)
        if self.cosine_threshold is None and self.variance_threshold is None:
            raise ValueError("TriggerConfig needs cosine_threshold or variance_threshold (or both); both are None")
        if self.smooth < 1 or self.window < 2 or self.settle_steps < 1 or self.pool_steps < 0:
            raise ValueError(f"TriggerConfig: smooth >= 1, window >= 2, settle_steps >= 1 and pool_steps >= 0 "
                             f"needed, got {self.smooth}, {self.window}, {self.settle_steps}, {self.pool_steps}")
        if self.settle_tol is None and self.cosine_threshold is None:
            raise ValueError("TriggerConfig: with cosine_threshold=None, give settle_tol (a cosine distance)")

    @property
    def tolerance(self) -> float:
        return self.settle_tol if self.settle_tol is not None else 0.5 * self.cosine_threshold


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)


def _mean_unit(steps: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Unit mean of the embeddings of `(t, embedding)` steps."""
    return _unit(np.mean([e for _, e in steps], axis=0))


def _cos_dist(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 - float(_unit(a) @ _unit(b))


class OnlineTrigger:
    """Causal decode decisions, one `update(t, embedding)` per stream step, in O(window) memory.

    Returns a `DecodePoint` when a decode should happen, else None; `flush()` at the end of the
    stream decodes a change still pending. Never calls a decoder. A
    detected change stays *pending* until it has settled (or waited `max_wait_s`) and the gap and
    the budget allow a decode; the point then carries the settled embedding (with `pool_steps`, the
    mean of that many steps of the new segment, or fewer if another change comes first), stamped at
    the middle of those steps, with `emitted_t` = the step that fired."""

    def __init__(self, cfg: TriggerConfig, budget: DecodeBudget | None = None):
        self.cfg, self.budget = cfg, budget or DecodeBudget()
        self._raw: deque[np.ndarray] = deque(maxlen=cfg.smooth)
        self._recent: deque[tuple[float, np.ndarray]] = deque(maxlen=max(cfg.window, cfg.settle_steps + 1))
        self._ref: np.ndarray | None = None  # the reference (`cfg.reference`; unit)
        self._seg: np.ndarray | None = None  # sum of the (unit) steps since the last decode
        self._last_t = -math.inf
        self._t0: float | None = None
        self._pending_since: float | None = None
        self._best: tuple[float, list] = (math.inf, [])  # (spread, steps) least mixed since pending
        self._pool: list[tuple[float, np.ndarray]] | None = None  # settled steps waiting to be decoded together
        self.n_decodes = 0

    def _detects(self, s: np.ndarray) -> bool:
        c = self.cfg
        if self._ref is None:
            return True
        if c.cosine_threshold is not None and 1.0 - float(s @ self._ref) > c.cosine_threshold:  # both unit
            return True
        if c.variance_threshold is None:
            return False
        w = np.stack([e for _, e in self._recent][-c.window:])  # (W, D)
        return len(w) > 1 and float(((w - w.mean(axis=0)) ** 2).sum(axis=1).mean()) > c.variance_threshold

    def _latest(self) -> list[tuple[float, np.ndarray]]:
        return list(self._recent)[-(self.cfg.settle_steps + 1):]

    def _spread(self, steps: list[tuple[float, np.ndarray]]) -> float:
        """Largest step-to-step cosine distance among the latest steps (inf until there are enough)."""
        if len(steps) <= self.cfg.settle_steps:
            return math.inf
        return max(1.0 - float(a @ b) for (_, a), (_, b) in zip(steps, steps[1:]))  # unit vectors

    def update(self, t: float, embedding: np.ndarray) -> DecodePoint | None:
        raw = np.asarray(embedding, dtype=np.float64)  # (D,)
        if not np.isfinite(raw).all():
            raise ValueError(f"non-finite embedding (NaN or inf) at t={t}: a diverged model or a broken input")
        self._t0 = t if self._t0 is None else self._t0
        self._raw.append(_unit(raw))
        s = _unit(np.mean(self._raw, axis=0))
        self._recent.append((t, s))
        if self._pool is not None:
            return self._pool_step(t, s)
        if self._pending_since is None and self._detects(s):
            self._pending_since, self._best = t, (math.inf, [])
        if self._pending_since is None:
            self._follow(s)
            return None
        steps = self._latest()
        spread = self._spread(steps)
        if spread < self._best[0]:
            self._best = (spread, steps)  # the least mixed moment since the change began
        if spread <= self.cfg.tolerance:
            return self._settled(t, steps)
        if t - self._pending_since >= self.cfg.max_wait_s:  # never settled (a short event, a slow drift)
            return self._fire(t, self._best[1] or steps)
        return None  # mid-transition: decoding now would describe a mixture

    def _follow(self, s: np.ndarray) -> None:
        """A step inside the current segment: with `Reference.SEGMENT_MEAN` the reference becomes the
        running mean of the segment's steps so far."""
        if self._seg is not None:
            self._seg = self._seg + s
            self._ref = _unit(self._seg)

    def _settled(self, t: float, steps: list[tuple[float, np.ndarray]]) -> DecodePoint | None:
        """The change has settled: decode now, or (`pool_steps`) start pooling the new segment's steps."""
        if len(steps) >= self.cfg.pool_steps:
            return self._fire(t, steps)
        if self._near_reference(_mean_unit(steps)):
            self._pending_since = None  # hysteresis, as in `_fire`
            return None
        self._pool, self._pending_since = list(steps), None
        return None

    def _pool_step(self, t: float, s: np.ndarray) -> DecodePoint | None:
        """One step while pooling: a step that leaves the pool's mean ends it (decoded now, and the new
        change becomes pending); otherwise it joins, and a full pool is decoded (or waits for the gap and
        the budget)."""
        pool = self._pool
        if 1.0 - float(s @ _mean_unit(pool)) > self._change_distance():
            self._pool = None
            point = self._fire(t, pool)  # refused by the gap or the budget: that segment goes uncaptioned
            self._pending_since, self._best = t, (math.inf, [])
            return point
        pool.append((t, s))
        if len(pool) < self.cfg.pool_steps:
            return None
        del pool[:-self.cfg.pool_steps]  # waiting for the gap or the budget: keep the latest steps only
        if self._near_reference(_mean_unit(pool)):
            self._pool = None  # hysteresis, as in `_fire`
            return None
        point = self._fire(t, pool)
        if point is not None:
            self._pool = None
        return point

    def _change_distance(self) -> float:
        """Cosine distance from the pool's mean that counts as a new change: the detection threshold
        (variance-only detection: twice the settle tolerance)."""
        c = self.cfg
        return c.cosine_threshold if c.cosine_threshold is not None else 2.0 * c.tolerance

    def _near_reference(self, emb: np.ndarray) -> bool:
        c = self.cfg
        return self._ref is not None and c.cosine_threshold is not None and _cos_dist(emb, self._ref) <= c.cosine_threshold

    def flush(self) -> DecodePoint | None:
        """End of stream: decode a change that is still pending (its least mixed moment), or a pool
        still filling, if the gap and the budget allow. Without this a stream shorter than the settle
        time gets no caption."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            return self._fire(pool[-1][0], pool)
        if self._pending_since is None:
            return None
        return self._fire(self._recent[-1][0], self._best[1] or self._latest())

    def _fire(self, t: float, steps: list[tuple[float, np.ndarray]]) -> DecodePoint | None:
        emb = _mean_unit(steps)
        c = self.cfg
        if self._near_reference(emb):
            self._pending_since = None  # hysteresis: the stream settled back near what was decoded last
            return None
        if t - self._last_t < c.min_gap_s or not self.budget.allows(self.n_decodes, t - self._t0):
            return None  # stays pending until the gap and the budget allow it
        self._ref, self._last_t, self._pending_since = emb, t, None
        self._seg = emb * len(steps) if self.cfg.reference is Reference.SEGMENT_MEAN else None
        self.n_decodes += 1
        return DecodePoint(t=(steps[0][0] + steps[-1][0]) / 2, embedding=emb, start=steps[0][0], end=steps[-1][0],
                           emitted_t=t)


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
