"""Media decoding for VL-JEPA: videos with PyAV (the `video` extra), images with Pillow.

Data flow: a path (+ optional start/end seconds) -> decode the frames in that window ->
pick `num_frames` uniformly (the centre of each of `num_frames` equal segments) -> uint8
tensor (T, 3, H, W). Images become 1-frame clips. Unreadable or corrupt files raise
`MediaError` naming the file and the fix; datasets can skip and count them instead.

torchvision / torchcodec do not load beside the CPU torch build (DESIGN.md section 3), so
decoding goes through PyAV directly.

    frames = load_media("clip.mp4", num_frames=8, start=1.0, end=3.5)  # (8, 3, H, W) uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class MediaError(RuntimeError):
    """A media file that cannot be read; the message names the file."""


def uniform_indices(n_available: int, num_frames: int) -> list[int]:
    """Centres of `num_frames` equal segments of [0, n_available); repeats frames of short clips."""
    if n_available <= 0:
        raise ValueError("no frames to sample from")
    step = n_available / num_frames
    return [min(n_available - 1, int(step * i + step / 2)) for i in range(num_frames)]


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("video decoding needs PyAV: pip install 'jepa-lab[video]' (or pip install av)") from e
    return av


def decode_video(path: str | Path, num_frames: int, start: float | None = None,
                 end: float | None = None) -> torch.Tensor:
    """Decode `num_frames` uniformly sampled RGB frames of [start, end] seconds -> (T, 3, H, W) uint8."""
    av = _import_av()
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video {path} does not exist; fix the manifest path (paths are relative to the manifest)")
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if start and stream.time_base is not None:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = frame.time
                if start is not None and t is not None and t < start:
                    continue
                if end is not None and t is not None and t > end:
                    break
                frames.append(frame)
            sampled = [frames[i].to_ndarray(format="rgb24") for i in uniform_indices(len(frames), num_frames)] \
                if frames else []
    except (av.FFmpegError, IndexError) as e:
        raise MediaError(f"cannot decode video {path}: {e}; re-encode it (ffmpeg -i in -c:v libx264 out.mp4) "
                         "or set data.skip_bad_media=true to skip and count such files") from e
    if not sampled:
        raise MediaError(f"video {path} has no frames in [{start}, {end}] s; check start/end in the manifest")
    return torch.from_numpy(np.stack(sampled)).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)


def load_image(path: str | Path) -> torch.Tensor:
    """An image as a 1-frame clip (1, 3, H, W) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise MediaError(f"cannot read image {path}: {e}; set data.skip_bad_media=true to skip such files") from e
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def load_media(path: str | Path, num_frames: int, start: float | None = None,
               end: float | None = None) -> torch.Tensor:
    """Image (by suffix) -> (1, 3, H, W); anything else is decoded as video -> (num_frames, 3, H, W)."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return load_image(path)
    return decode_video(path, num_frames, start, end)
