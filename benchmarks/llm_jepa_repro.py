"""Small-scale reproduction of the LLM-JEPA NL-RX-SYNTH claim: arms x seeds -> train -> test -> table.

Data flow: `synth_train` -> a seeded train/val split (val = the last `--val-size` records,
never trained on) and a seeded fixed subset of `synth_test` (written as JSONL under
`<out>/data/`) -> for every (arm, seed) job: `llm_jepa.train.train` (recipe + arm overrides,
per-step wall clock recorded through its `on_step` hook) -> `llm_jepa.evaluate.evaluate` on the
test subset (exact match + DFA equivalence, `eval.llm_tasks`) -> `<out>/<arm>/seed<s>/eval/
summary.json` (the layout `llm_jepa.multiseed` resumes from) -> `--report`: mean ± std and the
paired one-tailed t-test per metric from `llm_jepa.multiseed`, step-time ratios, loss-curve
figure -> `<out>/report.md`, `<out>/report.json`, `<out>/loss_curves.png`.

Jobs can be split over processes (`--shard i/n`, one torch thread each) and re-run: finished
jobs are skipped. The arms all run the same number of optimizer steps.

    python benchmarks/llm_jepa_repro.py --shard 0/2 &  python benchmarks/llm_jepa_repro.py --shard 1/2
    python benchmarks/llm_jepa_repro.py --report
    python benchmarks/llm_jepa_repro.py --pilot   # one plain run scored on val, to size the budget
    python benchmarks/llm_jepa_repro.py --part in_context --shard 0/2   # in_context vs reference, 3 seeds
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata  # noqa: E402
from llm_jepa.datasets import read_packaged_lines  # noqa: E402
from llm_jepa.multiseed import Arm, compare, markdown_table  # noqa: E402

RECIPE = REPO / "recipes" / "llm_jepa" / "repro_nlrx_tiny.yaml"
MAIN_SEEDS = [82, 23, 37]  # the paper's first three seeds
SWEEP_SEEDS = [82]  # the lambda sweep gets one seed (CPU budget): no paired test for it
ARMS = [  # the first arm is the baseline of every paired test
    Arm("plain", ["jepa.lam=0"]),
    Arm("jepa_lam1", ["jepa.lam=1", "jepa.predictors=1"]),  # paper setting for NL-RX-SYNTH
    Arm("jepa_lam1_drop75", ["jepa.lam=1", "jepa.predictors=1", "jepa.dropout=0.75"]),  # compute-matched
]
SWEEP = [Arm("jepa_lam0.5", ["jepa.lam=0.5", "jepa.predictors=1"]),
         Arm("jepa_lam2", ["jepa.lam=2", "jepa.predictors=1"])]
# What the cheaper `in_context` Enc(Text) costs in accuracy: paired against the reference definition.
IN_CONTEXT = [ARMS[1], Arm("jepa_lam1_in_context", ["jepa.lam=1", "jepa.predictors=1", "jepa.mode=in_context"])]
METRICS = ("exact_match", "equivalent")


@dataclass(frozen=True)
class Job:
    arm: Arm
    seed: int


def jobs(part: str) -> list[Job]:
    """Main arms first (seed-major, so a cut-short run still has complete seed pairs; arms rotated per
    seed so that `--shard i/3` gets one job of each arm), then the sweep."""
    if part == "sweep":
        return [Job(a, s) for s in SWEEP_SEEDS for a in SWEEP]
    if part == "in_context":
        return [Job(a, s) for s in MAIN_SEEDS for a in IN_CONTEXT]
    return [Job(ARMS[(j + i) % len(ARMS)], s) for i, s in enumerate(MAIN_SEEDS) for j in range(len(ARMS))]


def prepare_data(out: Path, val_size: int, test_size: int, split_seed: int = 0) -> dict[str, Path]:
    """Write train / val (held out of synth_train) and a seeded test subset as JSONL; idempotent."""
    data = out / "data"
    paths = {name: data / f"{name}.jsonl" for name in ("train", "val", "test")}
    if all(p.is_file() for p in paths.values()):
        return paths
    train = read_packaged_lines("synth_train")
    test = read_packaged_lines("synth_test")
    rng = random.Random(split_seed)
    order = list(range(len(train)))
    rng.shuffle(order)
    val_idx, train_idx = sorted(order[:val_size]), sorted(order[val_size:])
    test_idx = sorted(rng.sample(range(len(test)), min(test_size, len(test))))
    for name, lines in (("train", [train[i] for i in train_idx]), ("val", [train[i] for i in val_idx]),
                        ("test", [test[i] for i in test_idx])):
        atomic_write_text(paths[name], "\n".join(lines) + "\n")
    return paths


def run_job(job: Job, out: Path, data: dict[str, Path], extra: list[str], eval_split: str) -> dict[str, Any]:
    """Train + evaluate one (arm, seed); returns (and stores) the eval summary with timing added."""
    from jepa_common.config import load_config
    from llm_jepa.config import load_llm_jepa_config
    from llm_jepa.evaluate import EvalConfig, evaluate
    from llm_jepa.train import train

    run_dir = out / job.arm.name / f"seed{job.seed}"
    summary_path = run_dir / "eval" / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    cfg = load_llm_jepa_config(RECIPE, [*job.arm.overrides, f"train.seed={job.seed}", f"data.train={data['train']}",
                                        f"train.output_dir={run_dir / 'train'}", *extra])
    stamps: list[float] = []
    t0 = time.perf_counter()
    result = train(cfg, on_step=lambda step, metrics: stamps.append(time.perf_counter()))
    train_s = time.perf_counter() - t0
    step_s = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]  # (steps-1,) seconds per optimizer step
    ecfg = load_config(EvalConfig, None, ["task=synth", f"data={data[eval_split]}", f"checkpoint={result['output']}",
                                          f"out_dir={run_dir / 'eval'}", "generation.batch_size=64"])
    summary = evaluate(ecfg)
    summary["train_final"] = {k: v for k, v in result.items() if k != "output"}
    summary["timing"] = {"train_wall_s": train_s, "median_step_s": statistics.median(step_s),
                         "mean_step_s": statistics.fmean(step_s), "steps": len(stamps)}
    atomic_write_json(summary_path, summary)
    return summary


def run_shard(out: Path, part: str, shard: str, data: dict[str, Path], extra: list[str]) -> None:
    import torch

    i, n = (int(x) for x in shard.split("/"))
    torch.set_num_threads(1)  # n single-threaded shards share the cores better than one 2-thread process
    for k, job in enumerate(jobs(part)):
        if k % n == i:
            s = run_job(job, out, data, extra, "test")
            print(f"[shard {shard}] {job.arm.name} seed {job.seed}: "
                  f"{ {m: s['metrics'].get(m) for m in METRICS} } {s['timing']}", flush=True)


def _load(out: Path, arms: list[Arm], seeds: list[int]) -> dict[str, dict[int, dict]]:
    found: dict[str, dict[int, dict]] = {}
    for arm in arms:
        for seed in seeds:
            p = out / arm.name / f"seed{seed}" / "eval" / "summary.json"
            if p.is_file():
                found.setdefault(arm.name, {})[seed] = json.loads(p.read_text())
    return found


def _complete(found: dict[str, dict[int, dict]], baseline: str) -> dict[str, dict[int, dict]]:
    """Keep only seeds present in the baseline too (paired tests need the same seeds)."""
    base = set(found.get(baseline, {}))
    return {a: {s: v for s, v in by.items() if s in base} for a, by in found.items()}


def loss_figure(out: Path, arms: list[Arm], found: dict[str, dict[int, dict]], path: Path) -> None:
    """LM loss (and JEPA cosine distance) per step, mean over seeds, moving average of 10 steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_lm, ax_j) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=90)
    for arm in arms:
        curves_lm, curves_j = [], []
        for seed in found.get(arm.name, {}):
            rows = [json.loads(ln) for ln in (out / arm.name / f"seed{seed}" / "train" / "metrics.jsonl")
                    .read_text().splitlines() if ln]
            curves_lm.append([r["lm_loss"] for r in rows])
            curves_j.append([r["jepa_loss"] if r["jepa_on"] else np.nan for r in rows])
        if not curves_lm:
            continue
        n = min(len(c) for c in curves_lm)
        lm = np.mean([c[:n] for c in curves_lm], axis=0)
        kernel = np.ones(10) / 10
        ax_lm.plot(np.arange(len(lm) - 9) + 10, np.convolve(lm, kernel, "valid"), label=arm.name)
        j_all = np.array([c[:n] for c in curves_j], dtype=float)  # (seeds, steps), NaN where JEPA was off
        if not np.all(np.isnan(j_all)):
            j = np.nanmean(j_all, axis=0) if np.isnan(j_all).sum(0).min() < len(j_all) else j_all[0]
            ax_j.plot(np.arange(1, n + 1)[~np.isnan(j)], j[~np.isnan(j)], ".", ms=2, label=arm.name)
    ax_lm.set(xlabel="optimizer step", ylabel="train LM loss (10-step avg)", yscale="log")
    ax_j.set(xlabel="optimizer step", ylabel="train JEPA loss (1 - cos)", yscale="log")
    ax_lm.legend(fontsize=7)
    ax_j.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def sweep_table(found: dict[str, dict[int, dict]], res: dict[str, Any]) -> str:
    """Lambda sweep on SWEEP_SEEDS (one seed: per-seed values, no test), beside plain and lambda=1."""
    rows = ["| arm | seed | " + " | ".join(f"{m} (%)" for m in METRICS) + " |", "|---|---|---|---|"]
    for arm, by in found.items():
        for seed, v in sorted(by.items()):
            res.setdefault("sweep", {}).setdefault(arm, {})[seed] = {m: v["metrics"][m] for m in METRICS}
            rows.append(f"| {arm} | {seed} | " + " | ".join(f"{v['metrics'][m]:.1f}" for m in METRICS) + " |")
    return "### Lambda sweep (k=1), test subset\n\n" + "\n".join(rows) + "\n"


