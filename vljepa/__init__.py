"""VL-JEPA: predict target-text embeddings from a frozen vision encoder; selective decoding.

Importing the package registers `VLJepaConfig` / `VLJepaModel` with AutoConfig / AutoModel,
so `AutoModel.from_pretrained(saved_dir)` works. Kept light on purpose: pipelines, decoders
and streaming live in their own modules and are imported where used.
"""

from transformers import AutoConfig, AutoModel

from vljepa.configuration import LossType, Pooling, VLJepaConfig
from vljepa.modeling import VLJepaModel, build_tiny_vljepa, build_vljepa, normalize

AutoConfig.register("vljepa", VLJepaConfig, exist_ok=True)
AutoModel.register(VLJepaConfig, VLJepaModel, exist_ok=True)

__all__ = ["LossType", "Pooling", "VLJepaConfig", "VLJepaModel", "build_tiny_vljepa", "build_vljepa", "normalize"]
