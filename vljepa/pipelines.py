"""Hugging Face pipelines for a saved VL-JEPA model, registered with transformers at import.

    import vljepa.pipelines  # registers the three tasks below
    clf = pipeline("zero-shot-video-classification", model="runs/tiny")
    clf("clip.mp4", candidate_labels=["moves left", "grows"])       # -> [{"label", "score"}, ...]
    emb = pipeline("video-feature-extraction", model="runs/tiny")
    emb("clip.mp4")["embedding"]; emb({"text": "a red 3 moves left"})["embedding"]
    cap = pipeline("video-captioning", model="runs/tiny")           # needs runs/tiny/y_decoder/
    cap("long.mp4", rate_hz=0.5)                                    # -> [{"t", "start", "end", "caption"}]

Frames per clip and the query default to what the model was trained with (`config.num_frames`,
`config.default_query`, recorded by `vljepa train`); asking for others works, with a warning.

Data flow:
- classification / features: a video path, an image path, frames (T, 3, H, W) or (T, H, W, 3)
  as uint8 / [0, 255] floats / [0, 1] floats, or a PIL image -> `vljepa.video.load_clip` (PyAV)
  or uniform subsampling of an array to the model's frame count -> the X-encoder's own preprocessing
  (`VideoTransform.for_encoder`) -> `model.predict(query, pixel_values)` -> unit embedding;
  candidate labels (through `hypothesis_template`) -> `encode_text` -> softmax of the scaled
  cosine (the model's logit scale), as CLIP's zero-shot image pipeline does.
- captioning: the whole video is streamed (`vljepa.stream`: sliding windows -> one predicted
  embedding per stride) -> selective decoding (`vljepa.segment`): offline Ward segmentation
  under a decode budget (the paper's evaluated setting) or the online trigger -> the Y-decoder
  (`vljepa.decoder`) captions each decode point only.
"""

from __future__ import annotations

import enum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from vljepa.processing import VideoTransform

CLASSIFY_TASK = "zero-shot-video-classification"
FEATURE_TASK = "video-feature-extraction"
CAPTION_TASK = "video-captioning"


def _check_unknown(kwargs: dict, known: set[str], task: str) -> None:
    """transformers hands every call keyword to _sanitize_parameters; reject typos by name."""
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"{task}: unknown argument(s) {unknown}; valid ones are {sorted(known)}")


class _VLJepaPipeline(Pipeline):
    """Shared media loading: the model tokenizes its own texts, so no processor is loaded."""

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, model, num_frames: int | None = None, **kwargs):  # noqa: D417 (Pipeline signature)
        super().__init__(model=model, **kwargs)
        self.num_frames = self.model.config.inference_num_frames(num_frames)  # trained count by default
        self.transform = VideoTransform.for_encoder(self.model.config.x_encoder)

    def _frames(self, video) -> torch.Tensor:
        """Any supported input -> (num_frames, 3, H, W) in [0, 255]; stills are repeated to a clip."""
        from vljepa.video import load_clip, uniform_indices

        if isinstance(video, str | Path):
            return load_clip(video, self.num_frames)
        if isinstance(video, torch.Tensor | np.ndarray):
            frames = _as_frames(torch.as_tensor(video))
        elif hasattr(video, "convert"):  # a PIL image
            frames = torch.from_numpy(np.array(video.convert("RGB"))).permute(2, 0, 1)[None]
        else:
            raise TypeError(f"unsupported video input {type(video).__name__}; pass a path, frames "
                            "(T, 3, H, W) / (T, H, W, 3), or a PIL image")
        if frames.shape[0] == 1:
            return frames.expand(self.num_frames, -1, -1, -1)
        if frames.shape[0] != self.num_frames:  # e.g. 100 decoded frames -> the model's 8, uniformly
            frames = frames[uniform_indices(frames.shape[0], self.num_frames)]
        return frames

    def _pixels(self, video) -> torch.Tensor:
        return self.transform(self._frames(video))[None]  # (1, T, 3, S, S)

    def _query(self, query: str | None) -> str:
        return self.model.config.inference_query(query)  # the training query unless one is given


