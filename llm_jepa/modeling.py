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
from collections.abc import Callable

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer
from llm_jepa.collator import RESERVED_PATTERNS, predictor_token_names
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
                               attn_implementation=m.attn_implementation, seed=cfg.train.seed,
                               sliding_window=m.tiny_sliding_window)
    else:
        path = pretrained_path(m.name_or_path) or m.name_or_path  # a shipped model's short name, or as given
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=m.trust_remote_code)
        pure_bf16 = cfg.jepa.paper_compat and cfg.train.mixed_precision is MixedPrecision.BF16
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16 if pure_bf16 else torch.float32,
            attn_implementation=m.attn_implementation, trust_remote_code=m.trust_remote_code)
    model._jepa_base_rows = embedding_rows(model)  # before any resize: does the base checkpoint fit the tokenizer?
    ensure_pad_token(model, tok, reference=cfg.jepa.paper_compat)
    add_predictor_tokens(model, tok, cfg.jepa.predictors, distinct=not cfg.jepa.paper_compat, seed=cfg.train.seed)
    if m.gradient_checkpointing:
        enable_checkpointing(model)
    return model, tok


def ensure_pad_token(model: PreTrainedModel, tok: PreTrainedTokenizerBase, reference: bool = False) -> None:
    """Give the tokenizer a pad token that is not EOS (the reference's pad = EOS untrains EOS).

    A token the vocabulary already reserves is reused before one is added (Llama 3.1+:
    `<|finetune_right_pad_id|>`), and a new token takes a spare embedding row when the matrix has one
    (Qwen pads its matrix), so most real models keep their shape. `reference=True` (paper_compat) copies
    the reference instead: pad = EOS when the tokenizer has no pad token."""
    if reference:
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    elif tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        reserved = reserved_pad_token(tok)
        if reserved is not None:
            tok.pad_token = reserved
        else:
            tok.add_special_tokens({"pad_token": "<|pad|>"})
    _fit_embeddings(model, tok.pad_token_id + 1)  # not len(tok): Gemma 3's tokenizer lists an image token past
    # the text model's 262144 rows
    model.config.pad_token_id = tok.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id


def reserved_pad_token(tok: PreTrainedTokenizerBase) -> str | None:
    """An unused token of the vocabulary to pad with: Llama 3.1+'s `<|finetune_right_pad_id|>`, else the
    highest-numbered reserved token (Llama 3: `<|reserved_special_token_250|>`; predictors take the lowest)."""
    vocab = tok.get_vocab()
    if "<|finetune_right_pad_id|>" in vocab:
        return "<|finetune_right_pad_id|>"
    for pattern in RESERVED_PATTERNS:
        head, tail = pattern.split("{}")
        numbers = [int(t[len(head):-len(tail)]) for t in vocab
                   if t.startswith(head) and t.endswith(tail) and t[len(head):-len(tail)].isdigit()]
        if numbers:
            return pattern.format(max(numbers))
    return None


def _fit_embeddings(model: PreTrainedModel, n_tokens: int) -> None:
    """Grow the embedding matrix to `n_tokens` rows only when it has fewer (new rows = the mean row)."""
    emb = model.get_input_embeddings().weight
    if n_tokens <= emb.shape[0]:
        return
    old = emb.shape[0]
    model.resize_token_embeddings(n_tokens, mean_resizing=False)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():  # deterministic (resize draws from the global RNG): the mean embedding
        emb[old:] = emb[:old].mean(0).to(emb.dtype)


def embedding_rows(model: nn.Module) -> int:
    """Rows of the input embedding matrix (through peft's TrainableTokensWrapper when present)."""
    emb = unwrap_lm(model).get_input_embeddings()
    emb = getattr(emb, "base_layer", emb)
    return emb.weight.shape[0]


