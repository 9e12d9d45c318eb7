"""Semantic Tube Prediction (`llm_jepa.stp`, `jepa.objective: stp`): hand-computed displacements, a
straight trajectory costs 0, the length weights, the seeded sampler, no per-token Python loop, exact
gradient accumulation (Accelerate loop; JepaTrainer: test_llm_jepa_train.py), every tiny family, training end to end.

    pytest tests/test_llm_jepa_stp.py
"""

from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.overrides import TorchFunctionMode

from jepa_common.config import ConfigError
from llm_jepa.collator import JepaCollator
from llm_jepa.config import LLMJepaConfig, Padding, load_llm_jepa_config
from llm_jepa.modeling import JepaModule, jepa_forward, load_model_and_tokenizer
from llm_jepa.stp import (
    LengthWeight,
    SpanSampler,
    StpConfig,
    StpVariant,
    add_spans,
    add_step_spans,
    curvature,
    displacement,
    length_weights,
    load_predictor,
    sample_spans,
    span_uniforms,
    stp_terms,
)
from llm_jepa.train import run_step, train

# a row of 10 positions: user content = tokens 2,3,4 (offsets 0..2), template 5,6, assistant = 7,8 (offsets 3,4)
SPANS = torch.tensor([[2, 5, 7, 9]])


def _stp_cfg(*over: str) -> LLMJepaConfig:
    return load_llm_jepa_config(None, ["jepa.objective=stp", "jepa.lam=0.02", "jepa.predictors=1", *over])


def _batch(offsets: list[tuple[int, int]], weights: list[float] | None = None) -> dict:
    off = torch.tensor([offsets])  # (1, n, 2)
    w = torch.tensor([weights or [1.0] * len(offsets)])
    return {"content_spans": SPANS, "stp_offsets": off, "stp_weight": w}


def test_displacements_by_hand():
    h = torch.randn(1, 10, 3, generator=torch.Generator().manual_seed(0))
    x = h[0]
    # (s, t) -> (patch, before + after), written out from the definition: within-turn pieces only
    cases = {
        (1, 2): (x[3] - x[2], (x[2] - x[1]) + (x[4] - x[3]) + (x[8] - x[6])),  # inside the user turn
        (2, 4): ((x[4] - x[3]) + (x[7] - x[6]), (x[3] - x[1]) + (x[8] - x[7])),  # across the template gap
        (3, 5): (x[8] - x[6], x[4] - x[1]),  # the whole assistant turn; after = 0
        (0, 3): (x[4] - x[1], x[8] - x[6]),  # the whole user turn; before = 0
        (4, 5): (x[8] - x[7], (x[4] - x[1]) + (x[7] - x[6])),
    }
    offsets = list(cases)
    off = torch.tensor([offsets])
    d_s, d_t = displacement(h, SPANS, off[..., 0]), displacement(h, SPANS, off[..., 1])
    d_end = displacement(h, SPANS, torch.tensor([[5]]))
    assert torch.allclose(d_end[0, 0], (x[4] - x[1]) + (x[8] - x[6]), atol=1e-6)
    for j, (patch, rest) in enumerate(cases.values()):
        assert torch.allclose(d_t[0, j] - d_s[0, j], patch, atol=1e-6), offsets[j]
        assert torch.allclose(d_s[0, j] + d_end[0, 0] - d_t[0, j], rest, atol=1e-6), offsets[j]
    out = stp_terms(h, _batch(offsets), StpConfig(spans=len(offsets)))
    cos = torch.stack([F.cosine_similarity(r, p, dim=0) for p, r in cases.values()])
    assert torch.allclose(out["jepa_loss"], (1 - cos).mean(), atol=1e-6)
    assert torch.allclose(out["cos_sim"], cos.mean(), atol=1e-6) and float(out["n_pairs"]) == len(offsets)


