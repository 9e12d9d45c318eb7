"""Model side of LLM-JEPA: model/tokenizer setup (pad, predictor tokens, LoRA) and `jepa_forward`.

Data flow: packed batch from `JepaCollator` -> ONE call of the base decoder (no LM head) with
the 4-D block mask and explicit position ids -> hidden states (B, T, D) -> (a) the LM head
and cross-entropy only at labelled positions, (b) Enc(Text)/Enc(Code) gathered at the tracked
indices -> `llm_jepa.losses` -> dict with `loss, lm_loss, jepa_loss, cos_sim` (+ sums/counts).

With `jepa.objective: stp` step (b) is Semantic Tube Prediction on the same hidden states
(`llm_jepa.stp.stp_terms`, spans drawn by `llm_jepa.stp.add_spans`): no extra view, no extra pass.

`JepaModule` wraps a causal LM so the JEPA forward goes through `nn.Module.__call__`: DDP/FSDP
wrap it and see the forward (calling the inner decoder of a DDP-wrapped model would bypass
gradient synchronisation).

    model, tok = load_model_and_tokenizer(cfg, corpus)
    out = jepa_forward(model, JepaCollator(tok, cfg)(records), cfg)
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer
from llm_jepa.collator import predictor_tokens
from llm_jepa.config import LLMJepaConfig, MixedPrecision, Objective
from llm_jepa.losses import combine, jepa_distance, lm_loss_sum
from llm_jepa.pretrained import pretrained_path
from llm_jepa.stp import add_spans, make_predictor, stp_terms

log = logging.getLogger(__name__)


def load_model_and_tokenizer(cfg: LLMJepaConfig, corpus: list[str] | None = None
                             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Base model + tokenizer (hub id, folder, or `tiny` trained on `corpus`), with a pad token
    distinct from EOS and the k predictor tokens added (LoRA is applied later, `apply_lora`)."""
    m = cfg.model
    if m.name_or_path == "tiny":
        tok = tiny_tokenizer(m.tiny_family, corpus, vocab_size=m.tiny_vocab_size)
        model = tiny_causal_lm(m.tiny_family, tok, hidden_size=m.tiny_hidden_size, num_layers=m.tiny_layers,
                               attn_implementation=m.attn_implementation, seed=cfg.train.seed)
    else:
        path = pretrained_path(m.name_or_path) or m.name_or_path  # a shipped model's short name, or as given
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=m.trust_remote_code)
        pure_bf16 = cfg.jepa.paper_compat and cfg.train.mixed_precision is MixedPrecision.BF16
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16 if pure_bf16 else torch.float32,
            attn_implementation=m.attn_implementation, trust_remote_code=m.trust_remote_code)
    ensure_pad_token(model, tok)
    add_predictor_tokens(model, tok, cfg.jepa.predictors, distinct=not cfg.jepa.paper_compat, seed=cfg.train.seed)
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    return model, tok