def add_predictor_tokens(model: PreTrainedModel, tok: PreTrainedTokenizerBase, k: int,
                         distinct: bool = True, seed: int = 0) -> list[int]:
    """Give the k predictor tokens embedding rows: reserved tokens of the vocabulary when it has them
    (`predictor_token_names`), else new special tokens (spare rows first, a resize only if needed).
    Their embeddings start at the mean embedding, plus (distinct=True) a small seeded perturbation so
    they are not all identical (reference defect 4)."""
    names = predictor_token_names(tok, k)
    if not names:
        return []
    if not all(n in tok.get_vocab() for n in names):
        tok.add_special_tokens({"additional_special_tokens": names}, replace_extra_special_tokens=False)
    ids = tok.convert_tokens_to_ids(names)
    _fit_embeddings(model, max(ids) + 1)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        keep = torch.ones(min(len(tok), emb.shape[0]), dtype=torch.bool)
        keep[ids] = False  # statistics of the other token rows (reserved rows sit inside the vocabulary)
        base = emb[: keep.numel()][keep].float()
        mean, std = base.mean(0), base.std(0)  # (D,)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(len(ids), emb.shape[1], generator=gen) * std * 0.1 if distinct else 0.0
        emb[ids] = (mean + noise).to(emb.dtype)
    return ids


def apply_lora(model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: LLMJepaConfig) -> nn.Module:
    """Wrap with a peft LoRA adapter; predictor-token rows stay trainable unless paper_compat."""
    from peft import LoraConfig, get_peft_model

    pred_ids = tok.convert_tokens_to_ids(predictor_token_names(tok, cfg.jepa.predictors))
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
    base = unwrap_lm(model)
    cap = getattr(base.config, "final_logit_softcapping", None)
    return base.get_decoder(), base.get_output_embeddings(), cap, base.config._attn_implementation


