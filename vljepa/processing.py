"""Preprocessing for VL-JEPA: plain-torch video/image transforms and `VLJepaProcessor`.

Data flow: uint8 frames (T, 3, H, W) (from `vljepa.video`) -> resize the shortest edge ->
centre crop -> /255 -> mean/std normalise -> float (T, 3, S, S); a batch is stacked to
(B, T, 3, S, S) = `pixel_values` for `VLJepaModel.encode_video`.

Written in plain torch because every transformers video processor needs torchvision, which
does not load beside the CPU torch build (DESIGN.md section 3). `VideoTransform.for_encoder`
reproduces the encoder's own processor settings: V-JEPA 2 (shortest edge crop*256/224,
bilinear, centre crop, ImageNet mean/std), SigLIP (resize to the square, mean/std 0.5), CLIP
(shortest edge, bicubic, centre crop, CLIP mean/std). tests/test_vljepa_data.py compares
against the transformers processor when torchvision imports.

`VLJepaProcessor` bundles the transform with both tokenizers and the frame count, and saves
/ loads beside the model (`processor_config.json`, `predictor_tokenizer/`, `y_tokenizer/`).

    proc = VLJepaProcessor.from_model(model, num_frames=8)
    batch = proc(videos=[frames1, frames2], query=["what happens?"] * 2, target=["a cat", "a dog"])
    out = model(**batch)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from jepa_common.io import atomic_write_json

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROCESSOR_FILE = "processor_config.json"


@dataclass
class VideoTransform:
    """Resize (shortest edge, or to a square when `square`), centre crop, rescale, normalise."""

    crop_size: int = 256
    resize_size: int = 292  # V-JEPA 2: int(256 * 256 / 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    square: bool = False

    @classmethod
    def for_encoder(cls, x_encoder_config: dict) -> VideoTransform:
        """Settings of the X-encoder's own processor, from its config dict (VLJepaConfig.x_encoder)."""
        model_type = x_encoder_config["model_type"]
        if model_type == "vjepa2":
            crop = int(x_encoder_config["crop_size"])
            return cls(crop_size=crop, resize_size=int(crop * 256 / 224))
        if model_type in ("siglip_vision_model", "siglip2_vision_model"):
            size = int(x_encoder_config["image_size"])
            return cls(crop_size=size, resize_size=size, mean=(0.5,) * 3, std=(0.5,) * 3, square=True)
        if model_type == "clip_vision_model":
            size = int(x_encoder_config["image_size"])
            return cls(crop_size=size, resize_size=size, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic")
        raise ValueError(f"no preprocessing preset for X-encoder type {model_type!r}; "
                         "build VideoTransform(crop_size=..., resize_size=..., mean=..., std=...) yourself")

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 255] float frames (T, 3, H, W) -> normalised float (T, 3, crop, crop)."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
        x = frames.float()  # (T, 3, H, W)
        h, w = x.shape[-2:]
        if self.square:
            size = (self.resize_size, self.resize_size)
        else:
            scale = self.resize_size / min(h, w)
            size = (max(self.resize_size, int(h * scale)), max(self.resize_size, int(w * scale)))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode=self.interpolation, align_corners=False, antialias=True)
        top, left = (x.shape[-2] - self.crop_size) // 2, (x.shape[-1] - self.crop_size) // 2
        x = x[..., top:top + self.crop_size, left:left + self.crop_size]  # (T, 3, crop, crop)
        x = x.clamp(0, 255) / 255.0
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


class VLJepaProcessor:
    """Video transform + predictor tokenizer + Y-encoder tokenizer + frames per clip."""

    def __init__(self, transform: VideoTransform, predictor_tokenizer, y_tokenizer, num_frames: int):
        self.transform = transform
        self.predictor_tokenizer = predictor_tokenizer
        self.y_tokenizer = y_tokenizer
        self.num_frames = num_frames

    @classmethod
    def from_model(cls, model, num_frames: int) -> VLJepaProcessor:
        return cls(VideoTransform.for_encoder(model.config.x_encoder), model.predictor_tokenizer,
                   model.y_tokenizer, num_frames)

    def pixel_values(self, videos: list[torch.Tensor]) -> torch.Tensor:
        """List of uint8 (T_i, 3, H, W) clips -> (B, T, 3, S, S); each T_i must equal num_frames or be 1."""
        clips = [self.transform(v) for v in videos]
        lengths = {c.shape[0] for c in clips}
        if len(lengths) != 1:
            raise ValueError(f"clips have different frame counts {sorted(lengths)}; decode with "
                             f"num_frames={self.num_frames} (vljepa.video.load_media)")
        return torch.stack(clips)

    def __call__(self, videos: list[torch.Tensor], query: list[str] | None = None,
                 target: list[str] | None = None) -> dict:
        """A batch for `VLJepaModel.forward` / `predict`: pixel_values plus the raw texts
        (the model tokenizes them itself with the same tokenizers)."""
        out: dict = {"pixel_values": self.pixel_values(videos)}
        if query is not None:
            out["query"] = list(query)
        if target is not None:
            out["target"] = list(target)
        return out

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        atomic_write_json(directory / PROCESSOR_FILE, {"num_frames": self.num_frames,
                                                       "transform": asdict(self.transform)})
        self.predictor_tokenizer.save_pretrained(directory / "predictor_tokenizer")
        self.y_tokenizer.save_pretrained(directory / "y_tokenizer")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> VLJepaProcessor:
        directory = Path(directory)
        if not (directory / PROCESSOR_FILE).is_file():
            raise FileNotFoundError(f"no {PROCESSOR_FILE} in {directory}; save one with processor.save_pretrained "
                                    "or build it with VLJepaProcessor.from_model(model, num_frames)")
        data = json.loads((directory / PROCESSOR_FILE).read_text())
        t = data["transform"]
        transform = VideoTransform(**{**t, "mean": tuple(t["mean"]), "std": tuple(t["std"])})
        return cls(transform, AutoTokenizer.from_pretrained(directory / "predictor_tokenizer"),
                   AutoTokenizer.from_pretrained(directory / "y_tokenizer"), data["num_frames"])
