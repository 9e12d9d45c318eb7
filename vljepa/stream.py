"""Streaming VL-JEPA over long videos: a sliding window -> one predicted embedding per step ->
selective decoding of captions only where the meaning changes (paper, "selective decoding").

Data flow:
  source (video file via PyAV | folder of frames | iterator of (t, frame (3, H, W) uint8))
  -> `iter_frames`: frames one at a time (never the whole video in memory)
  -> `iter_windows`: a deque of frames preprocessed ONCE each; every `stride_s` the last
     `window_s` seconds are sampled to `frames_per_window` frames (overlapping windows reuse
     the decoded, resized and normalised frames; the V-JEPA 2 encoder attends across the whole
     clip, so its tokens cannot be reused exactly between windows and are recomputed)
  -> `embed_stream`: `model.predict(query, pixel_values)` per window (or per batch of windows, a
     throughput choice that adds latency) -> (t, emb (D,)), yielded as soon as it is computed
  -> `iter_online` (vljepa.segment) decides, without calling the decoder, where to decode: once a
     change has settled, from the settled embedding
  -> `YDecoder.generate` -> (t, caption).
Memory is O(window + batch) whatever the video length.

    vljepa stream VIDEO --model DIR [--window 2 --stride 0.5 --threshold 0.15 --rate-hz 0.5 --batch-size 1]
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vljepa.segment import DecodeBudget, DecodePoint, Reference, TriggerConfig, iter_online
from vljepa.video import IMAGE_SUFFIXES, MediaError, _import_av, load_image, uniform_indices

Frame = tuple[float, torch.Tensor]  # (t seconds, uint8 (3, H, W))


@dataclass
class StreamConfig:
    """Sliding window over the stream (seconds) and how each window is fed to the model."""

    window_s: float = 2.0
    stride_s: float = 0.5
    frames_per_window: int = 8
    query: str = "what is happening?"
    batch_size: int = 1  # windows per model call: 1 = lowest latency; more = throughput, +(B-1)*stride_s latency

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.stride_s <= 0:
            raise ValueError(f"window_s and stride_s must be > 0, got {self.window_s}, {self.stride_s}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (1 = no added latency), got {self.batch_size}")
        if self.frames_per_window < 1:
            raise ValueError(f"frames_per_window must be >= 1, got {self.frames_per_window}")


def iter_video_frames(path: str | Path) -> Iterator[Frame]:
    """Decode a video file frame by frame with PyAV: (t, uint8 (3, H, W))."""
    av = _import_av()
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video {path} does not exist; pass a video file, a folder of frames or an iterator")
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 25)
            for i, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else i / rate
                yield float(t), torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    except av.FFmpegError as e:
        raise MediaError(f"cannot decode video {path}: {e}; re-encode it (ffmpeg -i in -c:v libx264 out.mp4)") from e


def iter_frame_dir(folder: str | Path, fps: float) -> Iterator[Frame]:
    """Image files of a folder in name order, stamped at `fps`."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"no image files ({sorted(IMAGE_SUFFIXES)}) in {folder}")
    for i, p in enumerate(files):
        yield i / fps, load_image(p)[0]


def iter_frames(source: str | Path | Iterable[Frame], fps: float | None = None) -> Iterator[Frame]:
    """Any supported source -> (t, frame) iterator. A folder needs `fps`."""
    if isinstance(source, str | Path):
        if Path(source).is_dir():
            if fps is None or fps <= 0:
                raise ValueError(f"{source} is a folder of frames: pass fps= (frames per second, > 0) to stamp them, "
                                 f"got {fps}")
            return iter_frame_dir(source, fps)
        return iter_video_frames(source)
    return iter(source)