def unwrap_lm(model: nn.Module) -> nn.Module:
    """The transformers causal LM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# Families whose decoder `jepa_forward` calls directly, each checked by tests/test_llm_jepa_forward.py
# (packed == separate passes, sliding-window layers included): model_type -> whether the decoder takes a
# {layer_type: 4-D mask} dict (one mask per attention type) or a single 4-D mask.
VERIFIED_FAMILIES = {"llama": False, "mistral": False, "gemma2": True, "gemma3_text": True, "qwen2": True,
                     "qwen3": True}
FULL, SLIDING = "full_attention", "sliding_attention"


def layer_types(config) -> set[str]:
    """Attention types of the decoder's layers: `config.layer_types`, else one type for all layers
    (Mistral: sliding when `sliding_window` is set)."""
    types = getattr(config, "layer_types", None)
    if types:
        return set(types)
    return {SLIDING if getattr(config, "sliding_window", None) else FULL}


def _attention_mask(allowed: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """4-D bool `allowed` (B, 1, T, T) -> what the attention backend takes (bool for SDPA, additive for eager)."""
    if impl == "sdpa":
        return allowed
    if impl == "eager":
        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)
    raise ValueError(f"attention implementation {impl!r} takes no custom 4-D mask; set model.attn_implementation "
                     "to sdpa or eager")


def sliding_window_mask(allowed: torch.Tensor, position_ids: torch.Tensor, window: int) -> torch.Tensor:
    """`allowed` (B, 1, T, T) restricted to keys less than `window` positions behind the query.

    Distances are taken in position ids, not row indices: inside a packed segment they are the same,
    and an `in_context` predictor token (which continues the conversation's positions) sees the window
    it would see in the conversation itself. transformers' rule: key j is visible from query i iff
    i - j < window (`masking_utils.sliding_window_overlay`)."""
    dist = position_ids[:, None, :, None] - position_ids[:, None, None, :]  # (B, 1, T, T) query - key
    return allowed & (dist < window)


def decoder_masks(model: nn.Module, allowed: torch.Tensor, position_ids: torch.Tensor
                  ) -> torch.Tensor | dict[str, torch.Tensor]:
    """The 4-D mask(s) the decoder needs: a {layer_type: mask} dict for decoders with mixed full / sliding
    layers (Gemma 2/3, Qwen2/3), one mask otherwise; sliding layers get the window applied."""
    base = unwrap_lm(model)
    config, impl = base.config, base.config._attn_implementation
    dtype = base.get_output_embeddings().weight.dtype
    masks = {}
    for kind in layer_types(config):
        m = sliding_window_mask(allowed, position_ids, config.sliding_window) if kind == SLIDING else allowed
        masks[kind] = _attention_mask(m, impl, dtype)
    if VERIFIED_FAMILIES.get(config.model_type, False):
        return masks
    if len(masks) > 1:
        raise ValueError(f"{config.model_type} mixes attention types {sorted(masks)} but its decoder takes one "
                         "mask; add the family to llm_jepa.modeling.VERIFIED_FAMILIES once tested")
    return next(iter(masks.values()))


def _logits(lm_head: nn.Module, cap: float | None, hidden: torch.Tensor) -> torch.Tensor:
    """LM head (+ Gemma 2's final soft-cap) on selected hidden states (N, D) -> (N, V)."""
    logits = lm_head(hidden)
    return torch.tanh(logits / cap) * cap if cap is not None else logits


def _decode(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Packed rows -> last-layer hidden states (B, T, D): one decoder call with the block mask(s)."""
    decoder = _parts(model)[0]
    masks = decoder_masks(model, batch["attention_mask"], batch["position_ids"])
    return decoder(input_ids=batch["input_ids"], attention_mask=masks, position_ids=batch["position_ids"],
                   use_cache=False).last_hidden_state


class UnsupportedModelError(ValueError):
    """A model family whose forward the packed JEPA path does not reproduce."""


@torch.no_grad()
def packing_error(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Relative max difference between our packed logits of row 0's last segment and `model.forward` on that
    segment alone. It catches a forward that scales logits (Cohere, Granite) and a decoder that ignores
    4-D masks or position ids (the last segment sits behind the others in the packed row)."""
    _, lm_head, cap, _ = _parts(model)
    if "segment_ids" not in batch:
        raise ValueError("the batch has no segment_ids; build it with llm_jepa.collator.JepaCollator")
    seg = batch["segment_ids"][0]
    idx = (seg == seg.max()).nonzero().squeeze(1)  # (n,) row indices of the last segment
    ours = _logits(lm_head, cap, _decode(model, batch)[0, idx]).float()  # (n, V)
    alone = model(input_ids=batch["input_ids"][:1, idx], use_cache=False).logits[0].float()  # (n, V)
    return float((ours - alone).abs().max() / alone.abs().max().clamp(min=1e-6))


def check_family(model: nn.Module, batch: dict[str, torch.Tensor], tol: float = 1e-2) -> None:
    """Guard of `jepa_forward`: verified families pass; any other family is probed once (`packing_error`)
    and refused with a clear error when the packed path would be silently wrong."""
    base = unwrap_lm(model)
    kind = base.config.model_type
    if kind in VERIFIED_FAMILIES or getattr(base, "_jepa_probe_ok", False):
        return
    err = packing_error(model, batch)
    if err > tol:
        raise UnsupportedModelError(
            f"model type {kind!r} is not supported by the packed LLM-JEPA forward: its logits differ from "
            f"model.forward on the same tokens by {err:.2g} (relative). Its forward scales the logits or its decoder "
            "ignores 4-D attention masks / position ids. Verified families: "
            f"{', '.join(sorted(VERIFIED_FAMILIES))}; support a new one in llm_jepa.modeling.VERIFIED_FAMILIES "
            "with a packed == separate-passes test.")
    log.warning("model type %r is not in the verified families; a probe of the packed forward against "
                "model.forward passed (relative error %.1e)", kind, err)
    base._jepa_probe_ok = True


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
    check_family(model, batch)
    _, lm_head, cap, _ = _parts(model)
    hidden = _decode(model, batch)  # (B, T, D)
    targets = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at t
    sel = targets != -100
    logits = _logits(lm_head, cap, hidden[:, :-1][sel])  # (N, V) only at labelled positions
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
    if jepa_norm is None:
        jepa_norm = out["n_pairs"].clamp(min=_min_pairs(cfg))
    out["loss"] = combine(out["lm_sum"], lm_norm, jepa_sum, jepa_norm, cfg.jepa.gamma, cfg.jepa.lam)
    return out


def step_norms(batches: list[dict], use_jepa: bool, cfg: LLMJepaConfig, reduce_sum: Callable | None = None,
               world: int = 1, device: torch.device | str = "cpu") -> tuple:
    """(lm_norm, jepa_norm) of one optimizer step for `jepa_forward`: the labelled tokens and view pairs
    (STP: span weights, `jepa_pairs`) of all its micro-batches on all ranks (`reduce_sum` sums over ranks), divided by the ranks because DDP
    averages gradients -> accumulation and processes give the big-batch gradient.

    paper_compat: (None, None), i.e. each micro-batch's own means, divided by NEITHER the accumulation
    steps nor anything else, like the reference (its JEPA arm skips the division the baseline gets)."""
    if cfg.jepa.paper_compat:
        return None, None
    local = torch.tensor([sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches),
                          sum(jepa_pairs(b) for b in batches) if use_jepa else 0],
                         device=device, dtype=torch.float64)
    total = (reduce_sum(local) if reduce_sum is not None and world > 1 else local) / world
    return total[0].clamp(min=1).float(), total[1].clamp(min=_min_pairs(cfg)).float()


def _min_pairs(cfg: LLMJepaConfig) -> float:
    """Floor of the JEPA normaliser: one view pair, or (STP, whose span weights may sum below 1) ~0."""
    return 1e-12 if cfg.jepa.objective is Objective.STP else 1


class JepaModule(nn.Module):
    """`nn.Module` around a causal LM whose forward is `jepa_forward` (so DDP/FSDP see it)."""

    _keys_to_ignore_on_save = None  # read by Trainer after loading a checkpoint into the inner LM

    def __init__(self, lm: nn.Module, cfg: LLMJepaConfig) -> None:
        super().__init__()
        self.lm, self.cfg = lm, cfg
        self.stp_predictor = None  # STP's linear predictor: trained with the LM, saved beside it
        if cfg.jepa.objective is Objective.STP and cfg.stp.predictor and cfg.jepa.lam != 0.0:
            self.stp_predictor = make_predictor(unwrap_lm(lm).config.hidden_size, cfg.train.seed)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, segment_ids: torch.Tensor | None = None,
                text_index: torch.Tensor | None = None, code_index: torch.Tensor | None = None,
                lm_norm: torch.Tensor | float | None = None, jepa_norm: torch.Tensor | float | None = None,
                use_jepa: bool = True, content_spans: torch.Tensor | None = None,
                stp_offsets: torch.Tensor | None = None, stp_weight: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": attention_mask,
                 "labels": labels}
        if segment_ids is not None:
            batch["segment_ids"] = segment_ids
        if text_index is not None:
            batch.update(text_index=text_index, code_index=code_index)
        extra = {"content_spans": content_spans, "stp_offsets": stp_offsets, "stp_weight": stp_weight}
        batch.update({k: v for k, v in extra.items() if v is not None})
        return jepa_forward(self.lm, batch, self.cfg, lm_norm=lm_norm, jepa_norm=jepa_norm, use_jepa=use_jepa,
                            predictor=self.stp_predictor)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None, **kw) -> None:
        """What `Trainer(gradient_checkpointing=True)` calls: checkpoint the inner LM's layers."""
        enable_checkpointing(self.lm, activation_checkpointing_kwargs, **kw)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kw) -> None:
        enable_checkpointing(self.lm, gradient_checkpointing_kwargs, **kw)


def enable_checkpointing(lm: nn.Module, kwargs: dict | None = None, **extra) -> None:
    """Activation checkpointing of a causal LM or peft model (inputs require grad under peft, no KV cache)."""
    base = unwrap_lm(lm)
    kwargs = kwargs or {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **extra)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.config.use_cache = False
    if base is not lm:
        lm.enable_input_require_grads()
