"""Tests for vljepa.synthetic: determinism, shapes, actions really happen, long-video truth, mp4 round trip."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from vljepa.synthetic import (
    ACTIONS,
    Event,
    class_names,
    make_clip_dataset,
    make_long_video,
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
