"""Offline LLM-JEPA demo: a tiny Llama on NL-RX-SYNTH, plain finetuning (lambda=0) vs LLM-JEPA.

Data flow: `recipes/llm_jepa/tiny_cpu.yaml` -> two `train()` runs with the same seed and data,
`jepa.lam=0` and `jepa.lam=1` -> per-step curves (LM loss, JEPA loss, cosine similarity of
Pred(Enc(Text)) and Enc(Code)) -> printed summary, `curves.json` and `curves.png` in --out.

    python -m llm_jepa.demo --out demo_out/llm_jepa        # (make demo) 2-4 minutes on a CPU
    python -m llm_jepa.demo --model mini-llama             # start from the shipped pretrained ~2M Llama

By default the model is random and tiny, so this shows the machinery and the loss curves, not the
paper's accuracy gains; `--model mini-llama` starts from the small pretrained model of
`llm_jepa.pretrained` (about 10x the compute per step), the regime of docs/llm_jepa_reproduction.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from jepa_common.io import atomic_write_json, atomic_write_text
from llm_jepa.config import load_llm_jepa_config
from llm_jepa.train import train

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "llm_jepa" / "tiny_cpu.yaml"


def run_one(out: Path, lam: float, extra: list[str]) -> dict[str, list[float]]:
    cfg = load_llm_jepa_config(RECIPE, [f"jepa.lam={lam}", f"train.output_dir={out}", "train.save_every=null",
                                        "train.resume=false", *extra])
    curves: dict[str, list[float]] = {"lm_loss": [], "jepa_loss": [], "cos_sim": []}

    def record(step: int, m: dict) -> None:
        for k in curves:
            curves[k].append(m[k])

    train(cfg, on_step=record)
    return curves


def _mean_tail(xs: list[float], n: int = 10) -> float:
    return sum(xs[-n:]) / max(len(xs[-n:]), 1)


def plot(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, c in curves.items():
        axes[0].plot(c["lm_loss"], label=f"LM loss, {name}")
    axes[1].plot(curves["llm_jepa"]["cos_sim"], label="cos(Pred(Text), Code)")
    axes[1].plot(curves["llm_jepa"]["jepa_loss"], label="JEPA loss (1 - cos)")
    for ax, title in zip(axes, ("next-token loss", "JEPA term (lambda=1)")):
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out/llm_jepa", help="output folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=c",
                        help="extra overrides for both runs, e.g. data.limit=512")
    parser.add_argument("--model", choices=("tiny", "mini-llama"), default="tiny",
                        help="tiny: random tiny Llama (default); mini-llama: the shipped pretrained model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a 64-wide model is faster on one thread than two busy ones
    out = Path(args.out)
    args.overrides = ["data.limit=3072", f"model.name_or_path={args.model}", *args.overrides]  # ~190 steps per run
    curves = {"plain_lambda0": run_one(out / "plain", 0.0, args.overrides),
              "llm_jepa": run_one(out / "jepa", 1.0, args.overrides)}
    atomic_write_json(out / "curves.json", curves)
    plot(curves, out / "curves.png")
    model = "tiny random Llama" if args.model == "tiny" else "pretrained mini-llama"
    summary = [f"LLM-JEPA demo ({model}, NL-RX-SYNTH, CPU):"]
    summary += [f"  {name}: LM loss {c['lm_loss'][0]:.3f} -> {_mean_tail(c['lm_loss']):.3f} "
                f"(mean of last 10 of {len(c['lm_loss'])} steps)" for name, c in curves.items()]
    j = curves["llm_jepa"]
    summary.append(f"  JEPA loss {j['jepa_loss'][0]:.3f} -> {_mean_tail(j['jepa_loss']):.3f}, cosine similarity "
                   f"{j['cos_sim'][0]:.3f} -> {_mean_tail(j['cos_sim']):.3f}")
    summary.append(f"  curves {out / 'curves.json'}, figure {out / 'curves.png'}, checkpoints {out}/plain/final "
                   f"and {out}/jepa/final")
    atomic_write_text(out / "summary.txt", "\n".join(summary) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
