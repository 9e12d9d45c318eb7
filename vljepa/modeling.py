"""`VLJepaModel`: frozen X-encoder -> bidirectional LM predictor -> embedding; Y-encoder -> embedding.

Data flow (DESIGN.md section 1, "VL-JEPA"; paper section 3):

    pixel_values (B, T, C, H, W) --encode_video--> visual (B, N, Dx)            [frozen, no grad]
    visual --Linear(Dx->H)--> (B, N, H) ; query --LM tokenizer + embed_tokens--> (B, Lq, H)
    [visual ; query] --last n LM layers, causal mask OFF (padding mask only)--> (B, N+Lq, H)
    --masked mean pool--> (B, H) --Linear--> predicted embedding (B, D)          = predict()
    target --Y-encoder tokenizer + transformer--> masked mean pool --Linear--> (B, D) = encode_text()
    forward() = both + the configured loss (vljepa.losses), returned as a dict.

All embeddings are returned UN-normalised; pass `normalize=True` (or call `normalize(x)`) for
unit vectors, as the loss and every retrieval/classification call do.

Save/load: `save_pretrained` writes config.json, the trained weights (predictor, heads,
Y-encoder, logit scale) and both tokenizers (`predictor_tokenizer/`, `y_tokenizer/`); the frozen
X-encoder is referenced by `config.x_encoder_name_or_path` and reloaded from there, unless it
has no source (random tiny encoders), was unfrozen, or `save_x_encoder=True`, in which case its
weights are saved too. `from_pretrained` is the exact inverse; it reloads a SigLIP / CLIP
X-encoder as its vision tower only (`load_x_encoder`), never the two-tower model.

Parts that never receive a gradient are never trainable, so multi-process (DDP) runs need no
`find_unused_parameters`: the BERT-style pooler of sentence-encoder Y-encoders is removed (mean or
CLS pooling reads the hidden states, never the pooler), V-JEPA 2's own JEPA predictor stays frozen
even when the X-encoder is unfrozen (and out of `parameter_counts`), and the logit scale trains
only with the InfoNCE loss. Build models with
`vljepa.builders.build_vljepa` (pretrained parts) or `build_tiny_vljepa` (offline, for tests and
the demo); `vljepa.builders` stands above this module (it imports it, never the reverse).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    CLIPVisionModel,
    PreTrainedModel,
    SiglipVisionModel,
)

from vljepa.configuration import Pooling, VLJepaConfig
from vljepa.losses import text_ids, vljepa_loss
from vljepa.pretrained import pretrained_names, pretrained_path

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp on the learnable logit scale (temperature >= 0.01)
# Full image-text checkpoints whose vision tower is the X-encoder.
VISION_TOWERS = {"siglip": SiglipVisionModel, "clip": CLIPVisionModel}


def load_x_encoder(name_or_path: str, **kwargs) -> PreTrainedModel:
    """V-JEPA 2 (video) or the vision tower of a SigLIP/CLIP checkpoint (images); a hub id, a folder, or
    the short name of an X-encoder shipped in `vljepa.pretrained` (e.g. "tiny-vjepa2")."""
    if not str(name_or_path or "").strip():
        raise ValueError(f"no X-encoder given: pass a hub id, a model folder or a shipped name {pretrained_names()}")
    source = pretrained_path(name_or_path) or name_or_path
    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except OSError as e:  # the hub's message alone ("couldn't connect", "Repo id must ...") hides the options
        raise OSError(f"cannot load the X-encoder {name_or_path!r}: not a model folder with a config.json, not a "
                      f"shipped name {pretrained_names()}, and not loadable from the Hugging Face hub "
                      f"({' '.join(str(e).split())[:200]})") from e
    cls = VISION_TOWERS.get(model_type)
    return cls.from_pretrained(source, **kwargs) if cls else AutoModel.from_pretrained(source, **kwargs)


def drop_unused_parts(y_encoder: nn.Module) -> None:
    """Remove the Y-encoder's BERT-style pooler: we pool hidden states, so it never gets a gradient
    (DDP stops with "Expected to have finished reduction" on trainable unused parameters)."""
    if getattr(y_encoder, "pooler", None) is not None:
        y_encoder.pooler = None


def unused_x_encoder_part(x_encoder: nn.Module) -> nn.Module | None:
    """V-JEPA 2's own JEPA predictor (22.1M at ViT-L): VL-JEPA never runs it, so it stays frozen and
    out of the parameter counts; it is kept (not deleted) for V-JEPA pretraining (vljepa.pretrain)."""
    predictor = getattr(x_encoder, "predictor", None)
    return predictor if predictor is not None and hasattr(x_encoder.config, "pred_hidden_size") else None


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise embeddings along the last dim (what the loss and the tasks compare)."""
    return F.normalize(x, dim=-1)


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over positions where mask is 1. states (B, L, H), mask (B, L) -> (B, H)."""
    m = mask.to(states.dtype).unsqueeze(-1)  # (B, L, 1)
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


def bidirectional_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Padding-only additive attention mask: (B, L) of 0/1 -> (B, 1, L, L) of 0 / -inf-ish.

    A 4-D mask is used as-is by transformers for eager and SDPA attention, so no causal
    triangle is added: every token sees every non-pad token (paper: causal mask off).
    """
    b, length = mask.shape
    blocked = (mask == 0)[:, None, None, :].expand(b, 1, length, length)  # (B, 1, L, L)
    return torch.zeros(blocked.shape, dtype=dtype, device=mask.device).masked_fill(blocked, torch.finfo(dtype).min)


