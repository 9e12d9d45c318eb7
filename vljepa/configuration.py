"""`VLJepaConfig`: the Hugging Face config of a VL-JEPA model (model_type "vljepa").

A VL-JEPA model is three parts (DESIGN.md section 1, "VL-JEPA"):

    clip (B, T, C, H, W) -> X-encoder (frozen)          -> visual tokens (B, N, Dx)
    visual tokens + query text -> predictor (last n LM layers, bidirectional) -> (B, D)
    target text -> Y-encoder (sentence encoder, mean pool) -> Linear -> (B, D)

The config stores each part's own Hugging Face config as a plain dict (so a saved model
rebuilds offline, without a hub, from `config.json` alone) plus where its pretrained weights
came from (hub id or local path, or None for a randomly initialised part). The predictor
config already has `num_hidden_layers` = the number of layers kept (the *last* n layers of
the source LM).

    cfg = VLJepaConfig(x_encoder=VJEPA2Config(...).to_dict(), predictor=LlamaConfig(...).to_dict(),
                       y_encoder=BertConfig(...).to_dict(), embed_dim=1536)
"""

from __future__ import annotations

import enum

from transformers import AutoConfig, PretrainedConfig


class LossType(str, enum.Enum):
    """Training objective between predicted and target embeddings (paper ablation, section 4)."""

    INFONCE = "infonce"  # L2-normalised bidirectional InfoNCE (the paper's choice)
    COSINE = "cosine"  # 1 - cos(pred, target)
    L1 = "l1"  # mean |pred_n - target_n| on L2-normalised embeddings
    L2 = "l2"  # mean squared error on L2-normalised embeddings


class Pooling(str, enum.Enum):
    """How token states become one vector (masked over padding)."""

    MEAN = "mean"
    CLS = "cls"


VIDEO_ENCODERS = ("vjepa2",)  # model_types that take (B, T, C, H, W) clips natively


class VLJepaConfig(PretrainedConfig):
    """Configuration of `VLJepaModel`.

    Fields:
        x_encoder: the vision backbone's config dict (VJEPA2Config for video; SiglipVisionConfig /
            CLIPVisionConfig for images, which are run frame by frame).
        x_encoder_name_or_path: hub id or local folder of the pretrained X-encoder; None = weights
            live only in this model's save dir (random tiny encoders, or `save_x_encoder=True`).
        freeze_x_encoder: True (paper) = eval mode, no grad, not in the optimizer.
        save_x_encoder: also write the X-encoder weights into the save dir (offline use).
        predictor: the causal LM's config dict, with num_hidden_layers = layers kept.
        predictor_name_or_path / predictor_layers_from: source LM and the index of its first kept
            layer (e.g. 8 for layers 8-15 of Llama-3.2-1B).
        predictor_attn_implementation: "sdpa" or "eager" (both run bidirectionally).
        max_query_length: query tokens kept (paper: 512).
        y_encoder: the sentence encoder's transformer config dict (BERT/MiniLM, Gemma3 text, ...).
        y_encoder_name_or_path: its source; y_pooling: mean (paper) or cls.
        max_target_length: target tokens kept (paper: 512).
        embed_dim: shared embedding size D (paper: 1536).
        loss: infonce | cosine | l1 | l2; temperature: InfoNCE temperature (initial value when
            learn_temperature); learn_temperature: learnable logit scale (CLIP style).
        default_query: query used by retrieval/classification calls when none is given.
    """

    model_type = "vljepa"

    x_encoder: dict | None = None
    x_encoder_name_or_path: str | None = None
    freeze_x_encoder: bool = True
    save_x_encoder: bool = False
    predictor: dict | None = None
    predictor_name_or_path: str | None = None
    predictor_layers_from: int = 0
    predictor_attn_implementation: str = "sdpa"
    max_query_length: int = 512
    y_encoder: dict | None = None
    y_encoder_name_or_path: str | None = None
    y_pooling: str = "mean"
    max_target_length: int = 512
    embed_dim: int = 1536
    loss: str = "infonce"
    temperature: float = 0.07
    learn_temperature: bool = True
    default_query: str = ""

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # enum checks up front: a typo fails here, naming the valid values
        LossType(self.loss)
        Pooling(self.y_pooling)
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")

    def sub_config(self, part: str) -> PretrainedConfig:
        """The Hugging Face config object of 'x_encoder', 'predictor' or 'y_encoder'."""
        data = getattr(self, part)
        if data is None:
            raise ValueError(f"VLJepaConfig.{part} is empty; build configs with vljepa.modeling builders "
                             "(build_tiny_vljepa / build_vljepa) or pass the part's config dict")
        data = dict(data)
        model_type = data.pop("model_type")
        return AutoConfig.for_model(model_type, **data)

    @property
    def is_video_encoder(self) -> bool:
        """True when the X-encoder takes clips; image encoders are applied frame by frame."""
        return (self.x_encoder or {}).get("model_type") in VIDEO_ENCODERS
