"""VL-JEPA: predict target-text embeddings from a frozen vision encoder; selective decoding.

Importing the package registers `VLJepaConfig` / `VLJepaModel` with AutoConfig / AutoModel,
so `AutoModel.from_pretrained(saved_dir)` works, and registers the Hugging Face pipelines
(`zero-shot-video-classification`, `video-feature-extraction`, `video-captioning`) so that
`transformers.pipeline(task, model=saved_dir)` works after `import vljepa` (vljepa.pipelines adds
~20 ms: decoders and streaming are imported only when a captioning pipeline runs).
"""

from transformers import AutoConfig, AutoModel

from vljepa.builders import build_tiny_vljepa, build_vljepa
from vljepa.configuration import LossType, Pooling, VLJepaConfig
from vljepa.modeling import VLJepaModel, normalize

AutoConfig.register("vljepa", VLJepaConfig, exist_ok=True)
AutoModel.register(VLJepaConfig, VLJepaModel, exist_ok=True)

import vljepa.pipelines  # noqa: E402,F401  (registers the pipeline tasks; needs the Auto classes above)

__all__ = ["LossType", "Pooling", "VLJepaConfig", "VLJepaModel", "build_tiny_vljepa", "build_vljepa", "normalize"]
