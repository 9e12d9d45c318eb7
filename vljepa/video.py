"""Media decoding for VL-JEPA: videos with PyAV (the `video` extra), images with Pillow.

Data flow: a path (+ optional start/end seconds) -> count the frames of that window from the
container's packets (demuxing only, no decoding) -> pick `num_frames` indices uniformly (the
centre of each of `num_frames` equal segments) -> decode once more and convert only the picked
frames to RGB -> uint8 tensor (T, 3, H, W). Memory holds `num_frames` RGB frames, never the
window (a 132-frame 720p clip used to keep every decoded frame: ~245 MB). Images become
1-frame clips (`load_clip` repeats them to a clip). Unreadable or corrupt files raise
`MediaError` naming the file and the fix; training datasets can skip and count them instead.

torchvision / torchcodec do not load beside the CPU torch build (DESIGN.md section 3), so
decoding goes through PyAV directly.

    frames = load_media("clip.mp4", num_frames=8, start=1.0, end=3.5)  # (8, 3, H, W) uint8
    clip = load_clip("photo.jpg", num_frames=8)                        # (8, 3, H, W): a still clip
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class MediaError(RuntimeError):
    """A media file that cannot be read; the message names the file."""


def check_num_frames(num_frames: int) -> int:
    """num_frames as a positive int, or a ValueError that names it."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames={num_frames!r} must be a positive integer (frames sampled per clip)")
    return num_frames


def uniform_indices(n_available: int, num_frames: int) -> list[int]:
    """Centres of `num_frames` equal segments of [0, n_available); repeats frames of short clips."""
    check_num_frames(num_frames)
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


def _in_window(t: float | None, start: float | None, end: float | None) -> int:
    """-1 before the window, 0 inside, 1 after (frames without a timestamp count as inside)."""
    if t is None:
        return 0
    if start is not None and t < start:
        return -1
    return 1 if end is not None and t > end else 0


def _seek(container, stream, start: float | None) -> None:
    if start and stream.time_base is not None:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)


def _count_window(container, stream, start: float | None, end: float | None) -> int:
    """Frames whose presentation time lies in [start, end], from packet timestamps (no decoding)."""
    _seek(container, stream, start)
    count = 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the flush packet at the end
            continue
        t = float(packet.pts * stream.time_base) if packet.pts is not None and stream.time_base else None
        count += _in_window(t, start, end) == 0
    return count


def _decode_picked(container, stream, start: float | None, end: float | None, picks: list[int]) -> dict:
    """{window frame index: RGB array} for the picked indices; frames are converted only when picked."""
    _seek(container, stream, start)
    wanted, got, i, last = set(picks), {}, 0, None
    for frame in container.decode(stream):
        where = _in_window(frame.time, start, end)
        if where < 0:
            continue
        if where > 0 or i > picks[-1]:
            break
        if i in wanted:
            got[i] = frame.to_ndarray(format="rgb24")
        last, i = frame, i + 1
    if last is not None and len(got) < len(wanted):  # fewer decodable frames than packets: reuse the last
        tail = last.to_ndarray(format="rgb24")
        got.update({j: got.get(j, tail) for j in wanted})
    return got


def decode_video(path: str | Path, num_frames: int, start: float | None = None,
                 end: float | None = None) -> torch.Tensor:
    """Decode `num_frames` uniformly sampled RGB frames of [start, end] seconds -> (T, 3, H, W) uint8.

    Only the sampled frames are converted and kept: memory is O(num_frames), whatever the window."""
    av = _import_av()
    check_num_frames(num_frames)
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video {path} does not exist; fix the manifest path (paths are relative to the manifest)")
    got: dict = {}
    try:
        with av.open(str(path)) as container:  # pass 1: count the window's frames from packets
            n = _count_window(container, container.streams.video[0], start, end)
        picks = uniform_indices(n, num_frames) if n else []
        if picks:
            with av.open(str(path)) as container:  # pass 2: decode, keeping only the picked frames
                got = _decode_picked(container, container.streams.video[0], start, end, picks)
    except (av.FFmpegError, IndexError) as e:
        raise MediaError(f"cannot decode video {path}: {e}; re-encode it (ffmpeg -i in -c:v libx264 out.mp4) "
                         "or remove it from the data (training recipes can skip and count such files with "
                         "data.skip_bad_media=true)") from e
    if not got:
        raise MediaError(f"video {path} has no frames in [{start}, {end}] s; check start/end in the manifest")
    return torch.from_numpy(np.stack([got[i] for i in picks])).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)


def load_image(path: str | Path) -> torch.Tensor:
    """An image as a 1-frame clip (1, 3, H, W) uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.array(img.convert("RGB"))  # a writable copy
    except (OSError, UnidentifiedImageError) as e:
        raise MediaError(f"cannot read image {path}: {e}; fix or remove it (training recipes can skip and count "
                         "such files with data.skip_bad_media=true)") from e
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def load_media(path: str | Path, num_frames: int, start: float | None = None,
               end: float | None = None) -> torch.Tensor:
    """Image (by suffix) -> (1, 3, H, W); anything else is decoded as video -> (num_frames, 3, H, W)."""
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return load_image(path)
    return decode_video(path, num_frames, start, end)


def load_clip(path: str | Path, num_frames: int, start: float | None = None,
              end: float | None = None) -> torch.Tensor:
    """`load_media`, with stills repeated to a clip: always (num_frames, 3, H, W) uint8."""
    frames = load_media(path, check_num_frames(num_frames), start, end)
    return frames.expand(num_frames, -1, -1, -1) if frames.shape[0] == 1 and num_frames > 1 else frames