def in_context_table(out: Path, res: dict[str, Any]) -> str:
    """`in_context` vs the reference definition (baseline), paired by seed, both metrics."""
    found = _complete(_load(out, IN_CONTEXT, MAIN_SEEDS), IN_CONTEXT[0].name)
    if len(found) < 2 or not found[IN_CONTEXT[1].name]:
        return ""
    md = []
    for metric in METRICS:
        scores = {a: {s: float(v["metrics"][metric]) for s, v in by.items()} for a, by in found.items()}
        stats = compare(scores, IN_CONTEXT[0].name)
        res.setdefault("in_context", {})[metric] = stats
        md.append(f"### in_context vs reference: {metric} (%)\n\n" + markdown_table(stats, metric, IN_CONTEXT[0].name))
    return "\n".join(md)


def in_context_report(out: Path) -> str:
    """--part in_context --report: accuracy tables and mean step time of in_context relative to reference."""
    res: dict[str, Any] = {**run_metadata()}
    md = [in_context_table(out, res)]
    found = _load(out, IN_CONTEXT, MAIN_SEEDS)
    steps = {a: statistics.fmean(v["timing"]["mean_step_s"] for v in by.values()) for a, by in found.items() if by}
    ref = steps.get(IN_CONTEXT[0].name)
    rows = ["| arm | mean step (s) | ratio vs reference | runs |", "|---|---|---|---|"]
    rows += [f"| {a} | {t:.3f} | {t / ref:.2f}x | {len(found[a])} |" for a, t in steps.items() if ref]
    md.append("### Wall-clock cost (same run, interleaved jobs)\n\n" + "\n".join(rows) + "\n")
    res["mean_step_s"] = steps
    atomic_write_json(out / "in_context_report.json", res)
    atomic_write_text(out / "in_context_report.md", "\n".join(md))
    return "\n".join(md)


