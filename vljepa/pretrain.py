"""Self-supervised V-JEPA pretraining of a (tiny) V-JEPA 2 X-encoder on unlabeled clips.

The JEPA way (V-JEPA, Bardes et al. 2024; V-JEPA 2): predict, in representation space, the
features of masked spatio-temporal *tubes* of a clip from the visible rest of it.

    pixel_values (B, T, C, H, W)
      -> patch embeddings (B, N, D) --keep context tokens--> (B, Nc, D)
      -> context encoder layers (RoPE positions = the kept token ids) -> (B, Nc, D)
      -> V-JEPA 2 predictor (context + mask tokens at the target ids) -> (B, Nt, D)   = prediction
    pixel_values -> EMA target encoder (full clip, no grad) -> layer_norm -> gather target ids
      -> (B, Nt, D)                                                                  = target
    loss = L1(prediction, target); AdamW on context encoder + predictor; target <- EMA(context).

The context encoder sees only the context tokens (as in V-JEPA, not the full clip that
`VJEPA2Model.forward(context_mask=...)` would give it, which would leak the targets). After
pretraining, the EMA *target* encoder is the one handed to VL-JEPA (V-JEPA evaluates the
target encoder) and is frozen there. Training is time-boxed (`time_budget_s`) for the CPU demo.

    python -m vljepa.demo   # calls pretrain_x_encoder(model.x_encoder, clips, cfg)
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import VJEPA2Model
from transformers.models.vjepa2.modeling_vjepa2 import apply_masks


@dataclass
class PretrainConfig:
    max_steps: int = 1000  # optimizer steps (upper bound; the time budget usually stops first)
    time_budget_s: float = 90.0  # wall-clock box for the loop; 0 = no box
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.04
    ema_start: float = 0.99  # EMA momentum of the target encoder, raised linearly to ema_end
    ema_end: float = 0.999
    blocks: int = 2  # spatial blocks per clip, each extended through all time (a tube)
    block_scale: float = 0.25  # fraction of the spatial grid covered by one block
    seed: int = 0


def token_grid(config) -> tuple[int, int, int]:
    """(T', H', W') token grid of a V-JEPA 2 config (tubelets x patches)."""
    side = config.crop_size // config.patch_size
    return config.frames_per_clip // config.tubelet_size, side, side


def tube_masks(grid: tuple[int, int, int], batch: int, cfg: PretrainConfig,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Context and target token ids, each (B, K): a union of `cfg.blocks` random spatial blocks,
    repeated through time, is the target; the rest is the context. Trimmed to the smallest count
    in the batch so that every row has the same length (as the V-JEPA collator does)."""
    t, h, w = grid
    side_h = max(1, round(h * cfg.block_scale ** 0.5))
    side_w = max(1, round(w * cfg.block_scale ** 0.5))
    ctx, tgt = [], []
    for _ in range(batch):
        spatial = torch.zeros(h, w, dtype=torch.bool)
        for _ in range(cfg.blocks):
            top = int(torch.randint(0, h - side_h + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - side_w + 1, (1,), generator=gen))
            spatial[top:top + side_h, left:left + side_w] = True
        masked = spatial.flatten().repeat(t)  # (T'*H'*W',) token order is (t, h, w)
        tgt.append(masked.nonzero().flatten())
        ctx.append((~masked).nonzero().flatten())
    n_ctx, n_tgt = min(len(c) for c in ctx), min(len(x) for x in tgt)
    return torch.stack([c[:n_ctx] for c in ctx]), torch.stack([x[:n_tgt] for x in tgt])  # (B, Kc), (B, Kt)


def encode_context(model: VJEPA2Model, pixel_values: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Context encoder on the visible tokens only: (B, T, C, H, W), ids (B, Kc) -> (B, Kc, D)."""
    x = model.encoder.embeddings(pixel_values)  # (B, N, D)
    x = apply_masks(x, [context])  # (B, Kc, D)
    for layer in model.encoder.layer:
        x = layer(x, context)[0]  # RoPE positions = original token ids
    return model.encoder.layernorm(x)


def jepa_loss(online: VJEPA2Model, target_encoder: VJEPA2Model, pixel_values: torch.Tensor,
              context: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 between predicted and EMA-target features of the target tubes; a dict like every loss."""
    with torch.no_grad():
        full = target_encoder.encoder(pixel_values_videos=pixel_values).last_hidden_state  # (B, N, D)
        y = apply_masks(F.layer_norm(full, full.shape[-1:]), [target])  # (B, Kt, D)
    z = encode_context(online, pixel_values, context)  # (B, Kc, D)
    # the predictor gathers context tokens from a full-length sequence: scatter them back
    scattered = z.new_zeros(z.shape[0], full.shape[1], z.shape[2])  # (B, N, D)
    scattered.scatter_(1, context[..., None].expand_as(z), z)
    pred = online.predictor(encoder_hidden_states=scattered, context_mask=[context],
                            target_mask=[target]).last_hidden_state  # (B, Kt, D)
    loss = F.l1_loss(pred, y)
    return {"loss": loss, "target_std": y.std(dim=1).mean().detach(), "pred_std": pred.std(dim=1).mean().detach()}


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online (no autograd involved)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)


def pretrain_x_encoder(encoder: VJEPA2Model, pixel_values: torch.Tensor,
                       cfg: PretrainConfig) -> tuple[VJEPA2Model, list[dict]]:
    """Pretrain `encoder` (updated in place as the online/context encoder) on preprocessed clips
    (n, T, C, H, W); returns (the EMA target encoder, frozen and in eval mode, history rows)."""
    if not isinstance(encoder, VJEPA2Model):
        raise TypeError(f"V-JEPA pretraining needs a transformers.VJEPA2Model X-encoder, got "
                        f"{type(encoder).__name__}; build the model with tiny_x_kind='vjepa2'")
    gen = torch.Generator().manual_seed(cfg.seed)
    encoder.requires_grad_(True).train()
    target_encoder = copy.deepcopy(encoder).requires_grad_(False).eval()
    params = [p for n, p in encoder.named_parameters() if "pooler" not in n]  # the pooler gets no gradient
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    grid, n = token_grid(encoder.config), pixel_values.shape[0]
    history, t0 = [], time.time()
    for step in (bar := tqdm(range(1, cfg.max_steps + 1), desc="V-JEPA pretrain")):
        lr = cfg.lr * min(1.0, step / 20)  # short warmup
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
        context, target = tube_masks(grid, len(idx), cfg, gen)
        out = jepa_loss(encoder, target_encoder, pixel_values[idx], context, target)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        frac = min(1.0, (time.time() - t0) / cfg.time_budget_s) if cfg.time_budget_s else step / cfg.max_steps
        ema_update(target_encoder, encoder, cfg.ema_start + (cfg.ema_end - cfg.ema_start) * frac)
        history.append({"step": step, **{k: v.item() for k, v in out.items()}, "seconds": time.time() - t0})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        if cfg.time_budget_s and time.time() - t0 >= cfg.time_budget_s:
            break
    encoder.requires_grad_(False).eval()
    return target_encoder, history


def install_x_encoder(model, encoder: VJEPA2Model) -> None:
    """Copy pretrained X-encoder weights into a VLJepaModel and freeze it there (paper: frozen)."""
    model.x_encoder.load_state_dict(encoder.state_dict())
    model.set_x_encoder_trainable(False)