def _straight(noise_outside: bool = True) -> torch.Tensor:
    """h[i] = c + i * v on the content positions and the token before each turn; noise elsewhere."""
    g = torch.Generator().manual_seed(1)
    v, c = torch.randn(8, generator=g), torch.randn(8, generator=g)
    h = c + torch.arange(10.0)[:, None] * v
    if noise_outside:
        for i in (0, 5, 9):  # BOS, the end-of-turn template token, the tail: not on the line
            h[i] = torch.randn(8, generator=g) * 5
    return h[None]  # (1, 10, 8)


@pytest.mark.parametrize("variant", [StpVariant.SPAN, StpVariant.E2E])
@pytest.mark.parametrize("weight", list(LengthWeight))
def test_straight_trajectory_costs_zero(variant, weight):
    h, cfg = _straight(), StpConfig(variant=variant, spans=4, length_weight=weight)
    batch = add_spans({"content_spans": SPANS, "input_ids": torch.zeros(1, 10)}, cfg, seed=5)
    assert float(stp_terms(h, batch, cfg)["jepa_loss"]) == pytest.approx(0.0, abs=1e-6)
    bent = h.clone()
    bent[0, 7:] += torch.randn(3, 8, generator=torch.Generator().manual_seed(2)) * 3  # turn the assistant part
    assert float(stp_terms(bent, batch, cfg)["jepa_loss"]) > 1e-3


def test_curvature_zero_on_a_line_and_matches_the_angle_by_hand():
    assert float(curvature(_straight(), SPANS)[0]) < 1e-3  # acos is clamped just inside [-1, 1]
    h = _straight(noise_outside=False)
    h[0, 3] += torch.ones(8)  # bends the user turn at positions 3 and 4
    x = h[0]
    angles = []
    for start, end in ((2, 5), (7, 9)):
        for i in range(start + 1, end):  # the authors' definition, one angle at a time
            a, b = x[i - 1] - x[i - 2], x[i] - x[i - 1]
            angles.append(torch.acos(torch.clamp(a @ b / (a.norm() * b.norm()), -1.0, 1.0)))
    assert float(curvature(h, SPANS)[0]) == pytest.approx(float(torch.stack(angles).mean()), abs=2e-3)


def test_length_weights_formula():
    lengths, off = torch.tensor([10, 10, 6]), torch.tensor([[[2, 5]], [[0, 5]], [[1, 2]]])  # p = 3, 5, 1
    r, p = torch.tensor([7.0, 5.0, 5.0]), torch.tensor([3.0, 5.0, 1.0])
    assert torch.allclose(length_weights(lengths, off, LengthWeight.COSINE_LIKE)[:, 0], 2 * r * p / (r**2 + p**2))
    assert torch.allclose(length_weights(lengths, off, LengthWeight.JACCARD_LIKE)[:, 0], 1 - (r - p).abs() / (r + p))
    assert length_weights(lengths, off, LengthWeight.COSINE_LIKE)[1, 0] == 1.0  # p = r
    assert torch.equal(length_weights(lengths, off, LengthWeight.NONE), torch.ones(3, 1))
    # the weighted loss is sum(w * (1 - cos)) / sum(w)
    h = torch.randn(1, 10, 4, generator=torch.Generator().manual_seed(3))
    batch = _batch([(0, 1), (1, 4)], [0.25, 1.0])
    cos = 1 - torch.stack([stp_terms(h, _batch([o]), StpConfig())["jepa_loss"] for o in ((0, 1), (1, 4))])
    expected = (0.25 * (1 - cos[0]) + 1.0 * (1 - cos[1])) / 1.25
    assert torch.allclose(stp_terms(h, batch, StpConfig(spans=2))["jepa_loss"], expected, atol=1e-6)