class VLJepaModel(PreTrainedModel):
    """VL-JEPA: predicts the embedding of a target text from a clip and a query."""

    config_class = VLJepaConfig
    base_model_prefix = "vljepa"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _keys_to_ignore_on_load_missing = [r"^x_encoder\."]  # reloaded from x_encoder_name_or_path

    def __init__(self, config: VLJepaConfig, x_encoder: PreTrainedModel | None = None,
                 predictor: PreTrainedModel | None = None, y_encoder: PreTrainedModel | None = None):
        super().__init__(config)
        self.x_encoder = x_encoder or AutoModel.from_config(config.sub_config("x_encoder"))
        self.predictor = predictor or AutoModel.from_config(
            config.sub_config("predictor"), attn_implementation=config.predictor_attn_implementation)
        self.y_encoder = y_encoder or AutoModel.from_config(config.sub_config("y_encoder"))
        drop_unused_parts(self.y_encoder)
        for module in self.predictor.modules():  # belt and braces: flash/SDPA kernels read this flag
            if hasattr(module, "is_causal"):
                module.is_causal = False
        h = self.predictor.config.hidden_size
        self.visual_proj = nn.Linear(self.x_encoder.config.hidden_size, h)
        self.predictor_head = nn.Linear(h, config.embed_dim)
        self.y_head = nn.Linear(self.y_encoder.config.hidden_size, config.embed_dim)
        # only InfoNCE reads the logit scale: a trainable unused scale would break DDP
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)),
                                        requires_grad=config.learn_temperature and config.loss == "infonce")
        self.predictor_tokenizer = None
        self.y_tokenizer = None
        self.post_init()
        self.set_x_encoder_trainable(not config.freeze_x_encoder)
        self.set_predictor_embeddings_trainable(not config.freeze_predictor_embeddings)

    # ----------------------------------------------------------------- setup helpers
    def _init_weights(self, module: nn.Module) -> None:
        # Only our own heads; sub-models (X/Y encoders, predictor) initialise themselves.
        if module in (self.visual_proj, self.predictor_head, self.y_head):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def set_x_encoder_trainable(self, trainable: bool) -> None:
        """Frozen (paper default): eval mode and requires_grad=False; unfreeze for a late stage."""
        self.config.freeze_x_encoder = not trainable
        self.x_encoder.requires_grad_(trainable)
        self.x_encoder.train(trainable and self.training)
        unused = unused_x_encoder_part(self.x_encoder)
        if unused is not None:  # never run: a trainable copy would break DDP
            unused.requires_grad_(False)

    def set_predictor_embeddings_trainable(self, trainable: bool) -> None:
        """Freeze (or unfreeze) the predictor LM's token-embedding table (most of its parameters)."""
        self.config.freeze_predictor_embeddings = not trainable
        self.predictor.get_input_embeddings().requires_grad_(trainable)

    def train(self, mode: bool = True) -> VLJepaModel:
        super().train(mode)
        if self.config.freeze_x_encoder:
            self.x_encoder.eval()  # a frozen encoder never runs dropout / batch-stat updates
        if not any(p.requires_grad for p in self.y_encoder.parameters()):
            self.y_encoder.eval()  # frozen Y-encoder (LR multiplier 0): fixed, dropout-free targets
        return self

    def attach_tokenizers(self, predictor_tokenizer, y_tokenizer) -> None:
        """Tokenizers used by predict/encode_text; a missing pad token falls back to EOS (Llama)."""
        if predictor_tokenizer.pad_token is None:
            predictor_tokenizer.pad_token = predictor_tokenizer.eos_token
        predictor_tokenizer.padding_side = "right"
        y_tokenizer.padding_side = "right"
        self.predictor_tokenizer, self.y_tokenizer = predictor_tokenizer, y_tokenizer

    def _require_tokenizers(self) -> None:
        if self.predictor_tokenizer is None or self.y_tokenizer is None:
            raise RuntimeError("this VLJepaModel has no tokenizers; load it with VLJepaModel.from_pretrained(dir) "
                               "or call model.attach_tokenizers(predictor_tokenizer, y_tokenizer)")

    def logit_scale_value(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    # ----------------------------------------------------------------- public encoders
    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frozen X-encoder: pixel_values (B, T, C, H, W) float -> visual tokens (B, N, Dx).

        Video encoders (V-JEPA 2) take the clip; image encoders (SigLIP, CLIP) run on each frame
        and their tokens are concatenated (an image is a 1-frame video).
        """
        if pixel_values.ndim != 5:
            raise ValueError(f"pixel_values must be (B, T, C, H, W), got shape {tuple(pixel_values.shape)}; "
                             "add a frame axis for images (x[:, None])")
        dtype = next(self.x_encoder.parameters()).dtype
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_x_encoder):
            if self.config.is_video_encoder:
                out = self.x_encoder(pixel_values_videos=pixel_values.to(dtype), skip_predictor=True)
                return out.last_hidden_state  # (B, N, Dx)
            b, t = pixel_values.shape[:2]
            out = self.x_encoder(pixel_values=pixel_values.flatten(0, 1).to(dtype)).last_hidden_state  # (B*T, n, Dx)
            return out.reshape(b, t * out.shape[1], out.shape[2])  # (B, T*n, Dx)

    def _predictor_states(self, query: list[str], visual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[proj(visual) ; embed(query)] through the bidirectional predictor: (B, L, H), mask (B, L)."""
        self._require_tokenizers()
        if len(query) != visual.shape[0]:
            raise ValueError(f"{len(query)} queries for {visual.shape[0]} clips; pass one query per clip")
        embed = self.predictor.get_input_embeddings()
        tok = self.predictor_tokenizer(list(query), padding=True, truncation=True, add_special_tokens=False,
                                       max_length=self.config.max_query_length, return_tensors="pt")
        ids = tok["input_ids"].to(visual.device).long()  # (B, Lq)
        v = self.visual_proj(visual.to(self.visual_proj.weight.dtype))  # (B, N, H)
        x = torch.cat([v, embed(ids).to(v.dtype)], dim=1)  # (B, N+Lq, H)
        mask = torch.cat([torch.ones(v.shape[:2], dtype=torch.long, device=v.device),
                          tok["attention_mask"].to(v.device).long()], dim=1)  # (B, L)
        positions = torch.arange(x.shape[1], device=x.device)[None].expand(x.shape[0], -1)  # (B, L)
        out = self.predictor(inputs_embeds=x, attention_mask=bidirectional_mask(mask, x.dtype),
                             position_ids=positions, use_cache=False)
        return out.last_hidden_state, mask

    def predict(self, query: list[str], pixel_values: torch.Tensor | None = None,
                visual: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
        """Predicted target embedding (B, D) from a clip (or cached visual tokens) and a query."""
        if (pixel_values is None) == (visual is None):
            raise ValueError("pass exactly one of pixel_values (B, T, C, H, W) or visual (B, N, Dx) cached tokens")
        if visual is None:
            visual = self.encode_video(pixel_values)
        states, mask = self._predictor_states(query, visual)
        out = self.predictor_head(masked_mean(states, mask))  # (B, D)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_text(self, texts: list[str], normalize: bool = False) -> torch.Tensor:
        """Y-encoder + head: target texts -> (B, D)."""
        self._require_tokenizers()
        enc_dtype = next(self.y_encoder.parameters()).dtype
        if enc_dtype == torch.float16 and self.y_encoder.config.model_type.startswith("gemma"):
            raise ValueError("Gemma-family Y-encoders overflow in float16; use bfloat16 or float32")
        device = self.y_head.weight.device
        tok = self.y_tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.config.max_target_length, return_tensors="pt").to(device)
        states = self.y_encoder(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        if Pooling(self.config.y_pooling) is Pooling.CLS:
            pooled = states[:, 0]  # (B, Hy)
        else:
            pooled = masked_mean(states, tok["attention_mask"])  # (B, Hy)
        out = self.y_head(pooled.to(self.y_head.weight.dtype))  # (B, D)
        return F.normalize(out, dim=-1) if normalize else out

    def forward(self, query: list[str], target: list[str], pixel_values: torch.Tensor | None = None,
                visual: torch.Tensor | None = None, gather: bool = True) -> dict[str, torch.Tensor]:
        """Training step: dict with 'loss', every loss term, 'pred' and 'target' (B, D) un-normalised."""
        pred = self.predict(query, pixel_values=pixel_values, visual=visual)
        tgt = self.encode_text(target)
        losses = vljepa_loss(pred, tgt, self.config.loss, self.logit_scale_value(),
                             target_ids=text_ids(list(target)).to(pred.device), gather=gather)
        return {**losses, "pred": pred, "target": tgt}

    # ----------------------------------------------------------------- save / load
    def _x_encoder_in_checkpoint(self) -> bool:
        c = self.config
        return c.save_x_encoder or not c.freeze_x_encoder or c.x_encoder_name_or_path is None

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:  # noqa: D417 (HF signature)
        """Config + trained weights + tokenizers; the X-encoder only when it cannot be re-fetched."""
        state = self.state_dict()
        if not self._x_encoder_in_checkpoint():
            state = {k: v for k, v in state.items() if not k.startswith("x_encoder.")}
        super().save_pretrained(save_directory, state_dict=state, **kwargs)
        self._require_tokenizers()
        self.predictor_tokenizer.save_pretrained(Path(save_directory) / "predictor_tokenizer")
        self.y_tokenizer.save_pretrained(Path(save_directory) / "y_tokenizer")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args, **kwargs) -> VLJepaModel:  # noqa: D417
        """Inverse of save_pretrained: weights, tokenizers, and the X-encoder from its source."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if not model._x_encoder_in_checkpoint():
            x = load_x_encoder(model.config.x_encoder_name_or_path)  # SigLIP/CLIP: the vision tower only
            model.x_encoder = x.to(device=model.device, dtype=next(model.x_encoder.parameters()).dtype)
            model.set_x_encoder_trainable(False)
        src = str(pretrained_model_name_or_path)
        model.attach_tokenizers(AutoTokenizer.from_pretrained(src, subfolder="predictor_tokenizer"),
                                AutoTokenizer.from_pretrained(src, subfolder="y_tokenizer"))
        return model

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameters, overall and per part (meta tensors count too). V-JEPA 2's
        own predictor, which VL-JEPA never runs, is left out and reported as `x_encoder_unused`."""
        unused = unused_x_encoder_part(self.x_encoder)
        skip = {id(p) for p in unused.parameters()} if unused is not None else set()

        def count(module: nn.Module, trainable_only: bool = False) -> int:
            return sum(p.numel() for p in module.parameters()
                       if id(p) not in skip and (p.requires_grad or not trainable_only))

        parts = {"x_encoder": self.x_encoder, "predictor": self.predictor, "y_encoder": self.y_encoder,
                 "heads": nn.ModuleList([self.visual_proj, self.predictor_head, self.y_head])}
        out = {f"{n}_total": count(m) for n, m in parts.items()}
        out.update(total=count(self), trainable=count(self, True), x_encoder_unused=len(skip) and
                   sum(p.numel() for p in unused.parameters()))
        return out
