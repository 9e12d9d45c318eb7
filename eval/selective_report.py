"""Markdown tables and the figure of selective-decoding results (`eval.selective_decoding.summarize`
/ `combine_seeds` output, `Analysis`), shared by the demo's report.md and the benchmark's results.md.

Data flow: JSON-ready summaries -> lines of markdown. Every number is printed as
`value [lo, hi]` with its bootstrap interval; a rate that is never reached prints as "n.r." and
its ratio as 0.

    lines = reduction_table({"hard_cut": across}, ["offline/mean", "online"], [0.9, 0.95, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from eval.selective_decoding import Analysis, fit_domain


def fmt(x: float | None, digits: int = 2) -> str:
    """A number; "n.r." (never reached) for NaN, "-" for a value that was not measured (None)."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "n.r."
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def with_ci(entry: dict, digits: int = 2, unit: str = "") -> str:
    """`value [lo, hi]` of a metric entry {"value", "ci": [lo, hi]}."""
    lo, hi = entry["ci"]
    return f"{fmt(entry['value'], digits)}{unit} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def reduction_table(metrics_by_name: dict[str, dict], selective: Sequence[str], levels: Sequence[float],
                    first: str = "kind") -> list[str]:
    """Rows (name, strategy): decode reduction at each quality level, and the area between curves."""
    head = " | ".join(f"x fewer @ {round(100 * lv)} %" for lv in levels)
    lines = [f"| {first} | strategy | best uniform CIDEr | {head} | area (CIDEr x decades) |",
             "|---|---|---|" + "---|" * len(levels) + "---|"]
    for name, m in metrics_by_name.items():
        for s in selective:
            cells = " | ".join(with_ci(m[f"{s}@{lv}:reduction"]) + "x" for lv in levels)
            lines.append(f"| {name} | {s} | {with_ci(m['uniform:best_cider'], 3)} | {cells} | {with_ci(m[f'{s}:area'], 3)} |")
    return lines


def rates_table(metrics_by_name: dict[str, dict], names: Sequence[str], level: float, first: str = "kind") -> list[str]:
    """Rows: decode rate (Hz) each strategy needs for `level` x the best uniform CIDEr."""
    lines = [f"| {first} | " + " | ".join(f"{n} Hz" for n in names) + " |", "|---|" + "---|" * len(names)]
    for name, m in metrics_by_name.items():
        lines.append(f"| {name} | " + " | ".join(with_ci(m[f"{n}@{level}:hz"], 3) for n in names) + " |")
    return lines


def cost_table(summary: dict, levels: Sequence[float] | None = None) -> list[str]:
    """Decoder calls and decoder seconds per hour of video per strategy at each of `levels` (default:
    the headline level); n.r. where the strategy never reaches that quality."""
    lines = ["| quality level | strategy | decodes/s | decoder calls per hour | decoder s per hour |",
             "|---|---|---|---|---|"]
    for level in levels or [summary["headline_level"]]:
        for name, c in summary["cost_by_level"][str(level)].items():
            sec = c["decoder_s_per_hour"]
            lines.append(f"| {round(100 * level)} % | {name} | {fmt(c['hz'], 3)} | {fmt(c['decoder_calls_per_hour'], 0)} | "
                         f"{fmt(sec, 1) if sec is not None else '-'} |")
    return lines


def latency_table(summaries: dict[str, dict], labels: Sequence[str], first: str = "kind",
                  levels: Sequence[float] | None = None) -> list[str]:
    """Change-to-caption latency (median, 90th percentile, share of changes never captioned inside
    the new event) at each strategy's equal-quality operating point, for each of `levels` (default:
    the headline level); n.r. where the strategy never reaches that quality."""
    lines = [f"| {first} | quality level | strategy | decodes/s | median s | p90 s | missed |",
             "|---|---|---|---|---|---|---|"]
    for name, summ in summaries.items():
        for level in levels or [summ["headline_level"]]:
            for label in labels:
                lat = summ["latency_by_level"][str(level)][label]
                head = f"| {name} | {round(100 * level)} % | {label} |"
                if lat["hz"] is None:
                    lines.append(f"{head} n.r. | - | - | - |")
                    continue
                lines.append(f"{head} {fmt(lat['hz'], 3)} | {fmt(lat['median_s'], 1)} | "
                             f"{fmt(lat['p90_s'], 1)} | {fmt(100 * lat['missed'], 0)} % |")
    return lines


def _bin_names(edges: Sequence[float]) -> list[str]:
    inner = [f"{a:g}-{b:g} s" for a, b in zip(edges, edges[1:])]
    return [f"< {edges[0]:g} s", *inner, f">= {edges[-1]:g} s"] if edges else ["all"]


def event_length_table(summaries: dict[str, dict], labels: Sequence[str], level: float, first: str = "kind") -> list[str]:
    """Mean per-event CIDEr-D by event length at each strategy's operating point for `level` x the best
    uniform CIDEr (`quality_by_event_length`), with the number of events per bin; n.r. where the
    strategy never reaches that quality, "-" for an empty bin."""
    some = next(iter(summaries.values()))["quality_by_event_length"][str(level)]
    names = _bin_names(next(iter(some.values()))["edges_s"])
    lines = [f"| {first} | strategy | decodes/s | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for name, summ in summaries.items():
        rows = summ["quality_by_event_length"][str(level)]
        lines.append(f"| {name} | events | | " + " | ".join(str(n) for n in rows[labels[0]]["n_events"]) + " |")
        for label in labels:
            q = rows[label]
            cells = " | ".join(fmt(c) if q["hz"] is not None else "n.r." for c in q["cider"])
            lines.append(f"| {name} | {label} | {fmt(q['hz'], 3) if q['hz'] is not None else 'n.r.'} | {cells} |")
    return lines


def plot_analyses(analyses: dict[str, Analysis], path: str, title: str = "Selective vs uniform decoding") -> None:
    """One panel per analysis (e.g. stream kind): CIDEr of every setting (dots) and the isotonic fits
    (lines) against decodes per second (log x), with the headline-level quality marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(analyses), figsize=(4.2 * len(analyses), 3.6), squeeze=False)
    for ax, (name, a) in zip(axes[0], analyses.items()):
        for i, (label, cv) in enumerate(a.curves.items()):
            ax.scatter(cv.rates, cv.cider, s=6, color=f"C{i}", alpha=0.5)
            own = fit_domain(a.grid, [cv])
            ax.plot(np.exp(a.grid[own]), a.fits[label][own], color=f"C{i}", label=label)
        ax.axhline(a.point["uniform:best_cider"], color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set(title=name, xlabel="decodes per second", ylabel="CIDEr-D")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
