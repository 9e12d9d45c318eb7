"""Self-supervised V-JEPA pretraining of a V-JEPA 2 X-encoder (any size; tiny on a CPU).

V-JEPA (Bardes et al. 2024) / V-JEPA 2 (Assran et al. 2025): predict, in representation space,
the features of masked spatio-temporal blocks of a clip from the visible rest of it.

    pixel_values (B, T, C, H, W)
      -> patch embeddings (B, N, D), repeated for S mask types -> keep context ids -> (S*B, Kc, D)
      -> context encoder layers, RoPE at the kept ids, padded slots masked out -> (S*B, Kc, D)
      -> predictor: Linear(D->P) context ; mask token of the mask type at the target ids
         -> pred layers (RoPE, padding mask) -> LayerNorm -> Linear(P->D)      = pred (S*B, Kt, D)
    pixel_values -> EMA target encoder (full clip, no grad) -> layer_norm over D -> gather target ids
                                                                              = target (S*B, Kt, D)
    loss = mean over mask types of the masked-mean |pred - target| (L1, loss_exp 1)
           [+ optional variance / covariance terms on the pooled context features; off, as in V-JEPA]
    AdamW (no decay on biases / norms) on context encoder + predictor; lr warmup + cosine, weight
    decay cosine, EMA momentum linear by optimizer step (V-JEPA 0.998 -> 1.0; V-JEPA 2: 0.99925).

Masks come from vljepa.masking (multi-block, padded, never trimmed to early frames), the padded
forward passes from vljepa.pretrain_forward, data from vljepa.pretrain_data, collapse monitors from
vljepa.pretrain_monitors. The context encoder only
sees context tokens (the full clip would leak the targets). The EMA *target* encoder is what
V-JEPA evaluates, and what is saved (with the trained predictor) as a plain Hugging Face
`VJEPA2Model` folder that `vljepa.builders.load_x_encoder` / `build_vljepa(x_encoder=...)` load.

    python -m vljepa.pretrain --config recipes/vljepa/pretrain_tiny_cpu.yaml [--set optim.max_steps=100]
    vljepa pretrain --config recipes/vljepa/pretrain_tiny_cpu.yaml
"""

from __future__ import annotations

import argparse
import copy
import enum
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import VJEPA2Model

from jepa_common.config import ConfigError, config_help, load_config, save_config, to_dict
from jepa_common.io import atomic_write_json, run_metadata
from vljepa.masking import MaskBatch, MaskSpec, multiblock_masks, paper_mask_specs
from vljepa.pretrain_data import PretrainDataConfig, pretrain_clips
from vljepa.pretrain_forward import encode_context, predict_targets, target_features
from vljepa.pretrain_monitors import Monitor, MonitorConfig, plot_curves
from vljepa.processing import VideoTransform

ENCODER_DIR = "x_encoder"
RECORD_FILE = "pretraining.json"


@dataclass
class EncoderConfig:
    init: str | None = None  # VJEPA2Model folder to start from; None = the demo's random tiny encoder
    crop_size: int = 32  # tiny encoder (vljepa.builders.tiny_x_encoder_config): 8 px patches, tubelet 2
    num_frames: int = 8
    seed: int = 0  # init seed of the tiny encoder (= ModelConfig.seed of the random demo arm)
    pred_hidden_size: int = 32  # V-JEPA: narrow (384 for a 1024-wide ViT-L) ...
    pred_layers: int = 4  # ... but deep (12)
    pred_heads: int = 4
    pred_mlp_ratio: float = 4.0


@dataclass
class PretrainOptim:
    batch_size: int = 32
    max_steps: int = 1000  # optimizer steps; every schedule runs over max_steps * schedule_scale
    schedule_scale: float = 1.25  # V-JEPA's ipe_scale: schedules end beyond the last step
    start_lr: float = 2e-4
    lr: float = 6.25e-4  # V-JEPA ViT-L
    final_lr: float = 1e-6
    warmup_steps: int = 40
    weight_decay: float = 0.04  # cosine from weight_decay to final_weight_decay (V-JEPA: 0.04 -> 0.4)
    final_weight_decay: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 10.0  # 0 = off
    ema: list[float] = field(default_factory=lambda: [0.998, 1.0])  # V-JEPA 2: [0.99925, 0.99925]

    def __post_init__(self) -> None:
        if self.batch_size < 1:  # would fail deep in the masking with "max() arg is an empty sequence"
            raise ValueError(f"batch_size={self.batch_size}: need at least one clip per step")


