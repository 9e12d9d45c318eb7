"""Multi-seed comparison of training arms (e.g. plain finetuning vs LLM-JEPA), paired by seed.

Data flow: a training recipe + one list of `--set` overrides per ARM + seeds (the paper's:
82 23 37 84 4) -> for each (arm, seed): `llm_jepa.train.train` into `<out>/<arm>/seed<s>/`
then `llm_jepa.evaluate.evaluate` of its `final/` checkpoint (skipped when that eval's
summary.json already exists, so an interrupted sweep resumes) -> metrics per arm and seed
-> mean ± std (sample std, ddof=1) and a paired one-tailed t-test of each arm against the
baseline arm (`scipy.stats.ttest_rel`, H1: arm > baseline, pairs = same seed) ->
`<out>/multiseed.json` + `<out>/table.md`.

    python -m llm_jepa.multiseed --config recipes/llm_jepa/tiny_cpu.yaml \\
        --arm sft jepa.lam=0 --arm jepa jepa.lam=1 --seeds 82 23 37 \\
        --eval task=synth --eval data=synth_test --out runs/multiseed/synth
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata

PAPER_SEEDS = (82, 23, 37, 84, 4)

Runner = Callable[[list[str], list[str], Path], dict[str, Any]]


@dataclass
class Arm:
    name: str
    overrides: list[str] = field(default_factory=list)  # training `a.b=c` overrides of this arm


def train_and_eval(recipe: str | None, train_overrides: list[str], eval_overrides: list[str], run_dir: Path
                   ) -> dict[str, Any]:
    """Train one (arm, seed) and evaluate it; reuses an existing evaluation of the same folder."""
    summary_path = run_dir / "eval" / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    from jepa_common.config import load_config
    from llm_jepa.config import load_llm_jepa_config
    from llm_jepa.evaluate import EvalConfig, evaluate
    from llm_jepa.train import train

    cfg = load_llm_jepa_config(recipe, [*train_overrides, f"train.output_dir={run_dir / 'train'}"])
    result = train(cfg)
    ecfg = load_config(EvalConfig, None, [*eval_overrides, f"checkpoint={result['output']}",
                                          f"out_dir={run_dir / 'eval'}"])
    summary = evaluate(ecfg)
    summary["train_final"] = {k: v for k, v in result.items() if k != "output"}
    atomic_write_json(summary_path, summary)
    return summary


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")


def paired_one_tailed(baseline: list[float], arm: list[float]) -> dict[str, float]:
    """Paired t-test by seed, H1: arm > baseline. NaN p-value when all differences are equal."""
    from scipy.stats import ttest_rel

    if len(baseline) != len(arm) or len(arm) < 2:
        raise ValueError(f"a paired test needs the same >= 2 seeds in both arms, got {len(baseline)} and {len(arm)}")
    res = ttest_rel(arm, baseline, alternative="greater")
    diff = np.asarray(arm, dtype=float) - np.asarray(baseline, dtype=float)
    return {"t": float(res.statistic), "p_one_tailed": float(res.pvalue), "mean_diff": float(diff.mean()),
            "n_pairs": len(arm)}


def paired_difference(baseline: list[float], arm: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean paired difference arm - baseline with its t confidence interval and two-sided p ("does the arm
    match the baseline?": a CI that straddles 0 and how wide it is)."""
    from scipy.stats import t as t_dist
    from scipy.stats import ttest_rel

    diff = np.asarray(arm, dtype=float) - np.asarray(baseline, dtype=float)
    if len(diff) < 2:
        raise ValueError(f"a paired difference needs >= 2 seeds, got {len(diff)}")
    half = float(t_dist.ppf(0.5 + confidence / 2, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"mean_diff": float(diff.mean()), "ci_low": float(diff.mean()) - half, "ci_high": float(diff.mean()) + half,
            "p_two_sided": float(ttest_rel(arm, baseline).pvalue), "n_pairs": len(diff)}


def compare(scores: dict[str, dict[int, float]], baseline: str) -> dict[str, Any]:
    """Per arm: seeds, values, mean, std, and (for non-baseline arms) the paired test vs baseline."""
    if baseline not in scores:
        raise ValueError(f"baseline arm {baseline!r} is not among the arms {sorted(scores)}")
    out: dict[str, Any] = {}
    for name, by_seed in scores.items():
        seeds = sorted(by_seed)
        mean, std = mean_std([by_seed[s] for s in seeds])
        out[name] = {"seeds": seeds, "values": [by_seed[s] for s in seeds], "mean": mean, "std": std}
        if name != baseline:
            common = [s for s in seeds if s in scores[baseline]]
            out[name]["vs_baseline"] = paired_one_tailed([scores[baseline][s] for s in common],
                                                         [by_seed[s] for s in common])
    return out


def markdown_table(stats: dict[str, Any], metric: str, baseline: str, scale: float = 1.0) -> str:
    """| arm | metric mean ± std | per-seed | Δ vs baseline | p (one-tailed, paired) |; values times
    `scale` (task accuracies from `llm-jepa eval` are already percentages)."""
    rows = [f"| arm | {metric} (mean ± std) | per seed | Δ vs {baseline} | p (paired, one-tailed) |",
            "|---|---|---|---|---|"]
    for name, s in stats.items():
        per_seed = ", ".join(f"{v * scale:.1f}" for v in s["values"])
        std = "n/a" if math.isnan(s["std"]) else f"{s['std'] * scale:.1f}"
        test = s.get("vs_baseline")
        delta = "—" if test is None else f"{test['mean_diff'] * scale:+.1f}"
        p = "—" if test is None else ("n/a" if math.isnan(test["p_one_tailed"]) else f"{test['p_one_tailed']:.3f}")
        rows.append(f"| {name} | {s['mean'] * scale:.1f} ± {std} | {per_seed} | {delta} | {p} |")
    return "\n".join(rows) + "\n"


def run_multiseed(recipe: str | None, arms: list[Arm], seeds: list[int], eval_overrides: list[str],
                  out: Path, metric: str = "accuracy", runner: Runner | None = None) -> dict[str, Any]:
    """Every arm x seed (baseline = first arm) -> multiseed.json + table.md in `out`; returns the stats."""
    if len({a.name for a in arms}) != len(arms) or not arms:
        raise ValueError(f"arm names must be unique and non-empty: {[a.name for a in arms]}")
    run = runner or (lambda tr, ev, d: train_and_eval(recipe, tr, ev, d))
    scores: dict[str, dict[int, float]] = {}
    summaries: dict[str, dict[int, dict]] = {}
    for arm in arms:
        for seed in seeds:
            summary = run([*arm.overrides, f"train.seed={seed}"], eval_overrides, out / arm.name / f"seed{seed}")
            if metric not in summary["metrics"]:
                raise KeyError(f"metric {metric!r} not in the evaluation; have {sorted(summary['metrics'])}")
            scores.setdefault(arm.name, {})[seed] = float(summary["metrics"][metric])
            summaries.setdefault(arm.name, {})[seed] = summary
    stats = compare(scores, arms[0].name)
    table = markdown_table(stats, metric, arms[0].name)
    atomic_write_json(out / "multiseed.json", {"recipe": recipe, "arms": [vars(a) for a in arms], "seeds": seeds,
                                               "eval_overrides": eval_overrides, "metric": metric,
                                               "stats": stats, **run_metadata()})
    atomic_write_text(out / "table.md", table)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_jepa.multiseed", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="training recipe (YAML)")
    parser.add_argument("--arm", nargs="+", action="append", required=True, metavar=("NAME", "A.B=C"),
                        help="an arm: its name then its training overrides; the first arm is the baseline")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(PAPER_SEEDS))
    parser.add_argument("--eval", dest="eval_overrides", action="append", default=[], metavar="a.b=c",
                        help="EvalConfig override (task=..., data=..., limit=...)")
    parser.add_argument("--metric", default="accuracy", help="summary metric compared (default: the task's primary)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    arms = [Arm(a[0], list(a[1:])) for a in args.arm]
    run_multiseed(args.config, arms, args.seeds, args.eval_overrides, Path(args.out), args.metric)
    print((Path(args.out) / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
