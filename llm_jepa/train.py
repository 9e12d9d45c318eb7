"""`train(cfg)`: the plain Accelerate training loop of LLM-JEPA finetuning.

Data flow: records (`load_records`) -> encoded once (`JepaCollator.encode`, malformed/over-long
ones skipped or fatal per `data.on_invalid`) -> each epoch a seeded permutation cut into global
micro-batches of `batch_size x processes` records (each rank takes its slice) -> `grad_accum`
micro-batches per optimizer step -> `JepaModule` (DDP/FSDP-wrapped by `accelerator.prepare`)
-> loss normalised by the labelled tokens / view pairs of the WHOLE step on ALL ranks (so 4x4
with accumulation == one batch of 16) -> clip, AdamW, LR schedule -> metrics.jsonl + trackers
-> atomic checkpoints (`accelerator.save_state`) and resume -> `final/` Hugging Face checkpoint.

    llm-jepa train --config recipes/llm_jepa/tiny_cpu.yaml --set train.max_steps=20
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m llm_jepa.cli train --config ...
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from jepa_common.config import save_config
from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata
from jepa_common.runtime import torchrun_on_cpu
from llm_jepa.collator import JepaCollator, encode_records, strip_views
from llm_jepa.config import LLMJepaConfig, MixedPrecision
from llm_jepa.data import load_records
from llm_jepa.losses import infonce_scope_warning
from llm_jepa.modeling import JepaModule, apply_lora, embedding_rows, load_model_and_tokenizer, step_norms
from llm_jepa.output import save_output
from llm_jepa.stp import add_step_spans

log = logging.getLogger(__name__)


STATE_FILE = "train_state.json"


class TrainState:
    """Step counter and the JEPA-dropout generator, written as JSON next to `accelerator.save_state`'s files
    (never pickled: a checkpoint's own state loads without `weights_only=False`)."""

    def __init__(self, seed: int) -> None:
        self.step = 0
        self.jepa_gen = torch.Generator().manual_seed(seed + 1)  # same seed on every rank

    def to_json(self) -> dict:
        return {"step": self.step, "jepa_gen": self.jepa_gen.get_state().tolist()}

    def load_json(self, state: dict) -> None:
        self.step = int(state["step"])
        self.jepa_gen.set_state(torch.tensor(state["jepa_gen"], dtype=torch.uint8))


def step_windows(n: int, cfg: LLMJepaConfig, world: int, rank: int, step: int) -> list[list[int]]:
    """Record indices of this rank's micro-batches for optimizer step `step` (deterministic)."""
    per_micro = cfg.train.batch_size * world
    micros_per_epoch = n // per_micro
    if micros_per_epoch == 0:
        raise ValueError(f"{n} records < batch_size x processes = {per_micro}; lower train.batch_size")
    steps_per_epoch = math.ceil(micros_per_epoch / cfg.train.grad_accum)
    epoch, within = divmod(step, steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.train.seed + epoch)
    perm = torch.randperm(n, generator=gen) if cfg.train.shuffle else torch.arange(n)
    first = within * cfg.train.grad_accum
    micros = range(first, min(first + cfg.train.grad_accum, micros_per_epoch))
    lo = rank * cfg.train.batch_size
    return [perm[m * per_micro + lo: m * per_micro + lo + cfg.train.batch_size].tolist() for m in micros]


def total_steps(n: int, cfg: LLMJepaConfig, world: int) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    micros = n // (cfg.train.batch_size * world)
    return cfg.train.epochs * math.ceil(micros / cfg.train.grad_accum)


def run_step(module, batches: list[dict], use_jepa: bool, cfg: LLMJepaConfig, acc: Accelerator) -> dict:
    """Forward/backward over the micro-batches of one optimizer step; returns summed log terms."""
    lm_norm, jepa_norm = step_norms(batches, use_jepa, cfg, lambda t: acc.reduce(t, reduction="sum"),
                                    acc.num_processes, acc.device)
    sums = {k: 0.0 for k in ("lm_sum", "n_tokens", "jepa_sum", "n_pairs", "cos_sum")}
    for i, batch in enumerate(batches):
        sync = contextlib.nullcontext() if i == len(batches) - 1 else acc.no_sync(module)
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        with sync, acc.autocast():
            out = module(**batch, lm_norm=lm_norm, jepa_norm=jepa_norm, use_jepa=use_jepa)
            acc.backward(out["loss"])
        for k in ("lm_sum", "n_tokens", "jepa_sum", "n_pairs"):
            sums[k] += float(out[k].detach())
        sums["cos_sum"] += float(out["cos_sim"]) * float(out["n_pairs"])
    return sums


def _reduce_logs(sums: dict, acc: Accelerator) -> dict:
    t = acc.reduce(torch.tensor(list(sums.values()), device=acc.device, dtype=torch.float64), reduction="sum")
    s = dict(zip(sums, t.tolist()))
    return {"lm_loss": s["lm_sum"] / max(s["n_tokens"], 1), "jepa_loss": s["jepa_sum"] / max(s["n_pairs"], 1),
            "cos_sim": s["cos_sum"] / max(s["n_pairs"], 1), "jepa_on": s["n_pairs"] > 0}


def _save_checkpoint(acc: Accelerator, ckpt_root: Path, state: TrainState) -> None:
    """save_state + train_state.json into a temp folder, rename it into place, then repoint `last` (atomic)."""
    tmp, final = ckpt_root / f".tmp-step-{state.step}", ckpt_root / f"step-{state.step}"
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        atomic_write_json(tmp / STATE_FILE, state.to_json())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(ckpt_root / "last", final.name)
    acc.wait_for_everyone()


def _truncate_log(path: Path, step: int, acc: Accelerator) -> None:
    """Keep one line per step up to the checkpoint we resume from (0: a fresh run keeps none). Lines written
    after it, a torn last line (killed mid-write) and repeated steps are dropped, so a resumed run never
    duplicates or chokes on a row."""
    if not (acc.is_main_process and path.is_file()):
        return
    rows: dict[int, str] = {}
    for line in path.read_text().splitlines():
        try:
            row_step = int(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a half-written line
        if row_step <= step:
            rows.setdefault(row_step, line)
    atomic_write_text(path, "".join(rows[k] + "\n" for k in sorted(rows)))


def _save_tiny_base(model, tok, folder: Path, acc: Accelerator) -> None:
    """A tiny model exists nowhere else: save it (as built, with pad/predictor rows) so that the adapter
    can name it as its base checkpoint."""
    if acc.is_main_process:
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    acc.wait_for_everyone()
    model.config._name_or_path = model.name_or_path = str(folder.resolve())  # peft: base_model_name_or_path
    model._jepa_base_rows = embedding_rows(model)


def _setup(cfg: LLMJepaConfig, acc: Accelerator):
    records = load_records(cfg.data.train, cfg.data.split, on_invalid=cfg.data.on_invalid, limit=cfg.data.limit)
    corpus = [m["content"] for r in records for m in r["messages"]] if cfg.model.name_or_path == "tiny" else None
    model, tok = load_model_and_tokenizer(cfg, corpus)
    if cfg.lora.enabled and not cfg.lora.merge and cfg.model.name_or_path == "tiny":
        _save_tiny_base(model, tok, Path(cfg.train.output_dir) / "base", acc)
    if cfg.lora.enabled:
        model = apply_lora(model, tok, cfg)
    collate = JepaCollator(tok, cfg)
    return model, tok, collate, encode_records(collate, records, cfg.data.on_invalid)


def train(cfg: LLMJepaConfig, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train per `cfg`; returns the last step's metrics and the output folder. `on_step(step, metrics)`
    is called after every optimizer step (progress hooks, early stops)."""
    out_dir = Path(cfg.train.output_dir)
    pure_bf16 = cfg.jepa.paper_compat and cfg.train.mixed_precision is MixedPrecision.BF16
    # torchrun on a CUDA-less machine: accelerate only forms a gloo MULTI_CPU group when told cpu=True
    cpu_ddp = torchrun_on_cpu()
    acc = Accelerator(cpu=cpu_ddp, mixed_precision="no" if pure_bf16 else cfg.train.mixed_precision.value,
                      log_with=list(cfg.train.report_to) or None, project_dir=str(out_dir))
    set_seed(cfg.train.seed)
    note = infonce_scope_warning(cfg.jepa.distance, cfg.train.grad_accum, acc.num_processes)
    if note:
        log.warning(note)
    model, tok, collate, encoded = _setup(cfg, acc)
    if pure_bf16:
        model.to(torch.bfloat16)
    module = JepaModule(model, cfg)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    steps = total_steps(len(encoded), cfg, acc.num_processes)
    # accelerate's prepared scheduler steps once per process per optimizer step (split_batches=False), so its
    # length is counted in process-steps: without the factor, 2 processes ran the schedule twice as fast
    ticks = acc.num_processes
    sched = get_scheduler(cfg.train.schedule.value, opt, num_warmup_steps=int(cfg.train.warmup_ratio * steps) * ticks,
                          num_training_steps=steps * ticks)
    module, opt, sched = acc.prepare(module, opt, sched)
    state = TrainState(cfg.train.seed)
    ckpt_root = out_dir / "checkpoints"
    if cfg.train.resume and (ckpt_root / "last").is_file():
        ckpt = ckpt_root / (ckpt_root / "last").read_text().strip()
        acc.load_state(str(ckpt))
        state.load_json(json.loads((ckpt / STATE_FILE).read_text()))
        log.info("resumed from step %d", state.step)
    _truncate_log(out_dir / "metrics.jsonl", state.step, acc)
    if acc.is_main_process:
        save_config(cfg, out_dir / "config.yaml")
        atomic_write_json(out_dir / "run_metadata.json", run_metadata())
    acc.init_trackers("llm_jepa", config={"lam": cfg.jepa.lam, "lr": cfg.train.lr})
    metrics = _train_loop(cfg, acc, module, opt, sched, params, state, collate, encoded, steps, on_step)
    final = save_output(acc, module, tok, cfg, out_dir)
    acc.end_training()  # also tears down the process group: after the last collective
    return {**metrics, "step": state.step, "output": str(final) if final else None}


def _train_loop(cfg, acc, module, opt, sched, params, state, collate, encoded, steps, on_step) -> dict:
    log_path = Path(cfg.train.output_dir) / "metrics.jsonl"
    metrics: dict = {}
    bar = tqdm(total=steps, initial=state.step, desc="train", disable=not acc.is_main_process)
    module.train()
    while state.step < steps:
        idx = step_windows(len(encoded), cfg, acc.num_processes, acc.process_index, state.step)
        batches = [collate([encoded[i] for i in ids]) for ids in idx]
        draw = float(torch.rand((), generator=state.jepa_gen))  # one draw per optimizer step, every rank
        use_jepa = cfg.jepa.lam != 0.0 and draw >= cfg.jepa.dropout
        if not use_jepa and cfg.jepa.lam != 0.0:
            batches = [strip_views(b) for b in batches]  # a dropped step costs plain finetuning
        batches = add_step_spans(batches, cfg.stp, cfg.train.seed, state.step, acc.process_index)  # STP only
        sums = run_step(module, batches, use_jepa, cfg, acc)
        grad_norm = acc.clip_grad_norm_(params, cfg.train.max_grad_norm) if cfg.train.max_grad_norm else None
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        state.step += 1
        metrics = _reduce_logs(sums, acc)
        metrics["loss"] = cfg.jepa.gamma * metrics["lm_loss"] + (cfg.jepa.lam * metrics["jepa_loss"])
        metrics.update(step=state.step, lr=sched.get_last_lr()[0],
                       grad_norm=float(grad_norm) if grad_norm is not None else None)
        if acc.is_main_process and state.step % cfg.train.log_every == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(metrics) + "\n")
        acc.log({k: v for k, v in metrics.items() if isinstance(v, int | float)}, step=state.step)
        bar.update(1)
        bar.set_postfix(lm=f"{metrics['lm_loss']:.3f}", jepa=f"{metrics['jepa_loss']:.3f}")
        if cfg.train.save_every and state.step % cfg.train.save_every == 0 and state.step < steps:
            _save_checkpoint(acc, Path(cfg.train.output_dir) / "checkpoints", state)
        if on_step is not None:
            on_step(state.step, metrics)
    bar.close()
    return metrics
