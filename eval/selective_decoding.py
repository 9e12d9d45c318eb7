"""The selective-decoding benchmark: CIDEr versus decodes per second on long videos with
timestamped ground truth, for selective (offline Ward, online trigger) and uniform decoding.

Protocol (VL-JEPA paper, "selective decoding"; DESIGN.md section 1):
  stream of (t, predicted embedding) per video -> a selector picks decode points under a
  target rate -> the decoder turns them into captions -> each ground-truth caption is matched
  to the temporally nearest decoded caption (distance 0 inside the event, else to its nearest
  edge; ties go to the caption nearest the event's midpoint) -> corpus CIDEr over all ground
  truth of all videos at once (`eval.captioning`) -> one (decodes/s, CIDEr) point per rate.
`decode_reduction` then reads, for each selective point, the uniform rate needed for the same
CIDEr (linear interpolation in log rate on uniform's running-max curve); the paper reports
2.85x (selective at 0.35 Hz matches uniform at 1 Hz).

Model-agnostic: streams are arrays, decode points anything with `.t` and `.embedding`, and the
decoder any callable. Choosing the decode points (Ward segments, the online trigger, uniform
stride) is the model side and lives in `vljepa.segment` / `vljepa.selective_eval`.

    rows = vljepa.selective_eval.sweep(streams, decode_fn, rates=[2, 1, 0.5, 0.2], calibration=cal)
    table = decode_reduction(rows, "offline")
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from eval.captioning import cider_score

DecodeFn = Callable[[np.ndarray], list[str]]  # (N, D) embeddings -> N captions


class DecodePoint(Protocol):
    """Anything with the time of a decode and the embedding to decode there (e.g. vljepa.segment's)."""

    t: float
    embedding: np.ndarray  # (D,)


class Strategy(enum.Enum):
    OFFLINE = "offline"  # Ward segments, mean embedding (the paper's selective decoding)
    ONLINE = "online"  # causal trigger, threshold calibrated per rate
    UNIFORM = "uniform"  # equal stride, embedding at the stride centre (the paper's baseline)


@dataclass
class VideoStream:
    """One long video: its embedding stream and ground truth [(start_s, end_s, references)]."""

    times: np.ndarray  # (T,)
    embeddings: np.ndarray  # (T, D)
    truth: list[tuple[float, float, list[str]]]

    @property
    def duration(self) -> float:
        step = float(np.median(np.diff(self.times))) if len(self.times) > 1 else 0.0
        return float(self.times[-1] - self.times[0] + step)


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


def score(streams: Sequence[VideoStream], points: Sequence[Sequence[DecodePoint]],
          decode_fn: DecodeFn) -> dict:
    """Decode every point (one batched call per video), match, and score the whole set at once."""
    refs, cands, n_decodes = [], [], 0
    for stream, pts in zip(streams, points):
        captions = decode_fn(np.stack([p.embedding for p in pts]))  # (N, D) -> N strings
        if len(captions) != len(pts):
            raise ValueError(f"decode_fn returned {len(captions)} captions for {len(pts)} embeddings")
        n_decodes += len(pts)
        for (_, _, r), j in zip(stream.truth, nearest_decoded(stream.truth, [p.t for p in pts])):
            refs.append(r)
            cands.append(captions[j])
    cider, _ = cider_score(refs, cands)
    duration = sum(s.duration for s in streams)
    return {"cider": cider, "n_decodes": n_decodes, "decodes_per_s": n_decodes / duration}


def uniform_rate_for(cider: float, uniform: Sequence[dict]) -> tuple[float, str]:
    """Uniform decode rate that reaches `cider`: (rate, 'exact' | 'lower' | 'upper' bound)."""
    pts = sorted((r["decodes_per_s"], r["cider"]) for r in uniform)
    rates = np.array([p[0] for p in pts])
    best = np.maximum.accumulate([p[1] for p in pts])  # running max: more decodes never hurt
    if cider > best[-1]:
        return float(rates[-1]), "lower"  # uniform never gets there within the sweep
    if cider <= best[0]:
        return float(rates[0]), "upper"
    i = int(np.argmax(best >= cider))  # first uniform point at or above the target
    c0, c1 = best[i - 1], best[i]
    frac = 0.0 if c1 == c0 else (cider - c0) / (c1 - c0)
    return float(math.exp(math.log(rates[i - 1]) + frac * (math.log(rates[i]) - math.log(rates[i - 1])))), "exact"


def decode_reduction(rows: Sequence[dict], strategy: str) -> list[dict]:
    """For each `strategy` row: the uniform rate with equal CIDEr and the ratio (decode reduction)."""
    uniform = [r for r in rows if r["strategy"] == Strategy.UNIFORM.value]
    if len(uniform) < 2:
        raise ValueError("decode_reduction needs a uniform sweep of at least two rates")
    out = []
    for r in (r for r in rows if r["strategy"] == strategy):
        u_rate, bound = uniform_rate_for(r["cider"], uniform)
        out.append({"target_hz": r["target_hz"], "decodes_per_s": r["decodes_per_s"], "cider": r["cider"],
                    "uniform_equal_cider_hz": u_rate, "reduction": u_rate / r["decodes_per_s"], "bound": bound})
    return out


def headline_reduction(table: Sequence[dict], at_hz: float = 0.35) -> dict:
    """The reduction at the selective operating point nearest `at_hz` (the paper's 0.35 Hz)."""
    exact = [r for r in table if r["bound"] == "exact"] or list(table)
    return min(exact, key=lambda r: abs(math.log(r["decodes_per_s"] / at_hz)))


def plot_sweep(rows: Sequence[dict], path: str, title: str = "Selective vs uniform decoding") -> None:
    """CIDEr versus decodes/s (log x), one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        pts = sorted((r["decodes_per_s"], r["cider"]) for r in rows if r["strategy"] == strategy)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=strategy)
    ax.set_xscale("log")
    ax.set_xlabel("decodes per second")
    ax.set_ylabel("CIDEr (nearest decoded caption per GT event)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
