"""Does V-JEPA pretraining of the tiny X-encoder beat a random frozen encoder? Seeds x arms -> table.

Data flow, per seed s (arms interleaved, so both see the same machine load):

    recipes/vljepa/pretrain_tiny_cpu.yaml (+ --set overrides; encoder.seed = run.seed = s)
      -> vljepa.pretrain.pretrain -> <out>/seed<s>/pretrain/x_encoder (VJEPA2Model) + monitors
    vljepa.demo.run_arm for the random arm (the same random encoder the pretraining started from)
    and the pretrained arm: demo train clips (seed s) -> cached features -> VL-JEPA (demo settings)
      -> the demo's held-out clips (seed s + 777): linear probe on the frozen encoder (action),
         zero-shot action accuracy, text-to-video R@1          -> <out>/seed<s>/<arm>.json
    --report: mean, 95 % t-interval over seeds and per-seed values per arm, the paired difference
    (pretrained - random) with its interval, pretraining wall time, and the monitor curves of every
    seed -> <out>/report.md, <out>/report.json, <figure> (default docs/figures/vjepa_pretrain_monitors.png)

Finished pieces are skipped on a re-run. Run with one torch thread; the CPU may be shared.

    python benchmarks/vjepa_pretrain.py --out runs/vjepa_pretrain_bench --seeds 0 1 2
    python benchmarks/vjepa_pretrain.py --out runs/vjepa_pretrain_bench --seeds 0 1 2 --report
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jepa_common.config import load_config  # noqa: E402
from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata  # noqa: E402

RECIPE = REPO / "recipes" / "vljepa" / "pretrain_tiny_cpu.yaml"
FIGURE = REPO / "docs" / "figures" / "vjepa_pretrain_monitors.png"
ARMS = ("random", "pretrained")
METRICS = {"linear_probe": ("linear probe (action)", 100), "zero_shot_accuracy": ("zero-shot accuracy", 100),
           "t2v_R@1": ("text-to-video R@1", 1)}  # name -> (label, scale to %)


def pretrain_seed(seed: int, args: argparse.Namespace, out: Path) -> Path:
    """Pretrain (or reuse) the seed's X-encoder; returns its folder."""
    from vljepa.pretrain import ENCODER_DIR, PretrainConfig, pretrain

    run = out / "pretrain"
    if not (run / "result.json").is_file():
        overrides = [f"run.output_dir={run}", f"encoder.seed={seed}", f"run.seed={seed}", "run.progress=false",
                     *args.overrides]
        pretrain(load_config(PretrainConfig, args.recipe, overrides))
    return run / ENCODER_DIR