def ensure_pad_token(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token that is not EOS (the reference's pad = EOS untrains EOS)."""
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        reserved = "<|finetune_right_pad_id|>"  # Llama-3.1/3.2 ship this unused token
        if reserved in tok.get_vocab():
            tok.pad_token = reserved
        else:
            tok.add_special_tokens({"pad_token": "<|pad|>"})
    emb = model.get_input_embeddings().weight
    if len(tok) > emb.shape[0]:
        old = emb.shape[0]
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        emb = model.get_input_embeddings().weight
        with torch.no_grad():  # deterministic (resize draws from the global RNG): the mean embedding
            emb[old:] = emb[:old].mean(0).to(emb.dtype)
    model.config.pad_token_id = tok.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


def add_predictor_tokens(model: PreTrainedModel, tok: PreTrainedTokenizerBase, k: int,
                         distinct: bool = True, seed: int = 0) -> list[int]:
    """Add k predictor tokens; their embeddings start at the mean embedding, plus (distinct=True)
    a small seeded perturbation so they are not all identical (reference defect 4)."""
    names = predictor_tokens(k)
    if not names:
        return []
    tok.add_special_tokens({"additional_special_tokens": names}, replace_extra_special_tokens=False)
    ids = tok.convert_tokens_to_ids(names)
    emb = model.get_input_embeddings().weight
    if max(ids) >= emb.shape[0]:
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        emb = model.get_input_embeddings().weight
    with torch.no_grad():
        base = emb[: min(ids)].float()
        mean, std = base.mean(0), base.std(0)  # (D,)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(ids), emb.shape[1], generator=gen) * std * 0.1 if distinct else 0.0
        emb[ids] = (mean + noise).to(emb.dtype)
    return ids


def apply_lora(model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: LLMJepaConfig) -> nn.Module:
    """Wrap with a peft LoRA adapter; predictor-token rows stay trainable unless paper_compat."""
    from peft import LoraConfig, get_peft_model

    pred_ids = tok.convert_tokens_to_ids(predictor_tokens(cfg.jepa.predictors))
    trainable = {"embed_tokens": pred_ids} if pred_ids and not cfg.jepa.paper_compat else None
    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM",
                      trainable_token_indices=trainable)
    peft_model = get_peft_model(model, lcfg)
    if cfg.model.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    return peft_model


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module, float | None, str]:
    """(decoder, lm_head, final logit soft-cap, attention implementation) of a causal LM or peft model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cap = getattr(base.config, "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), cap, base.config._attn_implementation


def _attention_mask(allowed: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """4-D bool `allowed` (B, 1, T, T) -> what the attention backend takes (bool for SDPA, additive for eager)."""
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    raise ValueError(f"attention implementation {impl!r} takes no custom 4-D mask; set model.attn_implementation "
                     "to sdpa or eager")


def jepa_pairs(batch: dict[str, torch.Tensor]) -> float:
    """What the JEPA term of a batch is normalised by: its STP span weights, or its rows (view pairs)."""
    return float(batch["stp_weight"].sum()) if "stp_weight" in batch else float(batch["input_ids"].shape[0])


def _jepa_terms(hidden: torch.Tensor, batch: dict[str, torch.Tensor], cfg: LLMJepaConfig,
                predictor: nn.Module | None) -> dict[str, torch.Tensor]:
    if cfg.jepa.objective is Objective.STP:
        if "stp_weight" not in batch:  # direct callers: spans from a generator seeded by train.seed
            batch = add_spans(batch, cfg.stp, seed=cfg.train.seed)
        return stp_terms(hidden, batch, cfg.stp, predictor)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    pred, target = hidden[rows, batch["text_index"]], hidden[rows, batch["code_index"]]  # (B, D)
    return jepa_distance(pred, target, cfg.jepa.distance, cfg.jepa.temperature)


def jepa_forward(model: nn.Module, batch: dict[str, torch.Tensor], cfg: LLMJepaConfig,
                 lm_norm: torch.Tensor | float | None = None, jepa_norm: torch.Tensor | float | None = None,
                 use_jepa: bool = True, predictor: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """One forward of the packed batch -> `loss, lm_loss, jepa_loss, cos_sim` (+ `lm_sum, n_tokens, ...`).

    `lm_norm` / `jepa_norm`: the number of labelled tokens / view pairs (STP: span weights) of the
    whole optimizer step (all micro-batches, all ranks) so that accumulation and DDP give the
    big-batch gradient; default: this batch's own counts (then `loss = gamma * lm_loss + lam * jepa_loss`).
    `predictor`: STP's optional linear predictor (`JepaModule` owns it).
    """
    decoder, lm_head, cap, impl = _parts(model)
    mask = _attention_mask(batch["attention_mask"], impl, lm_head.weight.dtype)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                     use_cache=False).last_hidden_state  # (B, T, D)
    targets = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at t
    sel = targets != -100
    logits = lm_head(hidden[:, :-1][sel])  # (N, V) only at labelled positions
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    out = lm_loss_sum(logits, targets[sel])
    n_tok = out["n_tokens"].clamp(min=1)
    out["lm_loss"] = out["lm_sum"].detach() / n_tok
    jepa_sum = None
    if use_jepa and cfg.jepa.lam != 0.0 and ("text_index" in batch or "content_spans" in batch):
        j = _jepa_terms(hidden, batch, cfg, predictor)
        jepa_sum = j["jepa_sum"]
        out.update(j)
        out["jepa_loss"] = j["jepa_loss"].detach()
    else:
        zero = hidden.new_zeros((), dtype=torch.float32)
        out.update(jepa_loss=zero, cos_sim=zero, jepa_sum=zero, n_pairs=torch.zeros((), dtype=torch.long))
    lm_norm = n_tok if lm_norm is None else lm_norm
    if jepa_norm is None:  # STP weights may sum below 1
        jepa_norm = out["n_pairs"].clamp(min=1e-12 if cfg.jepa.objective is Objective.STP else 1)
    out["loss"] = combine(out["lm_sum"], lm_norm, jepa_sum, jepa_norm, cfg.jepa.gamma, cfg.jepa.lam)
    return out


class JepaModule(nn.Module):
    """`nn.Module` around a causal LM whose forward is `jepa_forward` (so DDP/FSDP see it)."""

    def __init__(self, lm: nn.Module, cfg: LLMJepaConfig) -> None:
        super().__init__()
        self.lm, self.cfg = lm, cfg
        self.stp_predictor = None  # STP's linear predictor: trained with the LM, saved beside it
        if cfg.jepa.objective is Objective.STP and cfg.stp.predictor and cfg.jepa.lam != 0.0:
            base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
            self.stp_predictor = make_predictor(base.config.hidden_size, cfg.train.seed)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, segment_ids: torch.Tensor | None = None,
                text_index: torch.Tensor | None = None, code_index: torch.Tensor | None = None,
                lm_norm: torch.Tensor | float | None = None, jepa_norm: torch.Tensor | float | None = None,
                use_jepa: bool = True, content_spans: torch.Tensor | None = None,
                stp_offsets: torch.Tensor | None = None, stp_weight: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": attention_mask,
                 "labels": labels}
        if text_index is not None:
            batch.update(text_index=text_index, code_index=code_index)
        extra = {"content_spans": content_spans, "stp_offsets": stp_offsets, "stp_weight": stp_weight}
        batch.update({k: v for k, v in extra.items() if v is not None})
        return jepa_forward(self.lm, batch, self.cfg, lm_norm=lm_norm, jepa_norm=jepa_norm, use_jepa=use_jepa,
                            predictor=self.stp_predictor)