def _as_frames(frames: torch.Tensor) -> torch.Tensor:
    """An array of frames -> (T, 3, H, W) on the [0, 255] scale. Float frames whose values all lie in
    [0, 1] are read as [0, 1] images (as PIL/torchvision produce them) and scaled by 255."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4:
        raise ValueError(f"frames must be (T, 3, H, W) or (T, H, W, 3), got shape {tuple(frames.shape)}")
    if frames.shape[1] != 3 and frames.shape[-1] == 3:  # (T, H, W, 3) -> (T, 3, H, W)
        frames = frames.permute(0, 3, 1, 2)
    if frames.is_floating_point():
        if not torch.isfinite(frames).all():
            raise ValueError("frames contain NaN or inf")
        if frames.numel() and frames.min() >= 0 and frames.max() <= 1:
            frames = frames * 255.0
    return frames


class ZeroShotVideoClassificationPipeline(_VLJepaPipeline):
    """`pipe(video, candidate_labels=[...], hypothesis_template="{}", query=None)` -> sorted labels."""

    def _sanitize_parameters(self, **kwargs):
        _check_unknown(kwargs, {"candidate_labels", "hypothesis_template", "query"}, CLASSIFY_TASK)
        pre = {k: kwargs[k] for k in ("candidate_labels", "hypothesis_template", "query") if k in kwargs}
        return pre, {}, {}

    def preprocess(self, video, candidate_labels=None, hypothesis_template="{}", query=None):
        if not candidate_labels:
            raise ValueError("zero-shot-video-classification needs candidate_labels=[...]")
        return {"pixel_values": self._pixels(video), "labels": list(candidate_labels),
                "texts": [hypothesis_template.format(c) for c in candidate_labels], "query": self._query(query)}

    def _forward(self, inputs):
        pred = F.normalize(self.model.predict([inputs["query"]], pixel_values=inputs["pixel_values"]), dim=-1)
        texts = F.normalize(self.model.encode_text(inputs["texts"]), dim=-1)  # (C, D)
        logits = self.model.logit_scale_value() * pred @ texts.T  # (1, C)
        return {"logits": logits, "labels": inputs["labels"]}

    def postprocess(self, outputs):
        probs = outputs["logits"][0].float().softmax(-1).tolist()
        ranked = sorted(zip(probs, outputs["labels"]), key=lambda x: -x[0])
        return [{"label": label, "score": score} for score, label in ranked]


class VideoFeatureExtractionPipeline(_VLJepaPipeline):
    """`pipe(video, query=None)` -> predicted embedding; `pipe({"text": ...})` -> Y-encoder embedding."""

    def _sanitize_parameters(self, **kwargs):
        _check_unknown(kwargs, {"query", "normalize"}, FEATURE_TASK)
        pre = {"query": kwargs["query"]} if "query" in kwargs else {}
        post = {"normalize": kwargs["normalize"]} if "normalize" in kwargs else {}
        return pre, {}, post

    def preprocess(self, inputs, query=None):
        if isinstance(inputs, dict):
            if set(inputs) != {"text"}:
                raise ValueError(f"text input must be {{'text': str}}, got keys {sorted(inputs)}")
            return {"text": inputs["text"]}
        return {"pixel_values": self._pixels(inputs), "query": self._query(query)}

    def _forward(self, inputs):
        if "text" in inputs:
            return {"embedding": self.model.encode_text([inputs["text"]]), "kind": "text"}
        return {"embedding": self.model.predict([inputs["query"]], pixel_values=inputs["pixel_values"]),
                "kind": "video"}

    def postprocess(self, outputs, normalize=True):
        emb = outputs["embedding"][0].float()
        return {"embedding": (F.normalize(emb, dim=-1) if normalize else emb).tolist(), "kind": outputs["kind"]}


class CaptionMode(enum.Enum):
    OFFLINE = "offline"  # Ward segmentation of the whole stream under the budget (paper's setting)
    ONLINE = "online"  # trigger on embedding change while streaming
    UNIFORM = "uniform"  # fixed-stride baseline


class VideoCaptioningPipeline(_VLJepaPipeline):
    """`pipe(video, mode="offline", rate_hz=0.5, ...)` -> timestamped captions from selective decoding."""

    _params = {"mode", "rate_hz", "max_decodes", "window_s", "stride_s", "query", "threshold", "min_gap_s",
               "max_new_tokens", "fps"}

    def __init__(self, model, decoder=None, **kwargs):  # noqa: D417 (Pipeline signature)
        super().__init__(model=model, **kwargs)
        if decoder is None:
            from vljepa.decoder import load_decoder

            decoder = load_decoder(self.model.name_or_path, device=self.device)
        self.decoder = decoder

    def _sanitize_parameters(self, **kwargs):
        _check_unknown(kwargs, self._params, CAPTION_TASK)
        pre_keys = {"window_s", "stride_s", "query", "fps"}
        pre = {k: v for k, v in kwargs.items() if k in pre_keys}
        post = {k: v for k, v in kwargs.items() if k not in pre_keys}
        return pre, {}, post

    def preprocess(self, video, window_s=2.0, stride_s=0.5, query=None, fps=None):
        from vljepa.stream import StreamConfig, embed_stream, iter_frames, iter_windows

        if isinstance(video, torch.Tensor | np.ndarray):
            if fps is None:
                raise ValueError("frames given as an array need fps=... to place captions in time")
            frames = torch.as_tensor(video)
            video = [(i / fps, f) for i, f in enumerate(frames)]
        cfg = StreamConfig(window_s=window_s, stride_s=stride_s, frames_per_window=self.num_frames,
                           query=self._query(query))
        stream = list(embed_stream(self.model, iter_windows(iter_frames(video, fps), cfg, self.transform), cfg))
        if not stream:
            raise ValueError("the video produced no frames")
        return {"times": np.array([t for t, _ in stream]), "embeddings": np.stack([e for _, e in stream])}

    def _forward(self, inputs):
        return inputs  # the stream was embedded in preprocess (it is the expensive, batched part)

    def postprocess(self, outputs, mode="offline", rate_hz=None, max_decodes=None, threshold=0.15,
                    min_gap_s=1.0, max_new_tokens=24):
        from vljepa.segment import DecodeBudget, TriggerConfig, online_points, segment_offline, uniform_points

        times, embs = outputs["times"], outputs["embeddings"]
        budget = DecodeBudget(rate_hz=rate_hz, max_decodes=max_decodes)
        mode = CaptionMode(mode)
        if mode is CaptionMode.OFFLINE:
            points = segment_offline(times, embs, budget)
        elif mode is CaptionMode.UNIFORM:
            points = uniform_points(times, embs, budget)
        else:
            points = online_points(times, embs, TriggerConfig(cosine_threshold=threshold, min_gap_s=min_gap_s),
                                   budget)
        if not points:
            return []
        z = torch.as_tensor(np.stack([p.embedding for p in points]), dtype=torch.float32)
        captions = self.decoder.generate(z, max_new_tokens=max_new_tokens)  # one batched decoder call
        return [{"t": float(p.t), "start": float(p.start), "end": float(p.end), "caption": c}
                for p, c in zip(points, captions)]


def register() -> None:
    """Register the three tasks with transformers' pipeline registry (idempotent)."""
    for task, cls in ((CLASSIFY_TASK, ZeroShotVideoClassificationPipeline),
                      (FEATURE_TASK, VideoFeatureExtractionPipeline),
                      (CAPTION_TASK, VideoCaptioningPipeline)):
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=cls, pt_model=AutoModel, type="multimodal")


register()
