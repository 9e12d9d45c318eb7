"""VL-JEPA training loop: `train(cfg)` with Accelerate.

Data flow: TrainConfig (vljepa.recipe) -> model (frozen X-encoder, predictor, Y-encoder) and
dataset (clips or cached features) -> DataLoader -> `model(query, target, pixel_values|visual)`
-> loss dict (every term logged) -> AdamW with parameter groups (predictor + heads at `lr`,
Y-encoder backbone at `lr * y_lr_multiplier`, X-encoder absent while frozen; no weight decay on
embedding tables, norms and biases) -> cosine / constant / linear schedule with warmup ->
checkpoints (`output_dir/checkpoints/step_NNNNNN`, resumable: model, optimizer, scheduler, RNG,
step, as JSON + safetensors by `vljepa.checkpoint`, no pickle) -> `output_dir/model`
(VLJepaModel.save_pretrained, with the frame count and queries it was trained on in its config)
+ `config.yaml` + `metrics.jsonl` (a resumed run first drops rows past its checkpoint).

Gradient accumulation, mixed precision (bf16; fp16 is refused for Gemma Y-encoders) and
multi-process runs (`accelerate launch` on GPUs, `torchrun` on CPU) come from Accelerate; in
multi-process runs the InfoNCE negatives are gathered from every process (vljepa.losses).

    vljepa train --config recipes/vljepa/tiny_cpu.yaml --set optim.max_steps=50
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from jepa_common.config import save_config
from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata
from jepa_common.runtime import torchrun_on_cpu
from vljepa.checkpoint import STATE_FILE, load_state, save_state
from vljepa.data import collate
from vljepa.recipe import MixedPrecision, OptimConfig, Schedule, TrainConfig, build_dataset, build_model

MAX_RECORDED_QUERIES = 32
LOGGED = ("loss", "loss_v2t", "loss_t2v", "loss_cosine", "loss_l1", "loss_l2", "temperature")


def _no_decay_ids(model: torch.nn.Module) -> set[int]:
    """Parameters AdamW must not shrink: embedding tables (a row of an unseen token would decay to
    zero), norm scales and every vector (biases, the logit scale)."""
    ids = {id(p) for p in model.parameters() if p.ndim < 2}
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) or "norm" in type(module).__name__.lower():
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def param_groups(model, cfg: OptimConfig) -> list[dict]:
    """AdamW groups: main (predictor, heads, logit scale, unfrozen X-encoder) at lr; the Y-encoder
    backbone at lr * y_lr_multiplier (frozen when 0). No weight decay on embeddings, norms, biases."""
    if cfg.y_lr_multiplier < 0:
        raise ValueError(f"optim.y_lr_multiplier={cfg.y_lr_multiplier} must be >= 0 (0 freezes the Y-encoder)")
    model.y_encoder.requires_grad_(cfg.y_lr_multiplier > 0)
    y_ids, no_decay = {id(p) for p in model.y_encoder.parameters()}, _no_decay_ids(model)
    groups: dict[tuple[str, bool], list] = defaultdict(list)
    for p in model.parameters():
        if p.requires_grad:
            groups[("y" if id(p) in y_ids else "main", id(p) not in no_decay)].append(p)
    return [{"params": params, "lr": cfg.lr * (cfg.y_lr_multiplier if part == "y" else 1.0),
             "weight_decay": cfg.weight_decay if decay else 0.0, "name": f"{part}{'' if decay else '_no_decay'}"}
            for (part, decay), params in groups.items()]


def _check_precision(model, cfg: TrainConfig) -> None:
    if cfg.run.mixed_precision is MixedPrecision.FP16 and model.y_encoder.config.model_type.startswith("gemma"):
        raise ValueError("run.mixed_precision=fp16 overflows Gemma-family Y-encoders; use bf16 (or no)")


def _latest_checkpoint(out: Path) -> Path | None:
    ckpts = sorted((out / "checkpoints").glob("step_*")) if (out / "checkpoints").is_dir() else []
    return next((c for c in reversed(ckpts) if (c / STATE_FILE).is_file()), None)


def _trim_metrics(out: Path, step: int) -> None:
    """Keep the metrics.jsonl rows up to `step` (the checkpoint resumed from; 0 = a fresh run), so a
    resumed run does not log steps twice; a half-written last line is dropped too."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def make_scheduler(optimizer, cfg: OptimConfig):
    """LR schedule with linear warmup: cosine decay to 0, constant (the paper's stages), or linear."""
    if cfg.schedule is Schedule.CONSTANT:
        return get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
    make = get_cosine_schedule_with_warmup if cfg.schedule is Schedule.COSINE else get_linear_schedule_with_warmup
    return make(optimizer, cfg.warmup_steps, cfg.max_steps)


def _record_training_inputs(model, dataset, cfg: TrainConfig) -> None:
    """Store the frame count and the queries of training in the model config, so pipelines,
    `vljepa eval` and `vljepa stream` use them by default (no silent train/inference mismatch)."""
    info = getattr(dataset, "info", None)  # a feature cache knows what it was made from
    model.config.num_frames = int((info or {}).get("num_frames") or cfg.data.num_frames)
    queries = info["query"] if info is not None else [r.query for r in dataset.records]
    ranked = [q for q, _ in Counter(queries).most_common(MAX_RECORDED_QUERIES)]
    model.config.training_queries = ranked
    model.config.default_query = ranked[0] if ranked else ""