def eval_arm(arm: str, seed: int, encoder_dir: Path, args: argparse.Namespace, out: Path) -> dict:
    """The demo's arm pipeline at the demo's settings (+ --demo-args); the metrics row."""
    from vljepa.demo import XEncoderInit, parse_args, run_arm
    from vljepa.synthetic import make_clip_dataset

    path = out / f"{arm}.json"
    if path.is_file():
        return json.loads(path.read_text())
    demo = parse_args(["--seed", str(seed), "--pretrained-x-encoder", str(encoder_dir), *args.demo_args])
    test = make_clip_dataset(demo.test_clips, n_frames=demo.frames, seed=demo.seed + 777)
    train = make_clip_dataset(demo.train_clips, n_frames=demo.frames, seed=demo.seed)
    t0 = time.time()
    _, ev, timings = run_arm(XEncoderInit(arm), demo, out / "demo", train, test, demo.steps)
    row = {"arm": arm, "seed": seed, "linear_probe": ev["linear_probe"]["action"], "probes": ev["linear_probe"],
           "zero_shot_accuracy": ev["zero_shot_accuracy"], "t2v_R@1": ev["t2v"]["R@1"], "t2v": ev["t2v"],
           "timings_s": timings, "wall_s": time.time() - t0}
    atomic_write_json(path, row)
    return row


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its two-sided t-interval (0 for a single value)."""
    from scipy.stats import t

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    half = t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def summarise(rows: dict[str, dict[int, dict]], seeds: list[int]) -> dict:
    """Per metric and arm: mean, CI half-width, per-seed values; plus the paired difference."""
    out = {}
    for metric, (_, scale) in METRICS.items():
        per_arm = {arm: [rows[arm][s][metric] * scale for s in seeds] for arm in ARMS}
        diff = [p - r for p, r in zip(per_arm["pretrained"], per_arm["random"])]
        out[metric] = {**{arm: dict(zip(("mean", "ci95"), mean_ci(v)), per_seed=v) for arm, v in per_arm.items()},
                       "difference": dict(zip(("mean", "ci95"), mean_ci(diff)), per_seed=diff)}
    return out


def markdown(stats: dict, seeds: list[int], pretrain_s: list[float]) -> str:
    lines = [f"# V-JEPA-pretrained vs random frozen tiny X-encoder ({len(seeds)} seeds: {seeds})", "",
             "| metric (%) | random: mean ± 95% CI | pretrained: mean ± 95% CI | pretrained - random | "
             "per seed (random / pretrained) |", "|---|---|---|---|---|"]
    for metric, (label, _) in METRICS.items():
        s = stats[metric]
        per_seed = ", ".join(f"{r:.1f} / {p:.1f}" for r, p in zip(s["random"]["per_seed"], s["pretrained"]["per_seed"]))
        lines.append(f"| {label} | {s['random']['mean']:.1f} ± {s['random']['ci95']:.1f} | "
                     f"{s['pretrained']['mean']:.1f} ± {s['pretrained']['ci95']:.1f} | "
                     f"{s['difference']['mean']:+.1f} ± {s['difference']['ci95']:.1f} | {per_seed} |")
    med = statistics.median(pretrain_s)
    lines += ["", f"Pretraining wall time per seed (s): {', '.join(f'{x:.0f}' for x in pretrain_s)} (median {med:.0f})."]
    return "\n".join(lines) + "\n"


def plot_seeds(out: Path, seeds: list[int], figure: Path) -> None:
    """Monitor curves of every seed in one figure (dashed: each seed's random encoder at step 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vljepa.pretrain import pretraining_record

    keys = [("loss_jepa", "V-JEPA L1 loss"), ("std", "across-clip std (pooled)"), ("eff_rank", "effective rank"),
            ("probe_action", "probe: action"), ("probe_colour", "probe: colour"), ("probe_digit", "probe: digit")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for i, seed in enumerate(seeds):
        rec = pretraining_record(out / f"seed{seed}" / "pretrain" / "x_encoder")
        for ax, (key, title) in zip(axes, keys):
            rows = rec["history"] if key == "loss_jepa" else rec["monitors"]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], color=f"C{i}", lw=0.8,
                    marker=None if key == "loss_jepa" else "o", ms=2, label=f"seed {seed}")
            if key != "loss_jepa":
                ax.axhline(rec["monitors"][0][key], color=f"C{i}", ls="--", lw=0.6)
            ax.set(title=title, xlabel="step")
    axes[0].legend(fontsize=7)
    fig.suptitle("V-JEPA pretraining monitors (held-out synthetic probe clips; dashed = random init)", fontsize=9)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    plt.close(fig)


def report(args: argparse.Namespace, out: Path) -> dict:
    rows = {arm: {s: json.loads((out / f"seed{s}" / f"{arm}.json").read_text()) for s in args.seeds} for arm in ARMS}
    pretrain_s = [json.loads((out / f"seed{s}" / "pretrain" / "result.json").read_text())["train_s"] for s in args.seeds]
    stats = summarise(rows, args.seeds)
    plot_seeds(out, args.seeds, Path(args.figure))
    text = markdown(stats, args.seeds, pretrain_s) + f"\n![monitors]({args.figure})\n"
    atomic_write_text(out / "report.md", text)
    atomic_write_json(out / "report.json", {"stats": stats, "rows": rows, "pretrain_s": pretrain_s,
                                            "args": vars(args), **run_metadata()})
    print(text)
    return stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/vjepa_pretrain_bench")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipe", default=str(RECIPE))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="pretraining recipe override (repeatable)")
    p.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[],
                   help="extra vljepa.demo arguments for both arms (last on the line)")
    p.add_argument("--figure", default=str(FIGURE))
    p.add_argument("--report", action="store_true", help="only write the report from finished runs")
    args = p.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would flood the log of a long run
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    if not args.report:
        for seed in args.seeds:
            encoder_dir = pretrain_seed(seed, args, out / f"seed{seed}")
            for arm in ARMS:
                row = eval_arm(arm, seed, encoder_dir, args, out / f"seed{seed}")
                print(json.dumps({k: row[k] for k in ("arm", "seed", "linear_probe", "zero_shot_accuracy", "t2v_R@1")}))
    report(args, out)


if __name__ == "__main__":
    main()
