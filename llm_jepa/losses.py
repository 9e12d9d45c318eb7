"""Pure loss functions of LLM-JEPA: the JEPA distances and the token-level LM loss.

Data flow: `llm_jepa.forward.jepa_forward` gathers hidden states and calls these; every
function returns a dict of tensors so each term can be logged separately. Sums are returned
next to means so that gradient accumulation and multi-process training can normalise by the
number of tokens / pairs of the whole optimizer step (see `jepa_forward`'s `lm_norm`, `jepa_norm`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llm_jepa.config import Distance


def lm_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summed next-token cross-entropy over the given positions.

    logits: (N, V) at the N labelled positions; targets: (N,) token ids.
    """
    total = F.cross_entropy(logits.float(), targets, reduction="sum")  # ()
    return {"lm_sum": total, "n_tokens": torch.tensor(targets.numel(), device=targets.device)}


def jepa_distance(pred: torch.Tensor, target: torch.Tensor, distance: Distance,
                  temperature: float = 0.07) -> dict[str, torch.Tensor]:
    """Per-pair JEPA loss between predicted Enc(Text) and target Enc(Code) embeddings.

    pred, target: (B, D). Returns `jepa_sum` (summed over pairs), `jepa_loss` (mean) and
    `cos_sim` (mean cosine similarity, always reported). InfoNCE treats row i of `target`
    as the positive class of row i of `pred`, the other rows as negatives (reference: t=0.07).
    """
    pred, target = pred.float(), target.float()
    cos = F.cosine_similarity(pred, target, dim=-1)  # (B,)
    if distance is Distance.COSINE:
        per_pair = 1.0 - cos
    elif distance is Distance.L2:
        per_pair = torch.linalg.vector_norm(pred - target, dim=-1)
    elif distance is Distance.MSE:
        per_pair = (pred - target).pow(2).mean(dim=-1)
    elif distance is Distance.INFONCE:
        logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / temperature  # (B, B)
        labels = torch.arange(pred.shape[0], device=pred.device)
        per_pair = F.cross_entropy(logits, labels, reduction="none")
    else:  # pragma: no cover - enum is closed
        raise ValueError(f"unknown distance {distance!r}")
    return {"jepa_sum": per_pair.sum(), "jepa_loss": per_pair.mean(), "cos_sim": cos.mean().detach(),
            "n_pairs": torch.tensor(pred.shape[0], device=pred.device)}


def infonce_scope_warning(distance: Distance, grad_accum: int, processes: int) -> str | None:
    """InfoNCE's negatives are the other pairs of the same micro-batch on the same process: accumulation
    and extra processes add steps, not negatives, so 4 x 4 accumulation is NOT batch 16 for it (the
    pairwise distances cosine / l2 / mse are exact). Returns the warning to log, or None."""
    if distance is not Distance.INFONCE or grad_accum * processes == 1:
        return None
    return (f"jepa.distance=infonce takes its negatives from each micro-batch of each process (batch_size), not "
            f"from the {grad_accum} accumulated micro-batches x {processes} processes of a step: raise "
            "train.batch_size for more negatives")


def combine(lm_sum: torch.Tensor, lm_norm: torch.Tensor | float, jepa_sum: torch.Tensor | None,
            jepa_norm: torch.Tensor | float, gamma: float, lam: float) -> torch.Tensor:
    """`gamma * lm_sum / lm_norm + lam * jepa_sum / jepa_norm` (the JEPA part absent when None)."""
    loss = gamma * lm_sum / lm_norm
    if jepa_sum is not None and lam != 0.0:
        loss = loss + lam * jepa_sum / jepa_norm
    return loss