class RegFeatures(str, enum.Enum):
    """Features the optional variance / covariance terms are computed on (context encoder outputs)."""

    POOLED = "pooled"  # one vector per clip (mean of its context tokens): spread across clips
    TOKENS = "tokens"  # every context token: spread across tokens and dimensions (no dimensional collapse)


@dataclass
class PretrainLoss:
    loss_exp: float = 1.0  # |pred - target| ** loss_exp / loss_exp; 1 = L1 (V-JEPA)
    variance_weight: float = 0.0  # VICReg hinge on the per-dimension std (below variance_target); 0 = off (V-JEPA)
    covariance_weight: float = 0.0  # VICReg off-diagonal covariance penalty; 0 = off (V-JEPA)
    variance_target: float = 1.0  # the hinge's std target (VICReg's gamma)
    reg_features: RegFeatures = RegFeatures.POOLED  # what the two terms see


@dataclass
class PretrainRun:
    output_dir: str = "runs/vjepa_pretrain"
    time_budget_s: float = 0.0  # safety box on the loop's wall clock; 0 = none (schedules are by step)
    seed: int = 0  # batch and mask sampling
    threads: int = 1  # torch CPU threads
    progress: bool = True


@dataclass
class PretrainConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    masks: list[MaskSpec] = field(default_factory=paper_mask_specs)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    optim: PretrainOptim = field(default_factory=PretrainOptim)
    loss: PretrainLoss = field(default_factory=PretrainLoss)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    run: PretrainRun = field(default_factory=PretrainRun)


# ----------------------------------------------------------------------------- schedules (by step)
def schedule_length(cfg: PretrainOptim) -> int:
    return max(1, int(cfg.max_steps * cfg.schedule_scale))