def report(out: Path, figure: Path) -> dict[str, Any]:
    """Tables (both metrics; main arms on MAIN_SEEDS with paired tests, sweep on SWEEP_SEEDS), timings, figure."""
    res: dict[str, Any] = {"metrics": {}, "timing": {}, **run_metadata()}
    md = []
    found = _complete(_load(out, ARMS, MAIN_SEEDS), ARMS[0].name)
    for metric in METRICS:
        scores = {a: {s: float(v["metrics"][metric]) for s, v in by.items()} for a, by in found.items() if by}
        stats = compare(scores, ARMS[0].name)
        res["metrics"][metric] = stats
        md.append(f"### {metric} (%), test subset\n\n" + markdown_table(stats, metric, ARMS[0].name))
    md.append(sweep_table(_load(out, [ARMS[0], ARMS[1], *SWEEP], SWEEP_SEEDS), res))
    found = _load(out, ARMS + SWEEP, MAIN_SEEDS + SWEEP_SEEDS)
    # mean, not median: with JEPA dropout the median is a plain step and hides the JEPA steps' cost
    base = statistics.fmean(v["timing"]["mean_step_s"] for v in found[ARMS[0].name].values())
    rows = ["| arm | mean step (s) | ratio vs plain | median step (s) | train wall per run (s) | runs |",
            "|---|---|---|---|---|---|"]
    for arm, by in found.items():
        step = statistics.fmean(v["timing"]["mean_step_s"] for v in by.values())
        med = statistics.fmean(v["timing"]["median_step_s"] for v in by.values())
        wall = statistics.fmean(v["timing"]["train_wall_s"] for v in by.values())
        res["timing"][arm] = {"mean_step_s": step, "ratio_vs_plain": step / base, "median_step_s": med,
                              "train_wall_s": wall, "runs": len(by)}
        rows.append(f"| {arm} | {step:.3f} | {step / base:.2f}x | {med:.3f} | {wall:.0f} | {len(by)} |")
    md.append("### Wall-clock cost\n\n" + "\n".join(rows) + "\n")
    loss_figure(out, ARMS + SWEEP, found, figure)
    atomic_write_json(out / "report.json", res)
    atomic_write_text(out / "report.md", "\n".join(md))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "runs" / "llm_jepa" / "repro_nlrx"))
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i")
    p.add_argument("--val-size", type=int, default=500, help="records of synth_train held out for validation")
    p.add_argument("--test-size", type=int, default=300, help="fixed seeded subset of the 2000 test records")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="a.b=c",
                   help="training override applied to every arm (e.g. train.max_steps=200)")
    p.add_argument("--part", choices=("main", "sweep", "in_context"), default="main",
                   help="main arms x seeds, the lambda sweep, or in_context vs reference (both x seeds)")
    p.add_argument("--report", action="store_true", help="only aggregate finished runs")
    p.add_argument("--figure", default=str(REPO / "docs" / "figures" / "llm_jepa_repro_loss.png"))
    p.add_argument("--pilot", action="store_true", help="one plain run (seed 82) scored on the val split")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = prepare_data(out, args.val_size, args.test_size)
    if args.report and args.part == "in_context":
        print(in_context_report(out))
    elif args.report:
        print((out / "report.md").read_text() if report(out, Path(args.figure)) else "")
    elif args.pilot:
        print(json.dumps(run_job(Job(ARMS[0], MAIN_SEEDS[0]), out / "pilot", data, args.extra, "val"), indent=1)[:3000])
    else:
        run_shard(out, args.part, args.shard, data, args.extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