@pytest.mark.parametrize("sampler", list(SpanSampler))
def test_sampler_is_seeded_valid_and_covers_every_proper_span(sampler):
    lengths = torch.full((4000,), 4)
    u = span_uniforms(4000, 1, seed=7, step=3)
    assert torch.equal(u, span_uniforms(4000, 1, seed=7, step=3))
    assert not torch.equal(u, span_uniforms(4000, 1, seed=7, step=4))
    assert torch.equal(u[1000:2000], span_uniforms(1000, 1, seed=7, step=3, first_row=1000))  # keyed per row
    off = sample_spans(lengths, u, sampler)[:, 0]  # (N, 2)
    s, t = off[:, 0], off[:, 1]
    assert bool(((0 <= s) & (s < t) & (t <= 4)).all()) and not bool(((s == 0) & (t == 4)).any())
    counts = collections.Counter(map(tuple, off.tolist()))
    assert len(counts) == 4 * 5 // 2 - 1  # all 9 proper sub-spans of a length-4 content
    if sampler is SpanSampler.UNIFORM:
        expected = {span: 1 / 9 for span in counts}
    else:  # s uniform over 0..3, then t uniform over s+1..4 (0..3 when s = 0)
        expected = {(a, b): 0.25 / (4 - a - (a == 0)) for a, b in counts}
    for span, n in counts.items():
        assert n / 4000 == pytest.approx(expected[span], abs=0.025), span
    with pytest.raises(ValueError, match="at least 2 content tokens"):
        sample_spans(torch.tensor([1]), span_uniforms(1, 1, 0, 0), sampler)


