"""Markdown rendering of a GPU-check report (the dict `benchmarks/gpu_check.py` writes as JSON).

Data flow: report dict -> a header table (device, driver, versions, commit) -> an overview table
(one line per section: status, seconds, checks passed) -> per section: failed/passed checks,
derived ratios, one table per run of rows that share the same columns, notes -> `MISSING:` lines.

Not run directly; `render_markdown(report)` is called by `benchmarks/gpu_check.py`.
"""

from __future__ import annotations

import json
from typing import Any

HIDDEN = ("traceback",)


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> list[str]:
    """A markdown table over the union of the rows' keys, in first-seen order."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and k not in HIDDEN]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return out


def grouped_tables(rows: list[dict]) -> list[str]:
    """Consecutive rows with the same columns share a table (build rows, step rows, error rows...)."""
    out, group, sig = [], [], None
    for r in rows:
        s = tuple(k for k in r if k not in HIDDEN)
        if group and s != sig:
            out += table(group) + [""]
            group = []
        group.append(r)
        sig = s
    return out + (table(group) + [""] if group else [])


def _header(report: dict) -> list[str]:
    env, mode = report["env"], report["mode"]
    gpu = env.get("gpu") or {}
    pk = env.get("packages", {})
    faiss = pk.get("faiss-gpu") and f"faiss-gpu {pk['faiss-gpu']}" or pk.get("faiss-cpu") and f"faiss-cpu {pk['faiss-cpu']}"
    prepared = (env.get("prepared") or {}).get("git_commit")
    items = [("device", gpu.get("name") or mode["device"]), ("capability", gpu.get("capability")),
             ("memory GiB", gpu.get("memory_gib")), ("driver", gpu.get("driver")),
             ("torch / CUDA", f"{env['torch']} / {env.get('torch_cuda')}"), ("transformers", pk.get("transformers")),
             ("accelerate", pk.get("accelerate")), ("faiss", faiss), ("python", env["python"]),
             ("cpu cores", env.get("cpu_count")), ("git commit", env.get("git_commit") or prepared),
             ("created (UTC)", report["created_utc"]),
             ("mode", f"{'tiny' if mode['tiny'] else 'real'} shapes, sections {'isolated' if mode['isolate'] else 'in-process'}"),
             ("wall seconds", mode["wall_s"])]
    return ["| | |", "|---|---|"] + [f"| {k} | {fmt(v)} |" for k, v in items if v is not None] + [""]


def _section(name: str, r: dict) -> list[str]:
    out = [f"## {name}", "", f"status: **{r['status']}** in {fmt(r.get('seconds', r.get('wall_s')))} s", ""]
    if r.get("error"):
        out += [f"error: `{fmt(r['error'])}`", ""]
    checks = r.get("checks", {})
    if checks:
        out += [f"- {'PASS' if ok else 'FAIL'}: {c}" for c, ok in checks.items()] + [""]
    for key, ratios in (r.get("derived") or {}).items():
        out += [f"- {key}: " + ", ".join(f"{k} " + ", ".join(f"{m} {fmt(x)}x" for m, x in v.items())
                                         for k, v in ratios.items())]
    out += [""] if r.get("derived") else []
    out += grouped_tables(r.get("rows", []))
    out += [f"- note: {n}" for n in r.get("notes", [])]
    out += [f"- MISSING: {m}" for m in r.get("missing", [])]
    return out + [""]


def render_markdown(report: dict) -> str:
    s = report["summary"]
    lines = [f"# GPU check: {(report['env'].get('gpu') or {}).get('name') or report['mode']['device']}", ""]
    lines += _header(report)
    lines += [f"**{'PASS' if s['ok'] else 'FAIL'}**: {s['sections_ok']}/{s['sections']} sections ok, "
              f"{s['checks_passed']}/{s['checks_total']} checks passed, {len(s['errors'])} errors", ""]
    lines += table([{"section": n, "status": r["status"], "seconds": r.get("seconds", r.get("wall_s")),
                     "checks": f"{sum(r.get('checks', {}).values())}/{len(r.get('checks', {}))}"}
                    for n, r in report["sections"].items()]) + [""]
    for name, r in report["sections"].items():
        lines += _section(name, r)
    lines += [f"MISSING: {m}" for m in s["missing"]]
    lines += [f"ERROR: {e}" for e in s["errors"]]
    lines += [f"FAILED CHECK: {c}" for c in s["failed_checks"]]
    return "\n".join(lines).rstrip() + "\n"
