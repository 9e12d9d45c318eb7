"""Tests for vljepa.synthetic: determinism, shapes, actions really happen, long-video truth, mp4 round trip."""

from __future__ import annotations

import hashlib
import json

import av
import numpy as np
import pytest
import torch

from vljepa.synthetic import (
    ACTIONS,
    Event,
    StreamKind,
    all_captions,
    class_names,
    make_clip_dataset,
    make_long_video,
    make_window_dataset,
    reference_captions,
    render_event,
    write_video,
)


def test_clip_dataset_shapes_labels_and_determinism():
    a = make_clip_dataset(20, n_frames=6, size=32, seed=3)
    b = make_clip_dataset(20, n_frames=6, size=32, seed=3)
    c = make_clip_dataset(20, n_frames=6, size=32, seed=4)
    assert len(a) == 20
    for x, y in zip(a, b):
        assert x["frames"].shape == (6, 3, 32, 32) and x["frames"].dtype == torch.uint8
        assert torch.equal(x["frames"], y["frames"]) and x["caption"] == y["caption"]
        assert class_names()[x["label"]] == x["label_name"]
        assert x["caption"] == x["captions"][0] and len(set(x["captions"])) == 4
        assert x["query"].endswith(("?", "."))
    assert any(not torch.equal(x["frames"], z["frames"]) for x, z in zip(a, c))
    # round-robin classes: 20 clips over 10 actions -> 2 per class
    assert np.bincount([x["label"] for x in a], minlength=len(ACTIONS)).tolist() == [2] * len(ACTIONS)


def _centroid(frame: torch.Tensor) -> tuple[float, float, float]:
    """(x, y, mass) of the brightness of one (3, H, W) uint8 frame."""
    m = frame.float().sum(0)
    m = torch.where(m > 60, m, torch.zeros_like(m))  # ignore background noise
    ys, xs = torch.meshgrid(torch.arange(m.shape[0]), torch.arange(m.shape[1]), indexing="ij")
    total = m.sum()
    return float((m * xs).sum() / total), float((m * ys).sum() / total), float(total)


@pytest.mark.parametrize("action,check", [
    ("moves left", lambda a, b: b[0] < a[0] - 5), ("moves right", lambda a, b: b[0] > a[0] + 5),
    ("moves up", lambda a, b: b[1] < a[1] - 5), ("moves down", lambda a, b: b[1] > a[1] + 5),
    ("grows", lambda a, b: b[2] > 1.5 * a[2]), ("shrinks", lambda a, b: b[2] < a[2] / 1.5),
])
def test_actions_change_the_frames_as_captioned(action, check):
    frames = render_event(Event(3, "white", action), 8, 32, np.random.default_rng(0))
    assert check(_centroid(frames[0]), _centroid(frames[-1]))


def test_appear_disappear_and_colour_change():
    rng = np.random.default_rng(1)
    appear = render_event(Event(5, "red", "appears"), 8, 32, rng)
    assert appear[0].float().max() < 30 and appear[-1].float().max() > 150
    gone = render_event(Event(5, "red", "disappears"), 8, 32, rng)
    assert gone[0].float().max() > 150 and gone[-1].float().max() < 30
    change = render_event(Event(5, "red", "changes colour", "blue"), 8, 32, rng).float()
    red_first, blue_first = change[0, 0].sum(), change[0, 2].sum()
    red_last, blue_last = change[-1, 0].sum(), change[-1, 2].sum()
    assert red_first > 2 * blue_first and blue_last > 2 * red_last


def test_long_video_ground_truth_is_contiguous_and_varied():
    frames, truth = make_long_video(seed=0, n_events=12, fps=4, min_dur_s=1.0, max_dur_s=16.0, size=32)
    assert frames.dtype == torch.uint8 and frames.shape[1:] == (3, 32, 32)
    assert truth[0][0] == 0.0 and truth[-1][1] == pytest.approx(frames.shape[0] / 4)
    for (s0, e0, c0), (s1, _, c1) in zip(truth, truth[1:]):
        assert e0 == s1 and e0 > s0 and c0 != c1
    durations = [e - s for s, e, _ in truth]
    assert max(durations) > 3 * min(durations)
    assert all(reference_captions(c)[0] == c for _, _, c in truth)
    again, truth2 = make_long_video(seed=0, n_events=12, fps=4, min_dur_s=1.0, max_dur_s=16.0, size=32)
    assert torch.equal(frames, again) and truth == truth2


def test_reference_captions_parse_and_reject():
    assert reference_captions("an orange 7 changes colour to blue")[1] == "the digit 7 turns from orange to blue"
    assert reference_captions("a red 0 moves left")[2] == "a red zero travels leftward"
    with pytest.raises(ValueError, match="canonical"):
        reference_captions("a dog runs")


def test_write_video_round_trip(tmp_path):
    frames, _ = make_long_video(seed=1, n_events=3, fps=4, min_dur_s=1.0, max_dur_s=2.0, size=32)
    path = write_video(tmp_path / "v.mp4", frames, fps=4)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == frames.shape[0]
    err = np.abs(np.stack(decoded).astype(float) - frames.permute(0, 2, 3, 1).numpy()).mean()
    assert err < 12  # lossy codec + yuv420 chroma subsampling, but the content survives
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", torch.zeros(2, 3, 31, 32, dtype=torch.uint8), fps=4)