def lr_at(step: int, cfg: PretrainOptim) -> float:
    """Linear warmup start_lr -> lr, then cosine to final_lr (V-JEPA WarmupCosineSchedule)."""
    if step < cfg.warmup_steps:
        return cfg.start_lr + step / max(1, cfg.warmup_steps) * (cfg.lr - cfg.start_lr)
    progress = (step - cfg.warmup_steps) / max(1, schedule_length(cfg) - cfg.warmup_steps)
    return max(cfg.final_lr, cfg.final_lr + (cfg.lr - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


def weight_decay_at(step: int, cfg: PretrainOptim) -> float:
    """Cosine from weight_decay to final_weight_decay (V-JEPA CosineWDSchedule)."""
    progress = min(1.0, step / schedule_length(cfg))
    wd0, wd1 = cfg.weight_decay, cfg.final_weight_decay
    return wd1 + (wd0 - wd1) * 0.5 * (1 + math.cos(math.pi * progress))


def momentum_at(step: int, cfg: PretrainOptim) -> float:
    """EMA momentum, linear from ema[0] to ema[1] over the optimizer steps of the schedule."""
    m0, m1 = cfg.ema
    return m0 + (m1 - m0) * min(1.0, step / schedule_length(cfg))


# ----------------------------------------------------------------------------- losses (pure)
def jepa_loss(pred: torch.Tensor, target: torch.Tensor, masks: MaskBatch, loss_exp: float = 1.0
              ) -> dict[str, torch.Tensor]:
    """Masked-mean |pred - target|^p / p per mask type, averaged over types (V-JEPA loss_fn)."""
    err = ((pred - target).abs() ** loss_exp / loss_exp).mean(-1)  # (R, Kt)
    weight = masks.target_valid.to(err.dtype)
    out = {}
    for s in masks.spec.unique().tolist():
        rows = masks.spec == s
        out[f"loss_mask{s}"] = (err[rows] * weight[rows]).sum() / weight[rows].sum()
    out["loss_jepa"] = torch.stack(list(out.values())).mean()
    return out


def variance_covariance(features: torch.Tensor, target_std: float = 1.0, eps: float = 1e-4
                        ) -> dict[str, torch.Tensor]:
    """VICReg terms on (n, D): hinge of the per-dim std at `target_std`, squared off-diagonal covariance / D."""
    x = features - features.mean(dim=0)
    std = torch.sqrt(x.var(dim=0) + eps)  # (D,)
    cov = x.T @ x / max(1, len(x) - 1)  # (D, D)
    off = cov - torch.diag(torch.diag(cov))
    return {"variance": F.relu(target_std - std).mean(), "covariance": off.pow(2).sum() / x.shape[1]}


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(R, K, D), (R, K) bool -> mean over valid slots (R, D)."""
    w = valid[..., None].to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1)


def pretrain_loss(online: VJEPA2Model, target: VJEPA2Model, pixel_values: torch.Tensor, masks: MaskBatch,
                  cfg: PretrainLoss) -> dict[str, torch.Tensor]:
    """Every term of one step: loss (the total), loss_jepa, loss_mask<i>, variance, covariance, stds."""
    y = target_features(target, pixel_values, masks)  # (R, Kt, D)
    z = encode_context(online, pixel_values, masks)  # (R, Kc, D)
    pred = predict_targets(online.predictor, z, masks, math.prod(token_grid(online.config)))  # (R, Kt, D)
    out = jepa_loss(pred, y, masks, cfg.loss_exp)
    feats = masked_mean(z, masks.context_valid) if cfg.reg_features is RegFeatures.POOLED else z[masks.context_valid]
    out.update(variance_covariance(feats, cfg.variance_target))  # (R, D) or (valid tokens, D)
    out["loss"] = (out["loss_jepa"] + cfg.variance_weight * out["variance"]
                   + cfg.covariance_weight * out["covariance"])
    out["pred_std"] = masked_mean(pred, masks.target_valid).std(0).mean().detach()  # across clips
    return out


# ----------------------------------------------------------------------------- model and optimizer
def token_grid(config) -> tuple[int, int, int]:
    """(T', H', W') token grid of a V-JEPA 2 config (tubelets x patches)."""
    side = config.crop_size // config.patch_size
    return config.frames_per_clip // config.tubelet_size, side, side


def build_encoder(cfg: EncoderConfig, num_mask_tokens: int) -> VJEPA2Model:
    """The model to pretrain: `cfg.init`'s encoder, or the random tiny encoder that
    `build_tiny_vljepa(seed=cfg.seed)` builds (same weights), with a predictor of the configured
    depth / width and one mask token per mask type."""
    from vljepa.builders import tiny_x_encoder_config

    if cfg.init:
        base = VJEPA2Model.from_pretrained(cfg.init)
    else:
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            base = VJEPA2Model(tiny_x_encoder_config("vjepa2", cfg.crop_size, cfg.num_frames))
    config = copy.deepcopy(base.config)
    config.pred_hidden_size, config.pred_num_hidden_layers = cfg.pred_hidden_size, cfg.pred_layers
    config.pred_num_attention_heads, config.pred_mlp_ratio = cfg.pred_heads, cfg.pred_mlp_ratio
    config.pred_num_mask_tokens = num_mask_tokens
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 1)
        model = VJEPA2Model(config)
    model.encoder.load_state_dict(base.encoder.state_dict())
    if base.config.to_dict() == config.to_dict():  # resuming a pretrained one: keep its predictor too
        model.predictor.load_state_dict(base.predictor.state_dict())
    return model


def param_groups(model: nn.Module) -> list[dict]:
    """V-JEPA's AdamW groups: weight decay on matrices, none on biases and 1-D (norm) parameters."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if name.endswith("bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay, "decay": True}, {"params": plain, "weight_decay": 0.0, "decay": False}]


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online (no autograd involved)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


def train_step(online: VJEPA2Model, target: VJEPA2Model, opt: torch.optim.Optimizer, pixel_values: torch.Tensor,
               masks: MaskBatch, step: int, cfg: PretrainConfig) -> dict[str, float]:
    """One optimizer step (1-based `step`) and the EMA update of the target encoder; the logged row."""
    lr, wd = lr_at(step, cfg.optim), weight_decay_at(step, cfg.optim)
    for group in opt.param_groups:
        group["lr"] = lr
        if group["decay"]:
            group["weight_decay"] = wd
    out = pretrain_loss(online, target, pixel_values, masks, cfg.loss)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    if cfg.optim.clip_grad > 0:  # V-JEPA clips encoder and predictor separately
        for part in (online.encoder, online.predictor):
            torch.nn.utils.clip_grad_norm_(part.parameters(), cfg.optim.clip_grad)
    opt.step()
    momentum = momentum_at(step - 1, cfg.optim)
    ema_update(target.encoder, online.encoder, momentum)
    return {**{k: float(v.detach()) for k, v in out.items()}, "lr": lr, "weight_decay": wd, "momentum": momentum,
            "target_fraction": masks.target_fraction()}


def pretrain_x_encoder(encoder: VJEPA2Model, pixel_values: torch.Tensor, cfg: PretrainConfig,
                       monitor: Monitor | None = None, on_row: Callable[[str, dict], None] | None = None,
                       ) -> tuple[VJEPA2Model, list[dict], list[dict]]:
    """Pretrain `encoder` (updated in place as the online encoder) on preprocessed clips
    (n, T, C, H, W). Returns (the EMA target encoder carrying the trained predictor, frozen, in eval
    mode; per-step history rows; monitor rows at step 0, every `monitor.every` steps and the end).
    `on_row(kind, row)` sees every row as it is made (kind "metrics" or "monitors")."""
    if not isinstance(encoder, VJEPA2Model):
        raise TypeError(f"V-JEPA pretraining needs a transformers.VJEPA2Model X-encoder, got "
                        f"{type(encoder).__name__}; build the model with tiny_x_kind='vjepa2'")
    online = encoder.requires_grad_(True).train()
    target = copy.deepcopy(online).requires_grad_(False).eval()
    opt = torch.optim.AdamW(param_groups(online), lr=cfg.optim.start_lr, betas=tuple(cfg.optim.betas))
    gen = torch.Generator().manual_seed(cfg.run.seed)
    grid, n, every = token_grid(online.config), len(pixel_values), cfg.monitor.every
    history, monitors, t0, cpu0 = [], [], time.time(), time.process_time()

    def record(kind: str, rows: list[dict], row: dict) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(kind, row)

    if monitor is not None:
        record("monitors", monitors, {"step": 0, "seconds": 0.0, **monitor(target)})
    from tqdm.auto import tqdm

    bar = tqdm(range(1, cfg.optim.max_steps + 1), desc="V-JEPA pretrain", disable=not cfg.run.progress)
    for step in bar:
        idx = torch.randint(0, n, (min(cfg.optim.batch_size, n),), generator=gen)
        masks = multiblock_masks(grid, len(idx), cfg.masks, gen)
        row = {"step": step, **train_step(online, target, opt, pixel_values[idx], masks, step, cfg)}
        record("metrics", history, {**row, "seconds": time.time() - t0, "cpu_s": time.process_time() - cpu0})
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        stop = bool(cfg.run.time_budget_s) and time.time() - t0 >= cfg.run.time_budget_s
        if monitor is not None and ((every and step % every == 0) or step == cfg.optim.max_steps or stop):
            record("monitors", monitors, {"step": step, "seconds": time.time() - t0, **monitor(target)})
        if stop:
            break
    online.requires_grad_(False).eval()
    target.predictor.load_state_dict(online.predictor.state_dict())  # save the trained predictor with it
    return target, history, monitors


def install_x_encoder(model, encoder: VJEPA2Model, name_or_path: str | None = None) -> None:
    """Make `encoder` the frozen X-encoder of a VLJepaModel (config updated, so save/load round-trips);
    `name_or_path` = where it can be reloaded from (None: its weights are saved with the model)."""
    model.x_encoder = copy.deepcopy(encoder)
    model.config.x_encoder = encoder.config.to_dict()
    model.config.x_encoder_name_or_path = name_or_path
    model.set_x_encoder_trainable(False)


# ----------------------------------------------------------------------------- recipe entry point
def _appender(out: Path) -> Callable[[str, dict], None]:
    """Rows go to out/<kind>.jsonl as they are made, so a long run can be watched (and its log kept)."""
    for kind in ("metrics", "monitors"):
        (out / f"{kind}.jsonl").write_text("")

    def append(kind: str, row: dict) -> None:
        with open(out / f"{kind}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    return append


def pretrain(cfg: PretrainConfig) -> dict:
    """Build the encoder and data of a recipe, pretrain, save `output_dir/x_encoder` (a VJEPA2Model
    folder carrying its own `pretraining.json`), metrics.jsonl, monitors.jsonl, curves.png,
    result.json and the resolved config.yaml."""
    torch.set_num_threads(cfg.run.threads)
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    encoder = build_encoder(cfg.encoder, len(cfg.masks))
    transform = VideoTransform.for_encoder(encoder.config.to_dict())
    t0 = time.time()
    clips = pretrain_clips(cfg.data, encoder.config.frames_per_clip, transform)  # (n, T, 3, s, s)
    monitor = Monitor(cfg.monitor, transform, encoder.config.frames_per_clip)
    data_s, t0, cpu0 = time.time() - t0, time.time(), time.process_time()
    target, history, monitors = pretrain_x_encoder(encoder, clips, cfg, monitor, on_row=_appender(out))
    train_s, train_cpu_s = time.time() - t0, time.process_time() - cpu0
    target.save_pretrained(out / ENCODER_DIR)
    summary = {"encoder_dir": str(out / ENCODER_DIR), "steps": len(history), "n_clips": len(clips),
               "data_s": data_s, "train_s": train_s, "train_cpu_s": train_cpu_s, "first": monitors[0],
               "last": monitors[-1], "final_loss": history[-1]["loss"] if history else None}
    meta = run_metadata()  # git subprocesses + package versions: gather once for both files
    atomic_write_json(out / "result.json", {**summary, **meta})
    thinned = history[::10] + ([history[-1]] if history and (len(history) - 1) % 10 else [])  # last row once
    atomic_write_json(out / ENCODER_DIR / RECORD_FILE, {  # provenance that travels with the checkpoint
        "summary": summary, "config": to_dict(cfg), "history": thinned, "monitors": monitors, **meta})
    plot_curves(history, monitors, out / "curves.png")
    return summary


def pretraining_record(encoder_dir: str | Path) -> dict:
    """The `pretraining.json` that `pretrain` puts in an x_encoder folder: path, steps, train_s,
    train_cpu_s, history (every 10th step), monitors; empty fields for a folder made elsewhere."""
    path = Path(encoder_dir) / RECORD_FILE
    rec = json.loads(path.read_text()) if path.is_file() else {"summary": {}, "history": [], "monitors": []}
    summary = rec["summary"]
    return {"path": str(encoder_dir), "steps": summary.get("steps", 0), "train_s": summary.get("train_s"),
            "train_cpu_s": summary.get("train_cpu_s"), "history": rec["history"], "monitors": rec["monitors"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="vljepa pretrain", description="V-JEPA self-supervised X-encoder pretraining.",
                                epilog=config_help(PretrainConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML recipe, e.g. recipes/vljepa/pretrain_tiny_cpu.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set optim.max_steps=100 (repeatable)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(PretrainConfig, args.config, args.overrides)
    except ConfigError as e:  # a one-line usage error (exit 2), as `vljepa train` gives
        p.error(str(e))
    summary = pretrain(cfg)
    print(json.dumps({k: summary[k] for k in ("encoder_dir", "steps", "train_s", "first", "last")}))


if __name__ == "__main__":
    main()
