"""The V-JEPA forward passes on a Hugging Face `VJEPA2Model`, over padded token sets.

`VJEPA2Layer` attends over every token it is given, so rows of different lengths cannot be
batched with it. These functions run the same modules (same weights, same 3-axis RoPE on token
ids) with a key-padding mask; where nothing is padded they equal the HF layers
(tests/test_pretrain.py). RoPE tables depend only on the token ids, so they are computed once per
stack of layers instead of once per layer and per q / k.

    context ids (R, Kc) --encode_context--> context features (R, Kc, D)
      --predict_targets--> predictor over the full (T'*H'*W') grid: context embeddings at the
         context ids, the mask type's mask token at the target ids -> (R, Kt, D) at the target ids
    full clip --target_features (EMA encoder, no grad)--> layer_norm over D -> (R, Kt, D)

Used by vljepa.pretrain (the loss and training loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import VJEPA2Model
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2Layer, VJEPA2Predictor, VJEPA2RopeAttention

from vljepa.masking import MaskBatch

RopeTables = list[tuple[torch.Tensor, torch.Tensor, int]]  # per axis (frame, height, width): cos, sin, width


def rope_tables(attn: VJEPA2RopeAttention, positions: torch.Tensor) -> RopeTables:
    """cos / sin of V-JEPA 2's 3-axis RoPE at token ids `positions` (R, K): each (R, 1, K, axis dim).
    Same values as `VJEPA2RopeAttention.get_position_ids` + `rotate_queries_or_keys`."""
    ids = positions[:, None, :]  # (R, 1, K): broadcast over heads
    frame, height = attn._get_frame_pos(ids), attn._get_height_pos(ids)
    width = ids - attn.grid_size * attn.grid_size * frame - attn.grid_size * height
    tables = []
    for pos, dim in ((frame, attn.d_dim), (height, attn.h_dim), (width, attn.w_dim)):
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim / 2.0))  # (dim/2,)
        freq = pos.unsqueeze(-1).float() * omega  # (R, 1, K, dim/2)
        tables.append((freq.cos().repeat(1, 1, 1, 2), freq.sin().repeat(1, 1, 1, 2), dim))
    return tables


def apply_rope(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate the first 3 * axis-dim channels of q or k (R, h, K, d); the rest pass through."""
    parts, start = [], 0
    for cos, sin, dim in tables:
        seg = x[..., start:start + dim]
        pairs = seg.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-x1, x0, -x3, x2, ...)
        parts.append(seg * cos.to(x.dtype) + rotated * sin.to(x.dtype))
        start += dim
    return torch.cat([*parts, x[..., start:]], dim=-1)


def masked_attention(attn: VJEPA2RopeAttention, x: torch.Tensor, rope: RopeTables,
                     valid: torch.Tensor) -> torch.Tensor:
    """V-JEPA 2 RoPE self-attention over padded rows: x (R, K, D), valid (R, K) keys."""
    r, k, _ = x.shape
    shape = (r, k, -1, attn.attention_head_size)
    q, key, v = (proj(x).view(shape).transpose(1, 2) for proj in (attn.query, attn.key, attn.value))  # (R, h, K, d)
    out = F.scaled_dot_product_attention(apply_rope(q, rope), apply_rope(key, rope), v,
                                         attn_mask=valid[:, None, None, :], scale=attn.scaling,
                                         dropout_p=attn.dropout_prob if attn.training else 0.0)  # (R, h, K, d)
    return attn.proj(out.transpose(1, 2).reshape(r, k, attn.all_head_size))


def masked_layer(layer: VJEPA2Layer, x: torch.Tensor, rope: RopeTables, valid: torch.Tensor) -> torch.Tensor:
    """`VJEPA2Layer.forward` with a key-padding mask (pre-norm attention + MLP, residuals)."""
    x = x + layer.drop_path(masked_attention(layer.attention, layer.norm1(x), rope, valid))
    return x + layer.drop_path(layer.mlp(layer.norm2(x)))


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x (R, N, D), ids (R, K) -> (R, K, D)."""
    return torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))


def encode_context(model: VJEPA2Model, pixel_values: torch.Tensor, masks: MaskBatch) -> torch.Tensor:
    """Context encoder on the visible tokens only: (B, T, C, H, W) -> (S*B, Kc, D)."""
    x = model.encoder.embeddings(pixel_values)  # (B, N, D)
    x = gather_tokens(x.repeat(len(masks.spec) // len(x), 1, 1), masks.context)  # (S*B, Kc, D)
    rope = rope_tables(model.encoder.layer[0].attention, masks.context)
    for layer in model.encoder.layer:
        x = masked_layer(layer, x, rope, masks.context_valid)
    return model.encoder.layernorm(x)


def _slots(ids: torch.Tensor, valid: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Token ids with padded slots sent to the spare slot `num_tokens`: (R, K)."""
    return ids.masked_fill(~valid, num_tokens)


def predict_targets(predictor: VJEPA2Predictor, z: torch.Tensor, masks: MaskBatch, num_tokens: int) -> torch.Tensor:
    """Context features (S*B, Kc, D) -> predicted target features (S*B, Kt, D); mask token per mask type.

    The predictor's sequence is the whole (T'*H'*W') grid in token order: context embeddings at the
    context ids, the mask type's mask token at the target ids, and any other id masked out of
    attention. RoPE makes attention depend on ids, not slots, so this equals the reference
    [context ; mask tokens] sequence (which the HF predictor also sorts by id) with no padding."""
    emb = predictor.embeddings
    ctx = emb.predictor_embeddings(z)  # (R, Kc, P)
    r, _, p = ctx.shape
    tokens = emb.mask_tokens[masks.spec % emb.num_mask_tokens][:, 0]  # (R, 1, P)
    x = tokens.expand(r, num_tokens + 1, p).clone()  # (R, N+1, P); slot N takes padded ids
    ctx_slots = _slots(masks.context, masks.context_valid, num_tokens)
    x = x.scatter(1, ctx_slots[..., None].expand(-1, -1, p), ctx)
    used = torch.zeros(r, num_tokens + 1, dtype=torch.bool)
    used.scatter_(1, ctx_slots, True)
    used.scatter_(1, _slots(masks.target, masks.target_valid, num_tokens), True)
    x, used = x[:, :num_tokens], used[:, :num_tokens]  # (R, N, P), (R, N)
    rope = rope_tables(predictor.layer[0].attention, torch.arange(num_tokens)[None])  # broadcast over rows
    for layer in predictor.layer:
        x = masked_layer(layer, x, rope, used)
    x = predictor.proj(predictor.layernorm(x))  # (R, N, D)
    return gather_tokens(x, masks.target)  # (R, Kt, D)


@torch.no_grad()
def target_features(target: VJEPA2Model, pixel_values: torch.Tensor, masks: MaskBatch) -> torch.Tensor:
    """EMA encoder on the full clip, layer-normalised over D, at the target ids: (S*B, Kt, D)."""
    h = target.encoder(pixel_values_videos=pixel_values).last_hidden_state  # (B, N, D)
    h = F.layer_norm(h, h.shape[-1:])
    return gather_tokens(h.repeat(len(masks.spec) // len(h), 1, 1), masks.target)
