"""VLJepaModel on tiny models of the real classes (VJEPA2, SigLIP vision, Llama, packaged MiniLM):
shapes, bidirectional predictor attention (SDPA and eager), frozen X-encoder after a training
step, save/load round trip, task calls, and the paper-scale parameter count on the meta device."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModel

import vljepa  # noqa: F401 (registers the Auto classes)
from vljepa.builders import build_tiny_vljepa, paper_vljepa_config
from vljepa.modeling import VLJepaModel
from vljepa.recipe import OptimConfig
from vljepa.tasks import multiple_choice, recall_at_k, retrieval_scores, zero_shot_classify, zero_shot_scores
from vljepa.train import param_groups

QUERIES = ["what happens?", "describe the clip.", ""]
TARGETS = ["a red 3 moves left", "a blue 7 grows", "a red 3 moves left"]


@pytest.fixture(scope="module")
def tiny() -> VLJepaModel:
    return build_tiny_vljepa().eval()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    return torch.randn(3, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # (B, T, C, H, W)


def test_shapes_video_encoder(tiny, clips):
    visual = tiny.encode_video(clips)
    assert visual.shape == (3, 4 * 4 * 4, 64)  # (8/2 tubelets) x (32/8)^2 patches, Dx = 64
    assert not visual.requires_grad
    assert tiny.predict(QUERIES, visual=visual).shape == (3, tiny.config.embed_dim)
    assert tiny.encode_text(TARGETS).shape == (3, 64)
    out = tiny(query=QUERIES, target=TARGETS, pixel_values=clips)
    assert {"loss", "loss_v2t", "loss_t2v", "temperature", "pred", "target"} <= set(out)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    unit = tiny.predict(QUERIES, pixel_values=clips, normalize=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match="exactly one"):
        tiny.predict(QUERIES)


def test_shapes_image_encoder_and_single_frame():
    model = build_tiny_vljepa(x_kind="siglip").eval()
    images = torch.randn(2, 1, 3, 32, 32)  # images = 1-frame videos
    assert model.encode_video(images).shape == (2, 16, 64)
    assert model.encode_video(torch.randn(2, 3, 3, 32, 32)).shape == (2, 48, 64)  # frames concatenated
    assert model.predict(["what?", "who?"], pixel_values=images).shape == (2, 64)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_predictor_is_bidirectional(attn):
    model = build_tiny_vljepa(attn_implementation=attn).eval()
    assert model.predictor.config._attn_implementation == attn
    visual = torch.randn(1, 64, 64)
    with torch.no_grad():
        a, _ = model._predictor_states(["what happens?"], visual)
        b, _ = model._predictor_states(["what moves?"], visual)
    # visual tokens come first: with a causal mask they could not see the (later) query tokens
    assert (a[0, :64] - b[0, :64]).abs().max() > 1e-4


def test_padding_does_not_change_prediction(tiny):
    visual = torch.randn(2, 64, 64)
    with torch.no_grad():
        both = tiny.predict(["what happens in this long video clip?", "what?"], visual=visual)
        alone = tiny.predict(["what?"], visual=visual[1:])
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-5)


def test_training_step_keeps_x_encoder_bit_identical():
    model = build_tiny_vljepa().train()
    assert not model.x_encoder.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(param_groups(model, OptimConfig(lr=1e-2, y_lr_multiplier=0.05)))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in model.x_encoder.parameters())
    model(query=QUERIES, target=TARGETS, pixel_values=torch.randn(3, 8, 3, 32, 32))["loss"].backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("x_encoder."))
    assert not torch.equal(before["predictor_head.weight"], after["predictor_head.weight"])
    y_key = "y_encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[y_key], after[y_key])  # trained, at 0.05 x lr
    groups = {g["name"]: g["lr"] for g in opt.param_groups}
    assert groups["y"] == pytest.approx(5e-4) and groups["main"] == pytest.approx(1e-2)


def test_y_lr_multiplier_zero_freezes_y_encoder():
    model = build_tiny_vljepa()
    groups = param_groups(model, OptimConfig(y_lr_multiplier=0.0))
    assert all(not n.startswith("y") for n in (g["name"] for g in groups))
    assert not any(p.requires_grad for p in model.y_encoder.parameters())


def test_save_load_round_trip(tiny, clips, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    loaded = AutoModel.from_pretrained(tmp_path / "m").eval()
    assert isinstance(loaded, VLJepaModel)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict(QUERIES, pixel_values=clips), tiny.predict(QUERIES, pixel_values=clips))
        torch.testing.assert_close(loaded.encode_text(TARGETS), tiny.encode_text(TARGETS))
    assert loaded.config.sub_config("predictor").num_hidden_layers == len(loaded.predictor.layers) == 2
    assert loaded.state_dict().keys() == tiny.state_dict().keys()


def test_frozen_x_encoder_is_referenced_not_saved(tiny, clips, tmp_path):
    tiny.x_encoder.save_pretrained(tmp_path / "xenc")
    tiny.config.x_encoder_name_or_path = str(tmp_path / "xenc")
    try:
        tiny.save_pretrained(tmp_path / "m")
    finally:
        tiny.config.x_encoder_name_or_path = None
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("x_encoder.") for k in keys)
    loaded = VLJepaModel.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_video(clips), tiny.encode_video(clips))
        torch.testing.assert_close(loaded.predict(QUERIES, pixel_values=clips), tiny.predict(QUERIES, pixel_values=clips))


class OneHotDouble:
    """Test double: texts and clips map to fixed one-hot directions (eval code takes any such object)."""

    vocab = ["left", "right", "grows"]

    def encode_text(self, texts):
        return torch.stack([torch.eye(3)[self.vocab.index(t)] for t in texts])

    def predict(self, query, pixel_values=None, visual=None):
        return visual[:, 0, :3] + 0.1  # the clip "is" its first token


def test_task_calls_on_a_test_double():
    double = OneHotDouble()
    visual = torch.zeros(3, 1, 4)
    visual[0, 0, 2] = visual[1, 0, 0] = visual[2, 0, 1] = 5.0  # clip i shows grows, left, right
    assert zero_shot_classify(double, double.vocab, visual=visual).tolist() == [2, 0, 1]
    assert zero_shot_scores(double, double.vocab, visual=visual).shape == (3, 3)
    scores = retrieval_scores(double, ["left", "right", "grows"], visual=visual)  # (text, video)
    assert scores.argmax(dim=1).tolist() == [1, 2, 0]
    relevant = torch.zeros(3, 3, dtype=torch.bool)
    relevant[0, 1] = relevant[1, 2] = relevant[2, 0] = True
    assert recall_at_k(scores, relevant, k=1) == 1.0
    picks = multiple_choice(double, ["q"] * 3, [["left", "grows"], ["right", "left"], ["grows", "right"]],
                            visual=visual)
    assert picks.tolist() == [1, 1, 1]


def test_task_calls_on_the_model(tiny, clips):
    scores = zero_shot_scores(tiny, ["moves left", "grows"], pixel_values=clips)
    assert scores.shape == (3, 2) and scores.abs().max() <= 1.0 + 1e-5
    assert retrieval_scores(tiny, TARGETS[:2], pixel_values=clips).shape == (2, 3)


def test_paper_scale_parameter_count_on_meta_device():
    with torch.device("meta"):
        counts = VLJepaModel(paper_vljepa_config()).parameter_counts()
    assert 1.2e9 < counts["total"] < 1.8e9  # paper: ~1.6B
    assert counts["trainable"] == counts["total"] - counts["x_encoder_total"]
    assert 2.8e8 < counts["x_encoder_total"] < 3.5e8  # ViT-L
