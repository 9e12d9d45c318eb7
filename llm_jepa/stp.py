"""Semantic Tube Prediction (STP; Huang, LeCun, Balestriero, arXiv:2602.22617): a single-pass JEPA term.

Hypothesis: the hidden-state trajectory of a conversation is locally straight, so the displacement
across a random sub-span of the content points the same way as the displacement across the rest.
No second view and no extra forward: it reads the last-layer hidden states of the ordinary LM pass.

Data flow: `JepaCollator` (jepa.objective = stp) puts `content_spans` (B, 4) = [user start, user end,
assistant start, assistant end) token indices of the row into the batch -> once per micro-batch
`add_spans` draws `stp_offsets` (B, n, 2) = [s, t) offsets into the concatenated content (user
content followed by assistant content; the template tokens between them are skipped) from a
generator per row keyed by (seed, step, rank, row position in the step) (`span_uniforms`: the
same under gradient accumulation and after a resume) and their length weights `stp_weight` (B, n)
-> `jepa_forward` calls `stp_terms(hidden, batch, cfg)` on the last-layer states (B, T, D):

    D(o)  = displacement from the content start to offset o, each piece inside its own turn
            (D(o) = h[us-1+o] - h[us-1] in the user turn; after it, h[ue-1] - h[us-1] + h[as-1+o-Lu] - h[as-1])
    patch = D(t) - D(s)                      = h(t-1) - h(s-1) across the span
    rest  = D(s) + (D(L) - D(t))             = before + after
    loss  = sum_w w * (1 - cos(P(rest), patch)) / sum_w w       (P: optional linear predictor)

Variants (the authors' `stp.py` ablations): `span` (the method; `--linear=random_span`), `e2e` (user
displacement vs assistant displacement; `--linear=e2e`), `curvature` (mean turning angle between
consecutive steps inside each turn; `--linear=curvature`). Length weights `cosine_like` 2rp/(r^2+p^2)
and `jaccard_like` 1 - |r-p|/(r+p) (r, p: rest and patch lengths); `spans` > 1 draws several spans per
sequence. The loss is vectorised over the batch and the spans (gathers, no loop per token or row).
Training entry points: `llm-jepa train --config ... --set jepa.objective=stp --set jepa.lam=0.02`.

    cfg = load_llm_jepa_config("recipes/llm_jepa/tiny_cpu.yaml", ["jepa.objective=stp", "jepa.lam=0.02"])
    batch = add_spans(JepaCollator(tok, cfg)(records), cfg.stp, seed=0, step=step)
    out = jepa_forward(model, batch, cfg)   # loss = lm + 0.02 * stp; jepa_loss, cos_sim logged
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PREDICTOR_FILE = "stp_predictor.pt"


class StpVariant(enum.Enum):
    SPAN = "span"  # the paper's STP: random span vs the rest of the content
    E2E = "e2e"  # ablation "two view": user-content displacement vs assistant-content displacement
    CURVATURE = "curvature"  # ablation: mean turning angle of consecutive steps, inside each turn


class LengthWeight(enum.Enum):
    NONE = "none"
    COSINE_LIKE = "cosine_like"  # 2 r p / (r^2 + p^2)
    JACCARD_LIKE = "jaccard_like"  # 1 - |r - p| / (r + p)


class SpanSampler(enum.Enum):
    START_THEN_END = "start_then_end"  # authors' default: s ~ U{0..L-1}, t ~ U{s+1..L}, the full span redrawn
    UNIFORM = "uniform"  # every proper sub-span [s, t) equally likely (authors' --random_span_uniform)


@dataclass
class StpConfig:
    """Options of `jepa.objective: stp` (the weight is `jepa.lam`; the paper's NL-RX value is 0.02)."""

    variant: StpVariant = StpVariant.SPAN
    spans: int = 1  # spans drawn per sequence (authors' --random_span_times)
    length_weight: LengthWeight = LengthWeight.NONE
    sampler: SpanSampler = SpanSampler.START_THEN_END
    predictor: bool = False  # a learned linear map (no bias, Xavier init) applied to `rest` / the user displacement

    def __post_init__(self) -> None:
        if self.spans < 1:
            raise ValueError(f"stp.spans={self.spans}; draw at least one span per sequence")


# ---- sampling --------------------------------------------------------------------------------------
def span_uniforms(n_rows: int, n_spans: int, seed: int, step: int, rank: int = 0, first_row: int = 0
                  ) -> torch.Tensor:
    """(n_rows, 2, n_spans) float64 uniforms; row r is keyed by (seed, step, rank, first_row + r), its
    position in the optimizer step. So a record gets the same spans whether its step runs as one batch
    or as accumulated micro-batches, and after a resume, with no generator state to checkpoint."""
    out = torch.empty(n_rows, 2, n_spans, dtype=torch.float64)
    for r in range(n_rows):  # one tiny generator per row (a row loop, not a token loop)
        key = np.random.SeedSequence([seed, step, rank, first_row + r]).generate_state(2, dtype=np.uint32)
        gen = torch.Generator().manual_seed(int(key[0]) << 32 | int(key[1]))
        out[r] = torch.rand(2, n_spans, generator=gen, dtype=torch.float64)
    return out


def sample_spans(lengths: torch.Tensor, u: torch.Tensor, sampler: SpanSampler) -> torch.Tensor:
    """Proper sub-spans [s, t) (0 <= s < t <= L, never the whole [0, L)) of content lengths `lengths` (B,),
    from uniforms `u` (B, 2, n). Returns (B, n, 2) long offsets; vectorised over rows and spans."""
    if bool((lengths < 2).any()):
        raise ValueError("STP needs at least 2 content tokens per record (user + assistant); got "
                         f"lengths {lengths.tolist()}")
    L = lengths.to(torch.float64)[:, None].expand(-1, u.shape[-1])  # (B, n)
    if sampler is SpanSampler.START_THEN_END:
        s = torch.floor(u[:, 0] * L)
        choices = L - s - (s == 0).to(L.dtype)  # t in s+1..L, except t = L when s = 0
        t = s + 1 + torch.floor(u[:, 1] * choices)
    else:
        s, t = _uniform_spans(L, u[:, 0])
    return torch.stack([s, t], dim=-1).long()  # (B, n, 2)


def _uniform_spans(L: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index r of the L(L+1)/2 - 1 proper spans, ordered by start then end -> (s, t)."""
    r = torch.floor(u * (L * (L + 1) / 2 - 1))
    r = r + (r >= L - 1).to(r.dtype)  # skip index L-1 = the full span [0, L)
    s = torch.floor(((2 * L + 1) - torch.sqrt((2 * L + 1) ** 2 - 8 * r)) / 2)

    def before(x):  # spans that start before x
        return x * L - x * (x - 1) / 2

    s = s - (before(s) > r).to(s.dtype)  # float rounding guards
    s = s + (before(s + 1) <= r).to(s.dtype)
    return s, s + 1 + (r - before(s))


def length_weights(lengths: torch.Tensor, offsets: torch.Tensor, kind: LengthWeight) -> torch.Tensor:
    """Weight of each span from its patch length p = t - s and rest length r = L - p: (B, n) float."""
    p = (offsets[..., 1] - offsets[..., 0]).to(torch.float32)  # (B, n)
    r = lengths[:, None].to(torch.float32) - p
    if kind is LengthWeight.NONE:
        return torch.ones_like(p)
    if kind is LengthWeight.COSINE_LIKE:
        return 2 * r * p / (r * r + p * p)
    return 1 - (r - p).abs() / (r + p)


def content_lengths(spans: torch.Tensor) -> torch.Tensor:
    """(B, 4) [us, ue, as, ae) -> (B,) user + assistant content tokens."""
    return (spans[:, 1] - spans[:, 0]) + (spans[:, 3] - spans[:, 2])


def add_spans(batch: dict[str, torch.Tensor], cfg: StpConfig, seed: int = 0, step: int = 0, rank: int = 0,
              first_row: int = 0) -> dict[str, torch.Tensor]:
    """Batch + `stp_offsets` (B, n, 2) and `stp_weight` (B, n) (one weight per row for e2e/curvature);
    the keys are those of `span_uniforms`."""
    if "content_spans" not in batch:
        raise KeyError("the batch has no content_spans; build it with JepaCollator(tok, cfg) where "
                       "cfg.jepa.objective is stp and cfg.jepa.lam != 0")
    spans = batch["content_spans"]
    if cfg.variant is not StpVariant.SPAN:
        return {**batch, "stp_weight": torch.ones(spans.shape[0], 1, device=spans.device)}
    lengths = content_lengths(spans.cpu())
    u = span_uniforms(spans.shape[0], cfg.spans, seed, step, rank, first_row)
    offsets = sample_spans(lengths, u, cfg.sampler)
    weight = length_weights(lengths, offsets, cfg.length_weight)
    return {**batch, "stp_offsets": offsets.to(spans.device), "stp_weight": weight.to(spans.device)}


def add_step_spans(batches: list[dict], cfg: StpConfig, seed: int, step: int, rank: int) -> list[dict]:
    """`add_spans` for the micro-batches of one optimizer step (unchanged when they carry no spans)."""
    firsts = np.cumsum([0] + [b["input_ids"].shape[0] for b in batches]).tolist()
    return [add_spans(b, cfg, seed, step, rank, first) if "content_spans" in b else b
            for b, first in zip(batches, firsts)]


# ---- loss --------------------------------------------------------------------------------------------
def _rows(h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """h (B, T, D), idx (B, n) -> h[b, idx[b, j]] as float32 (B, n, D)."""
    b = torch.arange(h.shape[0], device=h.device)[:, None]
    return h[b, idx].float()


def displacement(h: torch.Tensor, spans: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """D(o): displacement from the content start to offset o (B, m) along user then assistant content,
    each piece taken inside its own turn (the template tokens between the turns are skipped). (B, m, D)
    One gather of the 2m + 2 states involved (one scatter in the backward)."""
    us, ue, a0 = spans[:, 0:1], spans[:, 1:2], spans[:, 2:3]  # (B, 1)
    lu, m = ue - us, offsets.shape[1]
    in_user = offsets <= lu  # (B, m)
    start = torch.where(in_user, us - 1, a0 - 1)  # hidden state just before the piece
    end = torch.where(in_user, us - 1 + offsets, a0 - 1 + offsets - lu)
    g = _rows(h, torch.cat([end, start, ue - 1, us - 1], dim=1))  # (B, 2m + 2, D)
    user_total = g[:, 2 * m:2 * m + 1] - g[:, 2 * m + 1:]  # (B, 1, D)
    return g[:, :m] - g[:, m:2 * m] + user_total * (~in_user)[..., None]


def stp_terms(hidden: torch.Tensor, batch: dict[str, torch.Tensor], cfg: StpConfig,
              predictor: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """STP loss terms from last-layer states `hidden` (B, T, D): `jepa_sum` (weighted sum of per-span
    losses), `jepa_loss` (weighted mean), `cos_sim` (weighted mean cosine), `n_pairs` (sum of weights)."""
    spans = batch["content_spans"]
    if cfg.variant is StpVariant.CURVATURE:
        per, cos = curvature(hidden, spans), None  # (B,) mean angle per row
        w = batch["stp_weight"].reshape(-1).float()
    else:
        if cfg.variant is StpVariant.SPAN:
            off = batch["stp_offsets"]  # (B, n, 2)
            n = off.shape[1]
            d = displacement(hidden, spans, torch.cat([off[..., 0], off[..., 1], content_lengths(spans)[:, None]], 1))
            d_s, d_t, d_end = d[:, :n], d[:, n:2 * n], d[:, 2 * n:]  # (B, n, D), (B, n, D), (B, 1, D)
            target, source = d_t - d_s, d_s + (d_end - d_t)  # patch, rest: (B, n, D)
        else:  # e2e: the two turns' displacements
            g = _rows(hidden, spans[:, [1, 0, 3, 2]] - 1)  # (B, 4, D): ue-1, us-1, ae-1, as-1
            source, target = g[:, 0:1] - g[:, 1:2], g[:, 2:3] - g[:, 3:4]  # (B, 1, D) each
        if predictor is not None:
            source = predictor(source.to(predictor.weight.dtype)).float()
        cos = F.cosine_similarity(source, target, dim=-1).reshape(-1)  # (B * n,)
        per, w = 1.0 - cos, batch["stp_weight"].reshape(-1).float()
    total_w = w.sum()
    out = {"jepa_sum": (w * per).sum(), "n_pairs": total_w.detach()}
    out["jepa_loss"] = out["jepa_sum"] / total_w.clamp(min=1e-12)
    out["cos_sim"] = ((w * cos).sum() / total_w.clamp(min=1e-12)).detach() if cos is not None else \
        torch.zeros((), device=hidden.device)
    return out


def curvature(h: torch.Tensor, spans: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean turning angle (radians) between consecutive steps h[i-1]-h[i-2] -> h[i]-h[i-1] for i inside
    each turn (i = start+1 .. end-1), pooled over both turns: (B,). Vectorised over all positions."""
    step = (h[:, 1:] - h[:, :-1]).float()  # (B, T-1, D): step[j] = h[j+1] - h[j]
    cos = F.cosine_similarity(step[:, :-1], step[:, 1:], dim=-1)  # (B, T-2): angle at i = j + 2 ...
    angle = torch.acos(cos.clamp(-1 + eps, 1 - eps))  # ... between step[j] and step[j+1], j = i - 2
    j = torch.arange(angle.shape[1], device=h.device)[None]  # (1, T-2)
    us, ue, a0, ae = (spans[:, k:k + 1] for k in range(4))
    mask = ((j >= us - 1) & (j < ue - 2)) | ((j >= a0 - 1) & (j < ae - 2))  # i in [start+1, end)
    count = mask.sum(1)
    return (angle * mask).sum(1) / count.clamp(min=1)


# ---- the optional linear predictor --------------------------------------------------------------------
def make_predictor(hidden_size: int, seed: int) -> nn.Linear:
    """Linear map D -> D without bias, Xavier-uniform init from `seed` (the authors' LinearPredictor)."""
    lin = nn.Linear(hidden_size, hidden_size, bias=False)
    gen = torch.Generator().manual_seed(seed)
    bound = math.sqrt(6.0 / (2 * hidden_size))
    with torch.no_grad():
        lin.weight.copy_(torch.rand(hidden_size, hidden_size, generator=gen) * 2 * bound - bound)
    return lin


def save_predictor(predictor: nn.Module | None, folder: str | Path) -> Path | None:
    """Write the predictor's weight next to a saved model (`load_predictor` is the inverse)."""
    if predictor is None:
        return None
    path = Path(folder) / PREDICTOR_FILE
    torch.save({"weight": predictor.weight.detach().cpu().clone()}, path)
    return path


def load_predictor(folder: str | Path) -> nn.Linear:
    weight = torch.load(Path(folder) / PREDICTOR_FILE, weights_only=True)["weight"]
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin
