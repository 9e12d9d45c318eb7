"""Synthetic video clips and long videos made of real handwritten digits (offline, seeded).

Data flow: `sklearn.datasets.load_digits` (1797 real 8x8 handwritten digits, shipped with
scikit-learn) -> one digit image is scaled, coloured and moved on a black canvas by an
*event* (a digit, a colour and an action such as "moves left" or "grows") -> uint8 frames
`(T, 3, H, W)` plus a canonical caption, paraphrased captions and a class label (the action).

- `make_clip_dataset(n)`: short labelled clips for training, zero-shot classification and
  retrieval (class = action, caption = "a red 3 moves left").
- `make_window_dataset(n_videos)`: sliding windows of long videos labelled with their dominant
  event, what a stream shows the model (part of an event, transitions), for training.
- `make_long_video(seed, n_events, kind=...)`: a long video made of consecutive events whose
  durations vary from short to long, with `(start_s, end_s, caption)` ground truth, for the
  selective-decoding benchmark (DESIGN.md section 1, "Selective decoding"). `StreamKind` picks
  how events change: hard cuts, gradual transitions (cross-fades, slow drifts of colour and
  position), actions that recur later, a distractor moving inside every event, or a mix of very
  short and very long events.
- `write_video(path, frames, fps)`: encode frames to an mp4 with PyAV (h264, else mpeg4).

Everything is deterministic from the seed (numpy Generator), pure numpy/torch.

    python -m vljepa.synthetic --out clip.mp4   # writes one long synthetic video
"""

from __future__ import annotations

import argparse
import enum
import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ACTIONS: tuple[str, ...] = (
    "moves left", "moves right", "moves up", "moves down", "appears", "disappears",
    "grows", "shrinks", "changes colour", "stays still",
)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (235, 220, 40),
    "cyan": (40, 220, 220), "magenta": (220, 50, 220), "white": (240, 240, 240), "orange": (245, 140, 30),
}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
QUERIES = (
    "what happens?", "what is the digit doing?", "describe the clip.", "what happens in this video?",
    "what do you see?",
)
# Paraphrase templates per action: {c} colour, {d} digit numeral, {w} digit word, {c2} new colour.
_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "moves left": ("the {c} digit {d} slides to the left", "a {c} {w} travels leftward",
                   "a {c} {d} is moving to the left"),
    "moves right": ("the {c} digit {d} slides to the right", "a {c} {w} travels rightward",
                    "a {c} {d} is moving to the right"),
    "moves up": ("the {c} digit {d} slides upward", "a {c} {w} rises", "a {c} {d} is moving up"),
    "moves down": ("the {c} digit {d} slides downward", "a {c} {w} falls", "a {c} {d} is moving down"),
    "appears": ("the {c} digit {d} fades in", "a {c} {w} shows up", "a {c} {d} comes into view"),
    "disappears": ("the {c} digit {d} fades out", "a {c} {w} vanishes", "a {c} {d} goes out of view"),
    "grows": ("the {c} digit {d} gets bigger", "a {c} {w} expands", "a {c} {d} is growing"),
    "shrinks": ("the {c} digit {d} gets smaller", "a {c} {w} contracts", "a {c} {d} is shrinking"),
    "changes colour": ("the digit {d} turns from {c} to {c2}", "a {c} {w} becomes {c2}",
                       "a {d} changes its colour from {c} to {c2}"),
    "stays still": ("the {c} digit {d} does not move", "a {c} {w} stays in place",
                    "a {c} {d} is standing still"),
}
_CANONICAL = re.compile(r"^an? (\w+) (\d) (.+?)(?: to (\w+))?$")


def class_names() -> list[str]:
    """Class names of `make_clip_dataset` labels (the action), index = label."""
    return list(ACTIONS)


@dataclass(frozen=True)
class Event:
    """One digit doing one action; `colour2` is the target colour of "changes colour"."""

    digit: int
    colour: str
    action: str
    colour2: str | None = None

    @property
    def caption(self) -> str:
        if self.action == "changes colour":
            return f"{_article(self.colour)} {self.digit} changes colour to {self.colour2}"
        return f"{_article(self.colour)} {self.digit} {self.action}"

    def paraphrases(self) -> list[str]:
        """The canonical caption first, then the paraphrases (references for CIDEr)."""
        fill = dict(c=self.colour, d=self.digit, w=DIGIT_WORDS[self.digit], c2=self.colour2)
        texts = [t.format(**fill) for t in _PARAPHRASES[self.action]]
        return [self.caption] + [re.sub(r"^a ([aeiou])", r"an \1", t) for t in texts]


def all_captions() -> list[str]:
    """Every canonical caption of the synthetic world (digit x colour x action, and the target colour
    of "changes colour"): the text a Y-decoder for these videos must be able to say."""
    events = [Event(d, c, a, c2) for d in range(10) for c in COLOURS for a in ACTIONS
              for c2 in ([x for x in COLOURS if x != c] if a == "changes colour" else [None])]
    return sorted(e.caption for e in events)


def _article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def parse_caption(caption: str) -> Event | None:
    """Canonical caption -> its `Event`, or None if the text is not one (e.g. a garbled decode)."""
    m = _CANONICAL.match(caption)
    if m is None or m.group(3) not in ACTIONS:
        return None
    return Event(int(m.group(2)), m.group(1), m.group(3), m.group(4))


def reference_captions(caption: str) -> list[str]:
    """Canonical caption -> [caption, paraphrases...]; raises ValueError for other text."""
    event = parse_caption(caption)
    if event is None:
        raise ValueError(f"{caption!r} is not a canonical synthetic caption like 'a red 3 moves left'")
    return event.paraphrases()


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)  # (1797, 8, 8)


def _digit_image(rng: np.random.Generator, digit: int) -> torch.Tensor:
    images, targets = _digits()
    idx = rng.choice(np.flatnonzero(targets == digit))
    return torch.from_numpy(images[idx])  # (8, 8) in [0, 1]


def _random_event(rng: np.random.Generator, action: str | None = None) -> Event:
    action = action or ACTIONS[rng.integers(len(ACTIONS))]
    names = list(COLOURS)
    colour = names[rng.integers(len(names))]
    colour2 = None
    if action == "changes colour":
        colour2 = [n for n in names if n != colour][rng.integers(len(names) - 1)]
    return Event(int(rng.integers(10)), colour, action, colour2)


def _trajectory(event: Event, p: np.ndarray, size: int, rng: np.random.Generator):
    """Per-frame centre x, centre y, scale and opacity for progress p in [0, 1]."""
    travel = 0.4 * size
    margin = 0.3 * size
    cx0, cy0 = rng.uniform(margin, size - margin, 2)
    dx = {"moves left": -1, "moves right": 1}.get(event.action, 0)
    dy = {"moves up": -1, "moves down": 1}.get(event.action, 0)
    if dx:
        cx0 = size / 2 - dx * travel / 2 + rng.uniform(-2, 2)
    if dy:
        cy0 = size / 2 - dy * travel / 2 + rng.uniform(-2, 2)
    cx = cx0 + dx * travel * p
    cy = cy0 + dy * travel * p
    scale = np.ones_like(p)
    if event.action == "grows":
        scale = 0.5 + 0.8 * p
    elif event.action == "shrinks":
        scale = 1.3 - 0.8 * p
    alpha = np.ones_like(p)
    if event.action == "appears":
        alpha = np.clip(2 * p, 0, 1)
    elif event.action == "disappears":
        alpha = np.clip(2 - 2 * p, 0, 1)
    return cx, cy, scale, alpha


def _paste(canvas: torch.Tensor, glyph: torch.Tensor, cx: float, cy: float) -> None:
    """Add `glyph` (3, h, w) onto `canvas` (3, H, W) centred at (cx, cy), clipped at the borders."""
    _, h, w = glyph.shape
    _, H, W = canvas.shape
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + w, W), min(y0 + h, H)
    if xe <= xs or ye <= ys:
        return
    canvas[:, ys:ye, xs:xe] = torch.maximum(canvas[:, ys:ye, xs:xe], glyph[:, ys - y0:ye - y0, xs - x0:xe - x0])


@dataclass(frozen=True)
class LeadIn:
    """Start of a drifting event: its first `frames` frames move from this colour and centre to its own."""

    colour: tuple[float, float, float]  # RGB in [0, 1]
    cx: float
    cy: float
    frames: int


def render_event(event: Event, n_frames: int, size: int, rng: np.random.Generator,
                 noise_std: float = 0.02) -> torch.Tensor:
    """Frames of one event: uint8 (T, 3, H, W). The digit image is a random real sample."""
    return _quantize(_render(event, n_frames, size, rng, noise_std)[0])  # (T, 3, H, W)


def _quantize(frames: torch.Tensor) -> torch.Tensor:
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def _render(event: Event, n_frames: int, size: int, rng: np.random.Generator, noise_std: float = 0.02,
            lead_in: LeadIn | None = None, image: torch.Tensor | None = None) -> tuple[torch.Tensor, list[LeadIn]]:
    """Float frames (T, 3, H, W) in [0, 1] (noise added, not clamped) and the state (colour, centre)
    of every frame, as `LeadIn`s for a following drift. Draws from `rng` in a fixed order; `image`
    (1, 1, 8, 8) reuses a digit sample instead of drawing one."""
    image = _digit_image(rng, event.digit)[None, None] if image is None else image  # (1, 1, 8, 8)
    p = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.zeros(1)
    cx, cy, scale, alpha = _trajectory(event, p, size, rng)
    c1 = torch.tensor(COLOURS[event.colour], dtype=torch.float32) / 255
    c2 = torch.tensor(COLOURS[event.colour2 or event.colour], dtype=torch.float32) / 255
    colours = [c1 + (c2 - c1) * float(p[t]) if event.action == "changes colour" else c1 for t in range(n_frames)]
    if lead_in is not None:  # slow drift from the previous event's colour and position
        w = np.clip((np.arange(n_frames) + 1) / max(1, lead_in.frames), 0, 1)  # (T,) 0 -> 1
        cx, cy = lead_in.cx + (cx - lead_in.cx) * w, lead_in.cy + (cy - lead_in.cy) * w
        start = torch.tensor(lead_in.colour, dtype=torch.float32)
        colours = [start + (c - start) * float(w[t]) for t, c in enumerate(colours)]
    base = 0.4 * size
    frames = torch.zeros(n_frames, 3, size, size)  # (T, 3, H, W) float in [0, 1]
    for t in range(n_frames):
        side = max(2, int(round(base * scale[t])))
        glyph = F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False)[0, 0]
        _paste(frames[t], glyph[None] * colours[t][:, None, None] * float(alpha[t]), cx[t], cy[t])
    if noise_std > 0:
        noise = torch.from_numpy(rng.normal(0, noise_std, frames.shape).astype(np.float32))
        frames = frames + noise
    states = [LeadIn(tuple(float(v) for v in c), float(x), float(y), 0) for c, x, y in zip(colours, cx, cy)]
    return frames, states


def make_clip_dataset(n: int, n_frames: int = 8, size: int = 32, seed: int = 0) -> list[dict]:
    """`n` labelled clips, classes balanced round-robin over ACTIONS then shuffled.

    Each item: frames uint8 (T, 3, H, W), label, label_name, caption, captions (canonical +
    paraphrases), query, digit, colour.
    """
    if n_frames < 2:
        raise ValueError(f"n_frames={n_frames}: an action needs at least 2 frames")
    rng = np.random.default_rng(seed)
    actions = [ACTIONS[i % len(ACTIONS)] for i in range(n)]
    rng.shuffle(actions)
    items = []
    for action in actions:
        event = _random_event(rng, action)
        items.append(_item(event, render_event(event, n_frames, size, rng), rng))
    return items


def make_window_dataset(n_videos: int, n_frames: int = 8, size: int = 32, seed: int = 0, n_events: int = 15,
                        fps: float = 4, window_s: float = 2.0, stride_s: float = 1.0) -> list[dict]:
    """Sliding windows of `n_videos` long videos (`make_long_video`, cycling through every `StreamKind`),
    each labelled with the event it overlaps most; the same item fields as `make_clip_dataset`.

    A training clip shows a whole event in `n_frames` frames; a stream window shows `window_s` seconds
    of an event lasting 2-20 s (a tenth of a slow "moves left", only the faded-in half of "appears",
    a cross-fade, a distractor), so these windows are training data that looks like a stream (on the
    demo they did not help: docs/selective_decoding.md). Windows end every `stride_s` from the first
    full window on; `n_frames` frames are sampled uniformly from each window's frames, as
    `vljepa.stream` does. Video v of seed s is `make_long_video(1000 * s + v)`."""
    from vljepa.video import uniform_indices

    if not 0 <= n_videos <= 1000 or stride_s <= 0 or window_s <= 0:
        raise ValueError(f"need 0 <= n_videos <= 1000 (video seeds are 1000 * seed + v) and window_s, stride_s > 0, "
                         f"got {n_videos}, {window_s}, {stride_s}")
    rng = np.random.default_rng(seed)
    kinds, items = list(StreamKind), []
    for v in range(n_videos):
        frames, truth = make_long_video(seed * 1000 + v, n_events, fps=fps, size=size, kind=kinds[v % len(kinds)])
        times = np.arange(len(frames)) / fps  # (N,)
        for end in np.arange(window_s, times[-1] + 1 / fps + 1e-9, stride_s):
            inside = np.flatnonzero((times >= end - window_s) & (times < end))
            event = parse_caption(truth[dominant_event(truth, end - window_s, end)][2])
            items.append(_item(event, frames[inside[uniform_indices(len(inside), n_frames)]], rng))
    return items


def dominant_event(truth: Sequence[tuple[float, float, object]], start: float, end: float) -> int:
    """Index of the ground-truth event that overlaps the span [start, end) most (the first on a tie)."""
    overlap = [max(0.0, min(end, e) - max(start, s)) for s, e, _ in truth]
    return int(np.argmax(overlap))


def _item(event: Event, frames: torch.Tensor, rng: np.random.Generator) -> dict:
    """One labelled example: frames uint8 (T, 3, H, W) showing `event`, with a random query."""
    return {"frames": frames, "label": ACTIONS.index(event.action), "label_name": event.action,
            "caption": event.caption, "captions": event.paraphrases(), "query": QUERIES[rng.integers(len(QUERIES))],
            "digit": event.digit, "colour": event.colour}

class StreamKind(str, enum.Enum):
    """What changes between (and inside) the events of a long video (`make_long_video(kind=...)`)."""

    HARD_CUT = "hard_cut"  # every boundary a cut: new digit, colour, position and action at once
    GRADUAL = "gradual"  # boundaries are 2-s cross-fades or slow drifts of colour and position
    RECURRING = "recurring"  # events drawn from a pool of 4, so the same caption comes back later
    DISTRACTOR = "distractor"  # hard cuts plus a grey blob wandering through every event (never captioned)
    SHORT_LONG = "short_long"  # hard cuts; half the events last min/2..min s, half max/2..1.5*max s


def _event_durations(rng: np.random.Generator, n_events: int, min_dur_s: float, max_dur_s: float):
    """Log-uniform durations, so short and long events are both frequent."""
    if not 0 < min_dur_s <= max_dur_s:
        raise ValueError(f"need 0 < min_dur_s ({min_dur_s}) <= max_dur_s ({max_dur_s})")
    return np.exp(rng.uniform(math.log(min_dur_s), math.log(max_dur_s), n_events))


def _kind_durations(rng: np.random.Generator, kind: StreamKind, n_events: int, min_dur_s: float,
                    max_dur_s: float) -> np.ndarray:
    if kind is not StreamKind.SHORT_LONG:
        return _event_durations(rng, n_events, min_dur_s, max_dur_s)
    short = _event_durations(rng, n_events, min_dur_s / 2, min_dur_s)
    long = _event_durations(rng, n_events, max_dur_s / 2, 1.5 * max_dur_s)
    return np.where(rng.random(n_events) < 0.5, short, long)


class _EventSource:
    """Next event of a long video: a fresh random event whose action differs from the previous one,
    or (RECURRING) one of a small pool, never the same one twice in a row."""

    def __init__(self, rng: np.random.Generator, kind: StreamKind, pool_size: int = 4):
        self.rng, self.pool = rng, None
        if kind is StreamKind.RECURRING:
            self.pool = []
            while len(self.pool) < pool_size:
                event = _random_event(rng)
                if event.action not in {e.action for e in self.pool}:
                    self.pool.append(event)

    def next(self, prev: Event | None) -> Event:
        if self.pool is not None:
            return self.pool[self.rng.choice([i for i, e in enumerate(self.pool) if e != prev])]
        event = _random_event(self.rng)
        while prev is not None and event.action == prev.action:
            event = _random_event(self.rng)
        return event


def make_long_video(seed: int, n_events: int, fps: float = 4, min_dur_s: float = 2.0,
                    max_dur_s: float = 20.0, size: int = 32, kind: StreamKind | str = StreamKind.HARD_CUT,
                    ) -> tuple[torch.Tensor, list[tuple[float, float, str]]]:
    """A long video of consecutive events -> (frames uint8 (T, 3, H, W), [(start_s, end_s, caption)]).

    Consecutive events always differ (so every boundary is a change of meaning); `kind` picks how
    they change (`StreamKind`); HARD_CUT gives the same frames as before kinds existed, seed for
    seed. `reference_captions(caption)` gives the paraphrases of each ground-truth caption."""
    kind = StreamKind(kind)
    if n_events < 1:
        raise ValueError(f"make_long_video needs n_events >= 1, got {n_events}")
    rng = np.random.default_rng(seed)
    durations = _kind_durations(rng, kind, n_events, min_dur_s, max_dur_s)
    source = _EventSource(rng, kind)
    if kind is StreamKind.GRADUAL:
        return _gradual_video(rng, source, durations, fps, size)
    chunks, truth, t_frames, prev = [], [], 0, None
    for dur in durations:
        event = source.next(prev)
        n = max(2, int(round(dur * fps)))
        chunks.append(render_event(event, n, size, rng))
        truth.append((t_frames / fps, (t_frames + n) / fps, event.caption))
        t_frames += n
        prev = event
    frames = torch.cat(chunks)
    if kind is StreamKind.DISTRACTOR:
        frames = _add_distractor(frames, rng)
    return frames, truth


