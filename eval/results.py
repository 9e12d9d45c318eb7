"""Versioned evaluation results: results.json + a markdown summary, and side-by-side comparison.

Data flow: an evaluation's metrics + resolved config + model identity + dataset fingerprint ->
`write_results(out_dir, ...)` adds package versions and the git commit
(`jepa_common.io.run_metadata`) and writes `results.json` and `results.md` atomically ->
`vljepa eval compare a.json b.json` loads two files and prints a table of every shared scalar
metric with the difference.

    python -m vljepa.eval_cli compare runs/a/results.json runs/b/results.json
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from jepa_common.io import atomic_write_json, atomic_write_text, file_digest, run_metadata

RESULTS_VERSION = 1
RESULTS_FILE = "results.json"


def fingerprint_arrays(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' shapes, dtypes and bytes (identifies a saved-embedding set)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprint_items(items: list[str]) -> str:
    """sha256 of an ordered list of item descriptions (paths + labels, captions, ...)."""
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def model_identity(path: str | Path | None) -> dict[str, Any]:
    """Model id and revision: the hub commit when recorded, else `local-<hash>` of the folder's
    content: every file's relative path and `file_digest` (config, tokenizers, and the weights,
    hashed whole up to 64 MiB and by size + sampled blocks beyond), so two different models
    never share an id and re-saving the same weights keeps it."""
    if not path:
        return {"id": None, "revision": None}
    p = Path(path)
    if not p.is_dir():
        return {"id": str(path), "revision": None}
    config = p / "config.json"
    revision = json.loads(config.read_text()).get("_commit_hash") if config.is_file() else None
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}:{file_digest(f)}\n".encode())
    return {"id": str(p.resolve()), "revision": revision or f"local-{h.hexdigest()[:16]}"}


def media_signature(path: str | Path) -> str:
    """`path:size:sha256-prefix` of a media file (first, last and 14 sampled 64 KiB blocks for
    files over 1 MiB): a dataset fingerprint changes when a file is replaced, not only renamed."""
    p = Path(path)
    if not p.is_file():
        return f"{path}:missing"
    return f"{path}:{p.stat().st_size}:{file_digest(p, full_limit=2**20, blocks=14)[:16]}"


def write_results(out_dir: str | Path, task: str, metrics: dict, config: dict, model: dict,
                  dataset: dict) -> Path:
    """Write out_dir/results.json and out_dir/results.md; returns the json path."""
    out = Path(out_dir)
    record = {
        "results_version": RESULTS_VERSION,
        "task": task,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": metrics,
        "config": config,
        "model": model,
        "dataset": dataset,
        "meta": run_metadata(),
    }
    path = atomic_write_json(out / RESULTS_FILE, record)
    atomic_write_text(out / "results.md", summary_markdown(record))
    return path


def load_results(path: str | Path) -> dict:
    """Read a results.json (or the folder holding one), checking its version."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a results.json written by `vljepa eval`")
    record = json.loads(path.read_text())
    version = record.get("results_version")
    if version != RESULTS_VERSION:
        raise ValueError(f"{path}: results_version {version!r}, this code reads version {RESULTS_VERSION}")
    return record


def flatten_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metrics -> {"t2v.R@1": 12.5, ...}; lists (confusion matrices) are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def headline_metrics(metrics: dict) -> dict[str, float]:
    """Flattened scalar metrics without the per-class breakdown."""
    return {k: v for k, v in flatten_metrics(metrics).items()
            if not k.startswith("per_class.") and ".per_class." not in k}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def summary_markdown(record: dict) -> str:
    """Short human summary of one results record (headline metrics, no per-class lists)."""
    flat = headline_metrics(record["metrics"])
    lines = [f"# {record['task']} results", "",
             f"- model: `{record['model'].get('id')}` (revision `{record['model'].get('revision')}`)",
             f"- dataset: {record['dataset'].get('name')} (fingerprint `{record['dataset'].get('fingerprint')}`, "
             f"n={record['dataset'].get('n')})",
             f"- git commit: `{record['meta'].get('git_commit')}`, created {record['created']}", "",
             "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in flat.items()]
    return "\n".join(lines) + "\n"


def compare_table(a: dict, b: dict, name_a: str = "a", name_b: str = "b") -> str:
    """Markdown table of every scalar metric of two records, with b - a."""
    fa, fb = headline_metrics(a["metrics"]), headline_metrics(b["metrics"])
    keys = list(fa) + [k for k in fb if k not in fa]
    lines = [f"| metric | {name_a} | {name_b} | {name_b} - {name_a} |", "|---|---:|---:|---:|"]
    for k in keys:
        va, vb = fa.get(k), fb.get(k)
        diff = _fmt(vb - va) if va is not None and vb is not None else ""
        lines.append(f"| {k} | {_fmt(va)} | {_fmt(vb)} | {diff} |")
    notes = []
    if a["task"] != b["task"]:
        notes.append(f"note: different tasks ({a['task']} vs {b['task']})")
    if a["dataset"].get("fingerprint") != b["dataset"].get("fingerprint"):
        notes.append("note: different dataset fingerprints; the numbers are not on the same data")
    return "\n".join(lines + notes) + "\n"