def _check_batches(loader, n_clips: int, cfg: OptimConfig, processes: int) -> None:
    if len(loader) == 0:
        fits = n_clips // processes
        raise ValueError(
            f"the data set has {n_clips} clips, fewer than one global batch of optim.batch_size={cfg.batch_size} "
            f"per process x {processes} process(es) = {cfg.batch_size * processes}: set optim.batch_size <= "
            f"{fits} for {processes} process(es)" + (f" (or run {n_clips // cfg.batch_size} process(es))"
                                                       if n_clips >= cfg.batch_size else "") + ", or add data")


def _batch_inputs(batch: dict, device: torch.device) -> dict:
    key = "pixel_values" if "pixel_values" in batch else "visual"
    return {key: batch[key].to(device), "query": batch["query"], "target": batch["target"]}


def _log(accelerator: Accelerator, out: Path, step: int, sums: dict, count: int, history: list) -> dict:
    """Mean of each term over the micro-batches since the last log and over processes (so a
    multi-process run logs the global-batch loss); every process must call this."""
    keys = sorted(sums)
    means = accelerator.reduce(torch.tensor([sums[k] / max(count, 1) for k in keys],
                                            device=accelerator.device), reduction="mean")
    row = {"step": step, **dict(zip(keys, means.tolist()))}
    history.append(row)
    if accelerator.is_main_process:
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def _setup(cfg: TrainConfig):
    # torchrun on a CUDA-less machine: Accelerate only forms a gloo MULTI_CPU group when told cpu=True
    cpu_ddp = torchrun_on_cpu()
    accelerator = Accelerator(cpu=cpu_ddp, gradient_accumulation_steps=cfg.optim.grad_accum,
                              mixed_precision=cfg.run.mixed_precision.value,
                              # max_steps and warmup count optimizer steps: without this Accelerate steps
                              # the schedule once per process per step
                              step_scheduler_with_optimizer=False,
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    set_seed(cfg.run.seed)
    model = build_model(cfg.model)
    _check_precision(model, cfg)
    dataset = build_dataset(cfg.data, model)
    _record_training_inputs(model, dataset, cfg)
    loader = DataLoader(dataset, batch_size=cfg.optim.batch_size, shuffle=True, collate_fn=collate,
                        num_workers=cfg.data.num_workers, drop_last=len(dataset) >= cfg.optim.batch_size)
    o = cfg.optim
    optimizer = torch.optim.AdamW(param_groups(model, o), lr=o.lr, betas=tuple(o.betas))
    model.train()  # after param_groups: frozen parts (X, and Y at multiplier 0) go to eval mode
    scheduler = make_scheduler(optimizer, o)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    _check_batches(loader, len(dataset), o, accelerator.num_processes)
    return accelerator, model, optimizer, loader, scheduler


def _resume(cfg: TrainConfig, out: Path, accelerator, model, optimizer, scheduler) -> int:
    """Load the newest checkpoint (run.resume) and trim metrics.jsonl to it; returns the step (0 = fresh)."""
    step, ckpt = 0, _latest_checkpoint(out) if cfg.run.resume else None
    if ckpt is not None:
        step = load_state(ckpt, accelerator, model, optimizer, scheduler)
        accelerator.print(f"resumed from {ckpt} at step {step}")
    if accelerator.is_main_process:
        _trim_metrics(out, step)
    return step


def train(cfg: TrainConfig) -> dict:
    """Run the recipe; returns {"step", "model_dir", "history": [logged rows], "last": last row}."""
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator, model, optimizer, loader, scheduler = _setup(cfg)
    if accelerator.is_main_process:
        save_config(cfg, out / "config.yaml")
        atomic_write_json(out / "run_metadata.json", run_metadata())
    step = _resume(cfg, out, accelerator, model, optimizer, scheduler)
    history: list[dict] = []
    sums, count = defaultdict(float), 0
    bar = tqdm(total=cfg.optim.max_steps, initial=step, desc="vljepa train",
               disable=not (cfg.run.progress and accelerator.is_local_main_process))
    batches_done = step * cfg.optim.grad_accum
    while step < cfg.optim.max_steps:
        epoch, skip = divmod(batches_done, len(loader))
        loader.set_epoch(epoch)
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(model):
                losses = model(**_batch_inputs(batch, accelerator.device))
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()  # skipped by Accelerate on accumulation micro-steps
                if accelerator.sync_gradients:
                    scheduler.step()  # once per optimizer step, whatever the process count
                optimizer.zero_grad()
            batches_done += 1
            for k in LOGGED:
                if k in losses:
                    sums[k] += float(losses[k].detach())
            count += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % cfg.run.log_every == 0 or step == cfg.optim.max_steps:
                bar.set_postfix(loss=f"{_log(accelerator, out, step, sums, count, history)['loss']:.4f}")
                sums, count = defaultdict(float), 0
            if cfg.run.save_every and step % cfg.run.save_every == 0:
                save_state(out / "checkpoints" / f"step_{step:06d}", accelerator, model, optimizer, scheduler, step)
            if step >= cfg.optim.max_steps:
                break
    bar.close()
    save_state(out / "checkpoints" / f"step_{step:06d}", accelerator, model, optimizer, scheduler, step)
    model_dir = out / "model"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(model_dir)
        atomic_write_text(out / "DONE", f"{step}\n")
    accelerator.wait_for_everyone()
    return {"step": step, "model_dir": str(model_dir), "history": history, "last": history[-1] if history else {}}