def test_same_seed_same_clips_and_hard_cut_videos_as_before_stream_kinds():
    """Hashes recorded on main before the stream kinds existed: the clip generator and the default
    (hard-cut) long video are unchanged seed for seed."""
    h = hashlib.sha256()
    for c in make_clip_dataset(12, n_frames=6, size=32, seed=5):
        h.update(c["frames"].numpy().tobytes())
        h.update(json.dumps([c["caption"], c["query"], c["label"]]).encode())
    assert h.hexdigest() == "1e08b3ad8c222f51b451ac0d2b6ef162fc06cdf3e65a7ae7732644a6b3c60c01"
    frames, truth = make_long_video(seed=3, n_events=6, fps=4, size=32)
    h = hashlib.sha256(frames.numpy().tobytes())
    h.update(json.dumps(truth).encode())
    assert h.hexdigest() == "993eb1c444fc5717053b57428a21b058c56293f26466807f3bccf01fee34cc2d"


@pytest.mark.parametrize("kind", list(StreamKind))
def test_every_stream_kind_is_deterministic_contiguous_and_changes_meaning_at_each_boundary(kind):
    frames, truth = make_long_video(seed=4, n_events=10, fps=4, size=32, kind=kind)
    again, truth2 = make_long_video(seed=4, n_events=10, fps=4, size=32, kind=kind.value)
    assert torch.equal(frames, again) and truth == truth2
    assert frames.dtype == torch.uint8 and frames.shape[1:] == (3, 32, 32)
    assert truth[0][0] == 0.0 and truth[-1][1] == pytest.approx(frames.shape[0] / 4)
    assert all(isinstance(x, float) for s, e, _ in truth for x in (s, e))
    for (s0, e0, c0), (s1, _, c1) in zip(truth, truth[1:]):
        assert e0 == s1 and e0 > s0 and c0 != c1
    assert all(reference_captions(c)[0] == c for _, _, c in truth)


def _sharpness(frames: torch.Tensor, truth) -> float:
    """Median over boundaries of (largest frame-to-frame change within 2 s of the boundary) /
    (change from 2 s before to 2 s after): ~1 for a cut, small when the change is spread out."""
    f = frames.float()
    ratios = []
    for _, end, _ in truth[:-1]:
        b = int(end * 4)
        lo, hi = max(b - 8, 0), min(b + 8, len(f) - 1)
        steps = (f[lo + 1:hi + 1] - f[lo:hi]).abs().mean(dim=(1, 2, 3))
        ratios.append(float(steps.max() / (f[hi] - f[lo]).abs().mean()))
    return float(np.median(ratios))


def test_gradual_transitions_spread_the_change_over_seconds():
    hard, truth = make_long_video(seed=5, n_events=12, fps=4, size=32)
    soft, soft_truth = make_long_video(seed=5, n_events=12, fps=4, size=32, kind=StreamKind.GRADUAL)
    assert [e - s for s, e, _ in truth] == [e - s for s, e, _ in soft_truth]  # same durations
    assert _sharpness(hard, truth) > 0.9 and _sharpness(soft, soft_truth) < 0.7  # pixel noise sets a floor


def test_recurring_distractor_and_short_long_kinds():
    _, truth = make_long_video(seed=6, n_events=16, fps=4, size=32, kind=StreamKind.RECURRING)
    captions = [c for _, _, c in truth]
    assert len(set(captions)) <= 4 < len(captions)  # a pool of 4 events that come back later
    hard, hard_truth = make_long_video(seed=6, n_events=8, fps=4, size=32)
    busy, busy_truth = make_long_video(seed=6, n_events=8, fps=4, size=32, kind=StreamKind.DISTRACTOR)
    assert busy_truth == hard_truth  # same events and captions ...
    moved = (busy.int() - hard.int()).abs().sum(dim=(1, 2, 3)) > 0
    assert moved.float().mean() > 0.9  # ... plus a blob no caption mentions, in (almost) every frame
    _, mixed = make_long_video(seed=6, n_events=30, fps=4, size=32, kind=StreamKind.SHORT_LONG)
    durations = np.array([e - s for s, e, _ in mixed])
    assert (durations <= 2.0).sum() >= 8 and (durations >= 10.0).sum() >= 8


def test_all_captions_cover_the_synthetic_world():
    captions = all_captions()
    assert len(captions) == len(set(captions)) == 10 * 8 * (9 + 7)
    _, truth = make_long_video(seed=7, n_events=20, fps=4, size=32)
    assert {c for _, _, c in truth} <= set(captions)


def test_window_dataset_cuts_stream_windows_labelled_with_their_dominant_event():
    items = make_window_dataset(2, n_frames=8, size=32, seed=7, n_events=5)
    assert items == [] or items[0]["frames"].dtype == torch.uint8
    assert all(it["frames"].shape == (8, 3, 32, 32) for it in items)
    frames, truth = make_long_video(7000, 5, fps=4, size=32, kind=StreamKind.HARD_CUT)  # video 0: seed * 1000 + 0
    first = [it for it in items[: int(truth[-1][1]) - 1]]  # windows end every 1 s from 2 s on
    for k, it in enumerate(first):
        end = 2.0 + k  # the window [end - 2, end): its frames are frames[4 * (end - 2): 4 * end]
        assert torch.equal(it["frames"], frames[int(4 * (end - 2)):int(4 * end)])
        overlap = [max(0.0, min(end, e) - max(end - 2, s)) for s, e, _ in truth]
        assert it["caption"] == truth[int(np.argmax(overlap))][2]
        assert it["label_name"] in ACTIONS and it["captions"][0] == it["caption"]
    again = make_window_dataset(2, n_frames=8, size=32, seed=7, n_events=5)
    assert all(torch.equal(a["frames"], b["frames"]) and a["query"] == b["query"] for a, b in zip(items, again))
    with pytest.raises(ValueError, match="stride_s"):
        make_window_dataset(1, stride_s=0)
