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
import warnings

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
        default_query: query used by retrieval/classification calls, pipelines and `vljepa stream`
            when none is given; training sets it to the most frequent training query.
        num_frames: frames per clip the model was trained with (set by `vljepa train`; 0 = not
            recorded, then the X-encoder's own `frames_per_clip`). Inference uses it by default.
        training_queries: the distinct queries seen in training, most frequent first (at most 32).
        freeze_predictor_embeddings: keep the predictor LM's token-embedding table fixed (it is
            most of the predictor's parameters: 263M of Llama-3.2-1B's last 8 layers + table).
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
    num_frames: int = 0
    training_queries: list | None = None
    freeze_predictor_embeddings: bool = False

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

    def inference_num_frames(self, requested: int | None = None) -> int:
        """Frames per clip for inference: `requested` if given (with a warning when it differs from
        what the model was trained with), else the trained count, else the X-encoder's own."""
        trained = int(self.num_frames or 0)
        if requested:
            if trained and requested != trained:
                warnings.warn(f"num_frames={requested} differs from the {trained} frames per clip this model "
                              "was trained with; predictions may degrade (and cost scales with frames)",
                              stacklevel=2)
            return int(requested)
        return trained or int((self.x_encoder or {}).get("frames_per_clip") or 8)

    def inference_query(self, requested: str | None = None) -> str:
        """The query for inference: `requested` if given (warning when it was never seen in training),
        else `default_query` (the most frequent training query once trained)."""
        if requested is None:
            return self.default_query
        seen = self.training_queries or []
        if seen and requested not in seen:
            warnings.warn(f"query {requested!r} was never seen in training (trained with {seen[:3]}"
                          f"{' ...' if len(seen) > 3 else ''}); the default is {self.default_query!r}",
                          stacklevel=2)
        return requested

    @property
    def is_video_encoder(self) -> bool:
        """True when the X-encoder takes clips; image encoders are applied frame by frame."""
        return (self.x_encoder or {}).get("model_type") in VIDEO_ENCODERS