def iter_windows(frames: Iterable[Frame], cfg: StreamConfig,
                 transform: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[tuple[float, torch.Tensor]]:
    """(window centre t, clip (frames_per_window, C, S, S)) every `stride_s` once a window is full.

    Each frame goes through `transform` once and is kept only while some window still needs it."""
    buf: deque[tuple[float, torch.Tensor]] = deque()
    t0 = next_end = None
    for t, frame in frames:
        if t0 is None:
            t0 = t
            next_end = t0 + cfg.window_s
        # emit every window whose end lies before this frame
        while t >= next_end and buf:
            yield _window(buf, next_end, cfg)
            next_end += cfg.stride_s
            while buf and buf[0][0] < next_end - cfg.window_s:
                buf.popleft()
        buf.append((t, transform(frame[None])[0]))  # (C, S, S), preprocessed once
    if buf and next_end - t0 == cfg.window_s:  # shorter than one window: one embedding for all of it
        yield _window(buf, buf[-1][0] + 1e-6, cfg)


def _window(buf: deque, end: float, cfg: StreamConfig) -> tuple[float, torch.Tensor]:
    inside = [f for t, f in buf if end - cfg.window_s <= t < end] or [buf[-1][1]]
    clip = torch.stack([inside[i] for i in uniform_indices(len(inside), cfg.frames_per_window)])
    start = max(buf[0][0], end - cfg.window_s)
    return (start + end) / 2, clip  # (T, C, S, S)


@torch.no_grad()
def embed_stream(model, windows: Iterable[tuple[float, torch.Tensor]], cfg: StreamConfig,
                 stats: dict | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Predicted embeddings (t, (D,)) for each window, `cfg.batch_size` windows per model call.

    Each embedding is yielded as soon as its call returns. With `batch_size=1` (the default) that
    is as soon as its window is complete: no added latency, for live streams. A larger batch is a
    throughput choice for recorded files: the first window of a batch waits for the next
    `batch_size - 1` windows, i.e. up to `(batch_size - 1) * stride_s` seconds of stream."""
    batch: list[tuple[float, torch.Tensor]] = []
    device = next(model.parameters()).device
    for item in windows:
        batch.append(item)
        if len(batch) < cfg.batch_size:
            continue
        yield from _predict_batch(model, batch, cfg, device, stats)
        batch = []
    if batch:
        yield from _predict_batch(model, batch, cfg, device, stats)


def _predict_batch(model, batch: list[tuple[float, torch.Tensor]], cfg: StreamConfig, device: torch.device,
                   stats: dict | None) -> list[tuple[float, np.ndarray]]:
    pixels = torch.stack([c for _, c in batch]).to(device)  # (B, T, C, S, S)
    pred = model.predict([cfg.query] * len(batch), pixel_values=pixels, normalize=True)  # (B, D)
    if stats is not None:
        stats["windows"] = stats.get("windows", 0) + len(batch)
        stats["model_calls"] = stats.get("model_calls", 0) + 1
    return [(t, e) for (t, _), e in zip(batch, pred.float().cpu().numpy())]


def decode_points(decoder, points: Iterable[DecodePoint], stats: dict | None = None) -> Iterator[tuple[float, str]]:
    """Caption each decode point as it arrives (one decoder call per point, counted in `stats`)."""
    for p in points:
        caption = decoder.generate(torch.as_tensor(p.embedding, dtype=torch.float32)[None])[0]
        if stats is not None:
            stats["decodes"] = stats.get("decodes", 0) + 1
        yield p.t, caption


class _Counted:
    """Wrap a frame iterator to count frames as they pass."""

    def __init__(self, frames: Iterable[Frame], stats: dict):
        self.frames, self.stats = frames, stats

    def __iter__(self) -> Iterator[Frame]:
        for item in self.frames:
            self.stats["frames"] = self.stats.get("frames", 0) + 1
            yield item


def caption_stream(model, decoder, transform, source, cfg: StreamConfig, trigger: TriggerConfig,
                   budget: DecodeBudget | None = None, fps: float | None = None,
                   stats: dict | None = None) -> Iterator[tuple[float, str]]:
    """The whole pipeline: source -> windows -> embeddings -> online trigger -> captions."""
    stats = {} if stats is None else stats
    frames = _Counted(iter_frames(source, fps), stats)
    embeddings = embed_stream(model, iter_windows(frames, cfg, transform), cfg, stats)
    yield from decode_points(decoder, iter_online(embeddings, trigger, budget), stats)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vljepa stream", description="Caption a long video with selective decoding.")
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--model", required=True, help="folder with a saved VLJepaModel and its y_decoder/")
    p.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames")
    p.add_argument("--window", type=float, default=2.0, help="window length, seconds")
    p.add_argument("--stride", type=float, default=0.5, help="window stride, seconds")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per window (default: the frame count the model was trained with)")
    p.add_argument("--query", default=None, help="query (default: the model's training query)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="windows per model call: 1 adds no latency; B adds up to (B-1)*stride seconds")
    p.add_argument("--threshold", type=float, default=0.15, help="cosine distance that detects a change")
    p.add_argument("--variance-threshold", type=float, default=None)
    p.add_argument("--settle-steps", type=int, default=1, help="stable steps before a change is decoded")
    p.add_argument("--settle-tol", type=float, default=None,
                   help="step-to-step cosine distance counted as stable (default: half the threshold)")
    p.add_argument("--max-wait", type=float, default=3.0,
                   help="seconds after which a change that never settles is decoded (its least mixed moment)")
    p.add_argument("--min-gap", type=float, default=1.0, help="seconds between decodes, at least")
    p.add_argument("--pool-steps", type=int, default=TriggerConfig.pool_steps,
                   help="once a change has settled, decode the mean of this many steps of the new segment "
                        "(less noise; up to (N - settle_steps - 1) x stride more latency; 0 = decode as soon as settled)")
    p.add_argument("--reference", choices=[r.value for r in Reference], default=Reference.DECODED.value,
                   help="what a change is measured against: the last decoded embedding, or the running mean "
                        "of the steps since (steadier on noisy streams)")
    p.add_argument("--rate-hz", type=float, default=None, help="decode budget: average decodes per second")
    p.add_argument("--max-decodes", type=int, default=None, help="decode budget: hard cap")
    p.add_argument("--max-new-tokens", type=int, default=24)
    return p


def cli_main(argv: list[str]) -> int:
    """`vljepa stream VIDEO --model DIR`: print timestamped captions as they are decoded."""
    from vljepa.decoder import load_decoder
    from vljepa.modeling import VLJepaModel
    from vljepa.processing import VideoTransform

    parser = _parser()
    args = parser.parse_args(argv)
    video = Path(args.video)
    if not video.exists():  # fail before loading the model
        parser.error(f"video {video} does not exist; pass a video file or a folder of frames (with --fps)")
    if video.is_dir() and (args.fps is None or args.fps <= 0):
        parser.error(f"{video} is a folder of frames: pass --fps (frames per second, > 0) to stamp them")
    if not Path(args.model).is_dir():
        parser.error(f"--model {args.model} is not a folder; pass the folder of a saved VLJepaModel with its y_decoder/")
    try:
        trigger = TriggerConfig(cosine_threshold=args.threshold, variance_threshold=args.variance_threshold,
                                settle_steps=args.settle_steps, settle_tol=args.settle_tol, max_wait_s=args.max_wait,
                                min_gap_s=args.min_gap, reference=args.reference, pool_steps=args.pool_steps)
        budget = DecodeBudget(rate_hz=args.rate_hz, max_decodes=args.max_decodes)
        cfg = StreamConfig(window_s=args.window, stride_s=args.stride, batch_size=args.batch_size,
                           frames_per_window=args.frames or StreamConfig.frames_per_window)
    except ValueError as e:
        parser.error(str(e))
    decoder = load_decoder(args.model)  # first: its missing-decoder message is the likelier, cheaper failure
    model = VLJepaModel.from_pretrained(args.model).eval()
    cfg = replace(cfg, frames_per_window=model.config.inference_num_frames(args.frames),  # trained count
                  query=model.config.inference_query(args.query))  # training query unless given
    stats: dict = {}
    transform = VideoTransform.for_encoder(model.config.x_encoder)
    for t, caption in caption_stream(model, decoder, transform, args.video, cfg, trigger, budget, args.fps, stats):
        print(f"[{t:8.2f}s] {caption}", flush=True)
    print(f"decodes: {stats.get('decodes', 0)}  windows: {stats.get('windows', 0)}  "
          f"frames: {stats.get('frames', 0)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
