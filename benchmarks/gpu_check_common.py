"""Shared pieces of the GPU check (`benchmarks/gpu_check.py`): the run context, timing, results.

Data flow: the driver builds one `Ctx` per section (device, tiny or real shapes, the section's
deadline, where the MiniLM config/tokenizer live) -> a section function fills a `Section`
(table rows, pass/fail checks, notes, missing pieces) -> `Section.to_dict()` is what the driver
writes into the JSON report. `time_calls` is the one timer every section uses: warm-up calls,
then timed calls, each fenced by a device synchronisation, median and spread reported.

Not run directly; see `benchmarks/gpu_check.py`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

TEXTS = [  # short query / caption strings for the VL-JEPA sections (targets must differ: InfoNCE)
    "what happens in this video?", "describe the clip", "a person opens a door and walks in",
    "a red car turns left at the crossing", "two dogs run across a field", "someone pours water into a glass",
    "a child rides a bicycle down the street", "the camera pans over a city at night",
    "a man plays the guitar on a stage", "leaves fall from a tree in the wind",
]


class TimeBoxExceeded(RuntimeError):
    """A section ran past its deadline before it could time even one call of an arm."""


@dataclass
class Ctx:
    """Where and how a section runs."""

    device: torch.device
    tiny: bool  # CPU-sized shapes (tests, --tiny) instead of the real model shapes
    deadline: float  # time.monotonic() value after which no new arm starts
    work_dir: Path  # scratch space (checkpoints of the train-loop section)
    minilm_dir: str | None = None  # all-MiniLM-L6-v2 config + tokenizer files (weights not needed)
    seed: int = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self, bf16: bool = True) -> contextlib.AbstractContextManager:
        """bf16 autocast on this device (fp32 master weights), or a no-op for fp32 arms."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            gc.collect()  # models of a previous arm may sit in reference cycles
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory(self) -> dict[str, Any]:
        """Peak memory since `reset_peak`: CUDA max allocated, or (CPU) the process's peak RSS."""
        if self.device.type == "cuda":
            return {"peak_mem_gib": torch.cuda.max_memory_allocated(self.device) / 2**30,
                    "mem_kind": "cuda_max_allocated"}
        return {"peak_mem_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                "mem_kind": "cpu_process_max_rss"}


@dataclass
class Section:
    """What one section reports: table rows, named pass/fail checks, notes and missing pieces."""

    rows: list[dict] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    derived: dict = field(default_factory=dict)  # numbers computed from the rows (ratios)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "checks": self.checks, "derived": self.derived, "notes": self.notes,
                "missing": self.missing}

    def arm(self, label: dict, fn: Callable[[], dict], ctx: Ctx | None = None) -> dict:
        """Run one arm; its row is `label` + what `fn` returns, or `label` + the error (the section goes
        on). With a context whose deadline has passed, the arm is recorded as skipped instead."""
        if ctx is not None and ctx.left() <= 0:
            row = {**label, "skipped": "time box reached before this arm"}
        else:
            try:
                row = {**label, **fn()}
            except Exception as e:  # noqa: BLE001  (one failing arm must not stop the others)
                row = {**label, **_error(e)}
        self.add(row)
        return row

    def add(self, row: dict) -> None:
        """Append a row computed elsewhere (and log it like an arm's)."""
        self.rows.append(row)
        _progress(row)

    def guard(self, label: dict, fn: Callable[[], None]) -> None:
        """Run `fn`, which adds its own rows; if it raises, add `label` + the error as a row instead."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            self.add({**label, **_error(e)})


def _progress(row: dict) -> None:
    """One line per finished arm in the section's log (where a later crash or hang happened)."""
    shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items() if k != "traceback"}
    print("[arm] " + json.dumps(shown, default=str)[:400], flush=True)


def _error(e: Exception) -> dict:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"error": f"{type(e).__name__}: {e}"[:500], "traceback": _tail(traceback.format_exc())}


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def time_calls(fn: Callable[[], Any], ctx: Ctx, warmup: int, repeats: int) -> dict[str, float]:
    """Median / min / max milliseconds of `repeats` calls after `warmup` calls, each fenced by a device
    sync. Stops early at the deadline once one call has been timed (`n` says how many were)."""
    for _ in range(warmup):
        fn()
    ctx.sync()
    times: list[float] = []
    for _ in range(repeats):
        if times and ctx.left() <= 0:
            break
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        times.append(time.perf_counter() - t0)
    ms = [t * 1000 for t in times]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "n": len(ms)}


def rel_diff(a: float, b: float) -> float:
    """|a - b| / max(|a|, 1e-12)."""
    return abs(a - b) / max(abs(a), 1e-12)


def nonfinite_paths(obj: Any, path: str = "") -> list[str]:
    """Paths of every NaN / inf number inside a JSON-like object (the report must hold none)."""
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [path]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in nonfinite_paths(v, f"{path}.{k}")]
    if isinstance(obj, list | tuple):
        return [p for i, v in enumerate(obj) for p in nonfinite_paths(v, f"{path}[{i}]")]
    return []


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """No TF32 in matmuls or convolutions (the fp32 parity arm compares against a CPU reference)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@contextlib.contextmanager
def own_accelerate_state() -> Iterator[None]:
    """Accelerate keeps one mixed-precision state per process and refuses a second setting; a training
    loop run in-process (--no-isolate, tests) gets a fresh one and leaves none behind."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    try:
        yield
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()