class _CountOps(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("variant", list(StpVariant))
def test_no_python_loop_per_token_or_row(variant):
    """The number of torch calls of the loss does not grow with the sequence length or the batch."""
    calls = []
    for B, T in ((2, 16), (8, 300)):
        spans = torch.tensor([[3, 7, 10, 14]] * B)
        cfg = StpConfig(variant=variant, spans=3, length_weight=LengthWeight.COSINE_LIKE)
        batch = add_spans({"content_spans": spans, "input_ids": torch.zeros(B, T)}, cfg)
        with _CountOps() as mode:
            stp_terms(torch.randn(B, T, 8), batch, cfg)
        calls.append(mode.calls)
    assert calls[0] == calls[1]


@pytest.mark.parametrize("weight", [LengthWeight.NONE, LengthWeight.COSINE_LIKE])
def test_accumulation_4x4_equals_one_batch_of_16(weight, synth_records, tokenizer_corpus):
    cfg = _stp_cfg("jepa.lam=0.5", f"stp.length_weight={weight.value}", "stp.spans=2", "stp.predictor=true")
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    module, acc, collate = JepaModule(model, cfg), Accelerator(cpu=True), JepaCollator(tok, cfg)
    records = synth_records[:16]
    big = add_step_spans([collate(records)], cfg.stp, 0, 0, 0)
    micro = add_step_spans([collate(records[i:i + 4]) for i in range(0, 16, 4)], cfg.stp, 0, 0, 0)
    assert torch.equal(torch.cat([m["stp_offsets"] for m in micro]), big[0]["stp_offsets"])  # same spans
    one = run_step(module, big, True, cfg, acc)
    g_big = torch.cat([p.grad.flatten() for p in module.parameters()])
    module.zero_grad()
    acc4 = run_step(module, micro, True, cfg, acc)
    g_acc = torch.cat([p.grad.flatten() for p in module.parameters()])
    assert acc4["jepa_sum"] / acc4["n_pairs"] == pytest.approx(one["jepa_sum"] / one["n_pairs"], rel=1e-5)
    assert module.stp_predictor.weight.grad.abs().sum() > 0  # the predictor is trained too
    assert torch.allclose(g_acc, g_big, atol=1e-6, rtol=1e-4)


def test_step_normalises_by_span_weights_even_below_one(synth_records, tokenizer_corpus):
    """One record, one span of weight < 1: the step's JEPA term is the weighted mean, not clamped to a count."""
    cfg = _stp_cfg("jepa.lam=1", "jepa.gamma=0", "stp.length_weight=cosine_like")
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    module, acc = JepaModule(model, cfg), Accelerator(cpu=True)
    batch = add_step_spans([JepaCollator(tok, cfg)(synth_records[:1])], cfg.stp, 0, 0, 0)[0]
    assert float(batch["stp_weight"].sum()) < 0.9
    run_step(module, [batch], True, cfg, acc)
    g_step = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
    module.zero_grad()
    jepa_forward(model, batch, cfg)["loss"].backward()  # default norm: this batch's weight sum
    g_ref = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
    assert torch.allclose(g_step, g_ref, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma", "gemma3", "qwen"])
@pytest.mark.parametrize("padding", list(Padding))
def test_content_spans_and_gradients_on_every_family(family, padding, synth_records, tokenizer_corpus):
    cfg = _stp_cfg(f"model.tiny_family={family}", f"data.padding_side={padding.value}", "stp.spans=2")
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    records = synth_records[:3]
    batch = JepaCollator(tok, cfg)(records)
    for row, rec in enumerate(records):
        us, ue, a0, ae = batch["content_spans"][row].tolist()
        ids = batch["input_ids"][row].tolist()
        assert tok.decode(ids[us:ue]).strip() == rec["messages"][1]["content"].strip()  # user text only
        assert tok.decode(ids[a0:ae]).strip() == rec["messages"][2]["content"].strip()
        assert ue <= a0
    out = jepa_forward(model, batch, cfg)
    out["loss"].backward()
    assert float(out["jepa_loss"]) > 0 and model.get_input_embeddings().weight.grad.abs().sum() > 0
    plain = jepa_forward(model, JepaCollator(tok, _stp_cfg("jepa.lam=0", f"model.tiny_family={family}",
                                                           f"data.padding_side={padding.value}"))(records), cfg)
    assert torch.allclose(out["lm_loss"], plain["lm_loss"], atol=1e-5)  # STP adds no token to the row


def test_train_end_to_end_saves_predictor_and_resumes_exactly(tmp_path):
    over = ["data.limit=64", "train.batch_size=4", "train.lr=1e-3", "train.max_steps=4", "train.save_every=2",
            "train.grad_accum=2", "stp.predictor=true", "stp.spans=2", "jepa.lam=0.5"]
    ref = train(_stp_cfg(*over, f"train.output_dir={tmp_path / 'a'}"))
    assert ref["jepa_loss"] > 0 and ref["cos_sim"] != 0
    pred = load_predictor(tmp_path / "a" / "final")
    assert pred.weight.shape[0] == pred.weight.shape[1] == 64

    def crash(step: int, metrics: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    cfg = _stp_cfg(*over, f"train.output_dir={tmp_path / 'b'}")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=crash)
    resumed = train(cfg)
    for key in ("loss", "lm_loss", "jepa_loss", "cos_sim"):
        assert resumed[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
    assert torch.equal(load_predictor(tmp_path / "b" / "final").weight, pred.weight)


def test_jepa_trainer_checkpoint_round_trips_the_predictor(tmp_path, synth_records, tokenizer_corpus):
    """What JepaTrainer's `_save` writes, `_load_from_checkpoint` (resume) reads back: the LM and STP's predictor."""
    from transformers import TrainingArguments

    from llm_jepa.trainer import JepaTrainer

    cfg = _stp_cfg("stp.predictor=true")
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = JepaTrainer(model=model, args=args, cfg=cfg, processing_class=tok, train_dataset=synth_records[:4])
    module = trainer.model
    saved = [p.detach().clone() for p in (module.stp_predictor.weight, *module.lm.parameters())]
    trainer._save(str(tmp_path / "ckpt"))
    with torch.no_grad():
        for p in (module.stp_predictor.weight, *module.lm.parameters()):
            p.add_(1.0)
    trainer._load_from_checkpoint(str(tmp_path / "ckpt"))
    for before, after in zip(saved, (module.stp_predictor.weight, *module.lm.parameters())):
        assert torch.equal(before, after)


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="STP is 1 - cos"):
        _stp_cfg("jepa.distance=l2")
    with pytest.raises(ConfigError, match="spanz"):
        _stp_cfg("stp.spanz=2")
    with pytest.raises(ConfigError, match="span, e2e, curvature"):
        _stp_cfg("stp.variant=tube")
    with pytest.raises(KeyError, match="content_spans"):
        add_spans({"input_ids": torch.zeros(1, 3)}, StpConfig())
