"""VL-JEPA losses: pure functions from (predicted, target) embeddings to a dict of terms.

Data flow: predictor output `pred (B, D)` and Y-encoder output `target (B, D)` -> both
L2-normalised -> (in distributed runs) the other processes' embeddings are gathered, the
local ones keeping their gradient -> bidirectional InfoNCE (DESIGN.md section 1):

    loss = (CE(video->text) + CE(text->video)) / 2, logits = scale * pred_n @ target_n.T

Identical target texts in a batch ("yes", "2" in SFT data) are positives, not negatives:
`target_ids` (one integer per distinct text, e.g. from `text_ids`) builds a multi-positive
mask and each row's loss is -log(probability mass on all its positives), which equals the
usual cross-entropy when every text is distinct.

Distributed: each process computes the loss for its *local rows* against the *global*
columns (open_clip's "local loss"). The mean of the per-process losses equals the loss of
one process on the global batch, and with `torch.distributed.nn.functional.all_gather`
(which sends gradients back to the owner) DDP's gradient averaging yields exactly the
gradient of the global-batch loss.

`cosine`, `l1`, `l2` are the paper's ablation baselines (no negatives).
"""

from __future__ import annotations

import hashlib
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vljepa.configuration import LossType


def text_ids(texts: list[str]) -> torch.Tensor:
    """One int64 per text, equal for equal texts across processes (stable hash, not Python's)."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(t.encode(), digest_size=7).digest(), "big")
                         for t in texts], dtype=torch.long)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather `x (B, ...)` along dim 0; gradients flow back to each process's own slice."""
    _, world = _world()
    if world == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still correct (sum backward)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather a tensor that needs no gradient (ids)."""
    _, world = _world()
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def _multi_positive_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(sum of softmax over positive columns). logits, positives: (B, M)."""
    log_all = torch.logsumexp(logits, dim=1)  # (B,)
    log_pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)  # (B,)
    return (log_all - log_pos).mean()


def info_nce(pred: torch.Tensor, target: torch.Tensor, logit_scale: torch.Tensor | float,
             target_ids: torch.Tensor | None = None, gather: bool = True) -> dict[str, torch.Tensor]:
    """Bidirectional InfoNCE on L2-normalised embeddings.

    pred, target: (B, D) local embeddings (un-normalised is fine). logit_scale: 1 / temperature
    (a tensor to learn it). target_ids: (B,) ints, equal ids are positives of each other;
    None = only the diagonal. gather: use every process's batch as negatives when distributed.
    Returns loss, loss_v2t, loss_t2v, temperature.
    """
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, D)")
    rank, world = _world()
    gather = gather and world > 1
    p = F.normalize(pred.float(), dim=-1)  # (B, D)
    t = F.normalize(target.float(), dim=-1)  # (B, D)
    b = p.shape[0]
    ids = target_ids.to(p.device) if target_ids is not None else torch.arange(b, device=p.device)
    offset = rank * b if gather else 0
    if target_ids is None and gather:
        ids = ids + offset  # diagonal ids must stay distinct across processes
    all_p = gather_with_grad(p) if gather else p  # (M, D), M = world * B
    all_t = gather_with_grad(t) if gather else t  # (M, D)
    all_ids = gather_no_grad(ids) if gather else ids  # (M,)
    if all_p.shape[0] != world * b and gather:
        raise ValueError("every process must use the same local batch size for gathered InfoNCE")
    positives = ids[:, None] == all_ids[None, :]  # (B, M)
    scale = logit_scale if isinstance(logit_scale, torch.Tensor) else torch.tensor(float(logit_scale))
    scale = scale.float().to(p.device)
    with torch.autocast(device_type=p.device.type, enabled=False):  # logits in fp32 even under bf16 autocast
        loss_v2t = _multi_positive_ce(scale * p @ all_t.T, positives)  # local videos vs all texts
        loss_t2v = _multi_positive_ce(scale * t @ all_p.T, positives)  # local texts vs all videos
    return {"loss": (loss_v2t + loss_t2v) / 2, "loss_v2t": loss_v2t, "loss_t2v": loss_t2v,
            "temperature": (1.0 / scale).detach()}


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: LossType | str) -> dict[str, torch.Tensor]:
    """The paper's ablation losses on L2-normalised embeddings: cosine, l1 or l2 (MSE)."""
    kind = LossType(kind)
    p = F.normalize(pred.float(), dim=-1)  # (B, D)
    t = F.normalize(target.float(), dim=-1)  # (B, D)
    if kind is LossType.COSINE:
        loss = (1 - (p * t).sum(-1)).mean()
    elif kind is LossType.L1:
        loss = (p - t).abs().mean()
    elif kind is LossType.L2:
        loss = (p - t).pow(2).mean()
    else:
        raise ValueError(f"regression_loss got {kind.value!r}; use info_nce for InfoNCE")
    return {"loss": loss, f"loss_{kind.value}": loss}


def vljepa_loss(pred: torch.Tensor, target: torch.Tensor, kind: LossType | str,
                logit_scale: torch.Tensor | float, target_ids: torch.Tensor | None = None,
                gather: bool = True) -> dict[str, torch.Tensor]:
    """Dispatch on the configured loss; always returns a dict with 'loss' plus its terms."""
    if LossType(kind) is LossType.INFONCE:
        return info_nce(pred, target, logit_scale, target_ids=target_ids, gather=gather)
    return regression_loss(pred, target, kind)