def _gradual_video(rng: np.random.Generator, source: _EventSource, durations: np.ndarray, fps: float,
                   size: int, transition_s: float = 2.0) -> tuple[torch.Tensor, list[tuple[float, float, str]]]:
    """Events joined by gradual transitions of `transition_s` centred on each boundary: a cross-fade
    (both events blended, linear ramp) or a drift (the next event keeps the digit sample and starts
    from the previous colour and position, moving to its own). The ground-truth boundary is the midpoint."""
    lengths = [max(2, int(round(d * fps))) for d in durations]
    ends = np.cumsum(lengths)  # frame index where event i ends
    frames = torch.zeros(int(ends[-1]), 3, size, size)  # (T, 3, H, W), weighted sum of event clips
    weight = torch.zeros(len(frames))  # (T,)
    truth, prev, states, image, lead = [], None, [], None, 0
    for i, n in enumerate(lengths):
        half = min(int(round(transition_s * fps / 2)), n // 4, lengths[i + 1] // 4) if i + 1 < len(lengths) else 0
        drift = bool(lead) and rng.random() < 0.5
        event = source.next(prev)
        lo, hi = int(ends[i]) - n - lead, int(ends[i]) + half  # this clip overlaps both transitions
        ramp = torch.ones(hi - lo)  # (n + lead + half,)
        if drift:  # the previous event hands over at once; this one starts in its state and drifts away
            event = Event(prev.digit, event.colour, event.action, event.colour2)
            s = states[-2 * lead - 1]
            clip, states = _render(event, hi - lo, size, rng, lead_in=LeadIn(s.colour, s.cx, s.cy, 2 * lead),
                                   image=image)
            frames[lo:lo + 2 * lead], weight[lo:lo + 2 * lead] = 0, 0
        else:
            image = _digit_image(rng, event.digit)[None, None]  # (1, 1, 8, 8)
            clip, states = _render(event, hi - lo, size, rng, image=image)
            if lead:
                ramp[: 2 * lead] = torch.linspace(0, 1, 2 * lead + 2)[1:-1]  # cross-fade in
        if half:
            ramp[-2 * half:] = torch.linspace(1, 0, 2 * half + 2)[1:-1]  # cross-fade out (or handed over)
        frames[lo:hi] += ramp[:, None, None, None] * clip
        weight[lo:hi] += ramp
        truth.append((float(ends[i] - n) / fps, float(ends[i]) / fps, event.caption))
        prev, lead = event, half
    return _quantize(frames / weight.clamp(min=1e-6)[:, None, None, None]), truth


def _add_distractor(frames: torch.Tensor, rng: np.random.Generator, side: int = 3,
                    level: float = 0.55) -> torch.Tensor:
    """A grey square on a random walk with random turns, drawn over every frame: motion that no
    caption mentions, so a good trigger must not decode on it."""
    n, _, h, w = frames.shape
    out = frames.float() / 255
    pos, vel = rng.uniform(0, [w - side, h - side]), rng.normal(0, 1.5, 2)
    for t in range(n):
        if rng.random() < 0.1:
            vel = rng.normal(0, 1.5, 2)
        pos = pos + vel
        for k, lim in ((0, w - side), (1, h - side)):  # bounce off the borders
            if not 0 <= pos[k] <= lim:
                vel[k] = -vel[k]
                pos[k] = float(np.clip(pos[k], 0, lim))
        x, y = int(round(pos[0])), int(round(pos[1]))
        out[t, :, y:y + side, x:x + side] = torch.maximum(out[t, :, y:y + side, x:x + side], torch.tensor(level))
    return _quantize(out)


def write_video(path: str | Path, frames: torch.Tensor, fps: float) -> Path:
    """Encode uint8 frames (T, 3, H, W) to a video file with PyAV (h264 if available, else mpeg4)."""
    import av

    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be uint8 (T, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
    _, _, h, w = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size {h}x{w}: video codecs need even height and width")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "h264" if "h264" in av.codecs_available else "mpeg4"
    array = frames.permute(0, 2, 3, 1).contiguous().numpy()  # (T, H, W, 3)
    from fractions import Fraction

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "h264":
            stream.options = {"crf": "18"}  # near-lossless, so decoded clips keep the digit legible
        for image in array:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output .mp4 path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-events", type=int, default=8)
    parser.add_argument("--fps", type=float, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    frames, truth = make_long_video(args.seed, args.n_events, fps=args.fps, size=args.size)
    write_video(args.out, frames, args.fps)
    for start, end, caption in truth:
        print(f"{start:7.2f}-{end:7.2f}s  {caption}")


if __name__ == "__main__":
    main()
