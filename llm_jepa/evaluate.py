"""`llm-jepa eval`: generation-based task accuracy (+ optional representation diagnostics).

Data flow: `EvalConfig` (YAML recipe and/or `--set a.b=c`, or the short flags below) ->
test records (`llm_jepa.data.load_records`) -> checkpoint or PEFT adapter ->
`llm_jepa.generate.generate_answers` (greedy, batched, left padded) -> scorer of the task
NAMED in the config (`eval.llm_tasks`; accuracies in percent) -> `<out_dir>/results.json` (the
versioned schema of `eval.results`, shared with `vljepa eval`, so `vljepa eval compare` reads
both), `<out_dir>/examples.json` (one entry per example) and `<out_dir>/summary.json` (metrics,
resolved config, checkpoint, package versions, git commit) + `config.yaml`. The default
`out_dir` is `runs/llm_jepa_eval/<task>` (vljepa writes under `runs/vljepa_eval/`). With `representation: true`, `llm_jepa.representation` adds the
Enc(Text)/Enc(Code) cosine, linear-fit and Text->Code retrieval diagnostics and a plot.

    llm-jepa eval --checkpoint runs/llm_jepa/tiny_cpu/final --task synth --data synth_test --limit 200
    llm-jepa eval --config recipes/llm_jepa/eval_synth.yaml --set checkpoint=runs/x/final
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eval.llm_tasks import ScoreContext, Task, aggregate, get_task, gold_answer
from eval.regex_equiv import BoundaryMode, EquivLimits
from eval.results import fingerprint_items, model_identity, write_results
from jepa_common.config import ConfigError, load_config, save_config, to_dict
from jepa_common.io import atomic_write_json, run_metadata

log = logging.getLogger(__name__)


@dataclass
class GenerationSection:
    batch_size: int = 16
    max_new_tokens: int | None = None  # None: the task's default (eval.llm_tasks.TASKS)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:1 ...


@dataclass
class RegexSection:
    boundary: BoundaryMode = BoundaryMode.SYMBOL  # how `\b` is read (eval.regex_equiv)
    max_states: int = 5000
    timeout_s: float = 5.0


@dataclass
class EvalConfig:
    """One evaluation: a checkpoint, a task name, a test set."""

    checkpoint: str = ""  # final/ checkpoint folder or adapter/ folder of a run
    task: Task = Task.SYNTH  # chooses the metric; never inferred from the data file's name
    data: str = "synth_test"  # packaged set name, JSONL path, or `datasets` hub id org/name
    split: str | None = None  # for hub ids
    limit: int | None = None  # first N records only
    out_dir: str = ""  # "" = runs/llm_jepa_eval/<task>
    spider_db_dir: str | None = None  # <dir>/<db_id>/<db_id>.sqlite enables Spider execution match
    representation: bool = False  # also write the Enc(Text)/Enc(Code) diagnostics
    representation_predictors: int = 0  # k predictor tokens on the Text view (0: Enc(Text) itself)
    generation: GenerationSection = field(default_factory=GenerationSection)
    regex: RegexSection = field(default_factory=RegexSection)


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _dtype(name: str) -> torch.dtype:
    valid = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in valid:
        raise ConfigError(f"generation.dtype={name!r}; choose one of {sorted(valid)}")
    return valid[name]


def score_generations(cfg: EvalConfig, records: list[dict], generations: list[str]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-example results and the aggregated metrics for generated answers."""
    spec = get_task(cfg.task)
    ctx = ScoreContext(spider_db_dir=Path(cfg.spider_db_dir) if cfg.spider_db_dir else None,
                       regex_boundary=cfg.regex.boundary,
                       regex_limits=EquivLimits(max_states=cfg.regex.max_states, timeout_s=cfg.regex.timeout_s))
    per_example = []
    for i, (rec, gen) in enumerate(zip(records, generations, strict=True)):
        scores = spec.score(gen, rec, ctx)
        per_example.append({"index": i, "prediction": gen, "gold": gold_answer(rec), **scores})
    metric_rows = [{k: v for k, v in ex.items() if k not in ("index", "prediction", "gold")} for ex in per_example]
    return per_example, aggregate(metric_rows, spec)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Generate, score and write results.json + summary.json into `cfg.out_dir`; returns the summary."""
    from llm_jepa.data import load_records
    from llm_jepa.generate import generate_answers, load_for_generation

    if not cfg.checkpoint:
        raise ConfigError("no checkpoint given; set checkpoint=<run>/final (or --checkpoint)")
    spec = get_task(cfg.task)
    out_dir = Path(cfg.out_dir or f"runs/llm_jepa_eval/{spec.task.value}")
    cfg.out_dir = str(out_dir)
    save_config(cfg, out_dir / "config.yaml")
    records = load_records(cfg.data, cfg.split, limit=cfg.limit)
    model, tok = load_for_generation(cfg.checkpoint, _dtype(cfg.generation.dtype), _device(cfg.generation.device))
    t0 = time.perf_counter()
    generations = generate_answers(model, tok, records, cfg.generation.batch_size,
                                   cfg.generation.max_new_tokens or spec.max_new_tokens)
    gen_s = time.perf_counter() - t0
    per_example, metrics = score_generations(cfg, records, generations)
    atomic_write_json(out_dir / "examples.json", per_example)
    summary: dict[str, Any] = {"metrics": metrics, "checkpoint": str(Path(cfg.checkpoint).resolve()),
                               "data": cfg.data, "n_records": len(records), "generation_seconds": gen_s,
                               "config": to_dict(cfg), **run_metadata()}
    if cfg.representation:
        from llm_jepa.representation import hf_view_encoder, representation_report

        encode = hf_view_encoder(model, tok, cfg.representation_predictors)
        summary["representation"] = representation_report(encode, records, out_dir / "representation")
    atomic_write_json(out_dir / "summary.json", summary)
    write_results(out_dir, f"llm_jepa/{spec.task.value}", metrics, summary["config"], model_identity(cfg.checkpoint),
                  {"name": cfg.data, "n": len(records),
                   "fingerprint": fingerprint_items([json.dumps(r, sort_keys=True) for r in records])})
    log.info("%s on %s: %s = %.4f (n=%d) -> %s", spec.task.value, cfg.data, spec.primary,
             metrics["accuracy"], len(records), out_dir)
    return summary


_FLAGS = {"checkpoint": "checkpoint", "task": "task", "data": "data", "limit": "limit", "out": "out_dir",
          "batch_size": "generation.batch_size", "max_new_tokens": "generation.max_new_tokens",
          "spider_db_dir": "spider_db_dir"}


def cli_main(argv: list[str]) -> int:
    """`llm-jepa eval [--config recipe.yaml] [--set a.b=c ...] [--checkpoint ... --task ... ...]`."""
    parser = argparse.ArgumentParser(prog="llm-jepa eval", description="LLM-JEPA generation-based evaluation")
    parser.add_argument("--config", help="YAML recipe of an EvalConfig (optional)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=c",
                        help="override one config field (repeatable)")
    for flag in _FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, help=f"same as --set {_FLAGS[flag]}=...")
    parser.add_argument("--representation", action="store_true", help="also run the representation diagnostics")
    args = parser.parse_args(argv)
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in _FLAGS.items() if getattr(args, flag) is not None]
    if args.representation:
        overrides.append("representation=true")
    try:
        cfg = load_config(EvalConfig, args.config, overrides + args.overrides)
        summary = evaluate(cfg)
    except (ConfigError, FileNotFoundError) as e:
        parser.error(str(e))
    print(json.dumps(summary["metrics"], indent=2))
    return 0
