"""Packed `jepa_forward` == straightforward separate forward passes (fp32, 1e-5), the lambda=0
LM loss == the model's own causal-LM loss, span tracking vs the reference's per-family offsets,
and malformed-record handling.

    pytest tests/test_llm_jepa_forward.py
"""

from __future__ import annotations

import json

import pytest
import torch
from jepa_reference import separate_passes  # tests/ helper

from llm_jepa.collator import FAMILY_OFFSETS, JepaCollator, predictor_token_names, strip_views
from llm_jepa.config import Distance, JepaMode, LLMJepaConfig, Padding
from llm_jepa.data import InvalidRecords, RecordError, encode_with_span, load_records
from llm_jepa.modeling import UnsupportedModelError, jepa_forward, load_model_and_tokenizer

_CACHE: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread; on a busy 2-core box two threads spin (~1000x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _setup(family: str, k: int, corpus: list[str], attn: str = "sdpa", window: int | None = None,
           compat: bool = False):
    key = (family, k, attn, window, compat)
    if key not in _CACHE:
        cfg = LLMJepaConfig()
        cfg.model.tiny_family, cfg.model.attn_implementation, cfg.jepa.predictors = family, attn, k
        cfg.model.tiny_sliding_window, cfg.jepa.paper_compat = window, compat
        model, tok = load_model_and_tokenizer(cfg, corpus)
        _CACHE[key] = (model.eval(), tok)
    return _CACHE[key]


def _cfg(family, k, padding, distance, mode=JepaMode.REFERENCE, lam=1.0) -> LLMJepaConfig:
    cfg = LLMJepaConfig()
    cfg.model.tiny_family, cfg.jepa.predictors, cfg.jepa.distance, cfg.jepa.mode = family, k, distance, mode
    cfg.data.padding_side, cfg.jepa.lam = padding, lam
    return cfg


@pytest.mark.parametrize("family,attn", [("llama", "sdpa"), ("llama", "eager"), ("gemma", "eager")])
@pytest.mark.parametrize("padding", list(Padding))
@pytest.mark.parametrize("k", [0, 2])
def test_reference_packing_equals_three_passes(family, attn, padding, k, synth_records, tokenizer_corpus):
    model, tok = _setup(family, k, tokenizer_corpus, attn)
    records = synth_records[:4]
    for distance in Distance:
        cfg = _cfg(family, k, padding, distance)
        collate = JepaCollator(tok, cfg)
        with torch.no_grad():
            packed = jepa_forward(model, collate(records), cfg)
            ref = separate_passes(model, collate, records, cfg)
        for key in ("lm_loss", "jepa_loss", "cos_sim"):
            assert torch.allclose(packed[key], ref[key], atol=1e-5), (distance, key, packed[key], ref[key])
        expected = cfg.jepa.gamma * ref["lm_loss"] + cfg.jepa.lam * ref["jepa_loss"]
        assert torch.allclose(packed["loss"], expected, atol=1e-5)


@pytest.mark.parametrize("padding", list(Padding))
@pytest.mark.parametrize("k", [0, 2])
def test_in_context_equals_separate_prefix_pass(padding, k, synth_records, tokenizer_corpus):
    model, tok = _setup("llama", k, tokenizer_corpus)
    cfg = _cfg("llama", k, padding, Distance.COSINE, mode=JepaMode.IN_CONTEXT)
    collate = JepaCollator(tok, cfg)
    with torch.no_grad():
        packed = jepa_forward(model, collate(synth_records[:4]), cfg)
        ref = separate_passes(model, collate, synth_records[:4], cfg)
    for key in ("lm_loss", "jepa_loss", "cos_sim"):
        assert torch.allclose(packed[key], ref[key], atol=1e-5), key


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_lambda_zero_is_the_models_own_lm_loss(family, synth_records, tokenizer_corpus):
    model, tok = _setup(family, 1, tokenizer_corpus, "eager" if family == "gemma" else "sdpa")
    cfg = _cfg(family, 1, Padding.RIGHT, Distance.COSINE, lam=0.0)
    collate = JepaCollator(tok, cfg)
    batch = collate(synth_records[:6])
    assert "text_index" not in batch  # no views computed when lambda = 0
    encs = [collate.encode(r) for r in synth_records[:6]]
    T = max(len(e.full_ids) for e in encs)
    ids = torch.full((6, T), tok.pad_token_id)
    labels = torch.full((6, T), -100)
    mask = torch.zeros(6, T, dtype=torch.long)
    for b, e in enumerate(encs):
        ids[b, : len(e.full_ids)], labels[b, : len(e.labels)] = torch.tensor(e.full_ids), torch.tensor(e.labels)
        mask[b, : len(e.full_ids)] = 1
    with torch.no_grad():
        own = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        ours = jepa_forward(model, batch, cfg)
    assert torch.allclose(ours["loss"], own, atol=1e-5)
    assert float(ours["jepa_loss"]) == 0.0


@pytest.mark.parametrize("family,end", [("llama", "<|eot_id|>"), ("gemma", "<end_of_turn>"), ("qwen", "<|im_end|>")])
def test_labels_cover_only_the_assistant_turn_and_its_end_token(family, end, synth_records, tokenizer_corpus):
    _, tok = _setup(family, 1, tokenizer_corpus)
    cfg = _cfg(family, 1, Padding.RIGHT, Distance.COSINE)
    enc = JepaCollator(tok, cfg).encode(synth_records[0])
    trained = [t for t in enc.labels if t != -100]
    # Gemma / ChatML put a newline after the end-of-turn token: it is not trained
    assert tok.decode(trained) == synth_records[0]["messages"][2]["content"] + end
    assert enc.full_ids.count(tok.bos_token_id) <= 1  # single BOS (Qwen has none)


@pytest.mark.parametrize("family", ["llama", "qwen"])
def test_paper_compat_labels_drop_the_reference_pad_token(family, synth_records, tokenizer_corpus):
    """The reference masks its pad token: pad = EOS for Llama 3 (EOS untrained), <|endoftext|> for Qwen
    (so <|im_end|> IS trained there); every other token, system and user included, is a label."""
    _, tok = _setup(family, 1, tokenizer_corpus, compat=True)
    cfg = _cfg(family, 1, Padding.RIGHT, Distance.COSINE)
    cfg.jepa.paper_compat = True
    enc = JepaCollator(tok, cfg).encode(synth_records[0])
    trained = [t for t in enc.labels if t != -100]
    assert tok.pad_token_id not in trained and len(trained) == len(enc.full_ids) - enc.full_ids.count(tok.pad_token_id)
    end = tok.convert_tokens_to_ids("<|eot_id|>" if family == "llama" else "<|im_end|>")
    assert (end in trained) == (family == "qwen")


@pytest.mark.parametrize("family", ["gemma", "gemma3", "qwen", "mistral"])
@pytest.mark.parametrize("mode", list(JepaMode))
def test_sliding_window_packing_equals_separate_passes(family, mode, synth_records, tokenizer_corpus):
    """A window (6) shorter than every view: sliding layers must see only the window inside each segment."""
    model, tok = _setup(family, 2, tokenizer_corpus, "eager" if family == "gemma" else "sdpa", window=6)
    assert "sliding_attention" in (getattr(model.config, "layer_types", None) or ["sliding_attention"])
    for padding in Padding:
        cfg = _cfg(family, 2, padding, Distance.COSINE, mode=mode)
        collate = JepaCollator(tok, cfg)
        with torch.no_grad():
            packed = jepa_forward(model, collate(synth_records[:3]), cfg)
            ref = separate_passes(model, collate, synth_records[:3], cfg)
        for key in ("lm_loss", "jepa_loss", "cos_sim"):
            assert torch.allclose(packed[key], ref[key], atol=1e-5), (padding, key, packed[key], ref[key])


@pytest.mark.parametrize("family", ["llama", "gemma", "gemma3", "qwen"])
@pytest.mark.parametrize("k", [0, 2])
def test_tracked_span_vs_reference_offsets(family, k, synth_records, tokenizer_corpus):
    _, tok = _setup(family, k, tokenizer_corpus)
    collate = JepaCollator(tok, _cfg(family, k, Padding.RIGHT, Distance.COSINE))
    enc = collate.encode(synth_records[1])
    last = tok.convert_ids_to_tokens(enc.text_ids[enc.text_last])
    if k:
        assert last == predictor_token_names(tok, k)[-1]
    else:
        assert synth_records[1]["messages"][1]["content"].rstrip().endswith(tok.decode([enc.text_ids[enc.text_last]]))
    assert enc.text_last == len(enc.text_ids) - 1 and enc.code_last == len(enc.code_ids) - 1  # views end there
    user, answer = synth_records[1]["messages"][1]["content"], synth_records[1]["messages"][2]["content"]
    content = user + "".join(predictor_token_names(tok, k))
    text = encode_with_span(tok, [{"role": "user", "content": content}], 0, content)  # the whole rendered view
    code = encode_with_span(tok, [{"role": collate.code_role, "content": answer}], 0, answer)
    offset_idx = len(text.ids) + FAMILY_OFFSETS["gemma" if family.startswith("gemma") else family.rstrip("3")]
    if family.startswith("gemma"):
        # the reference's -2 lands on <end_of_turn> (the template ends "<end_of_turn>\n"), one past the content
        assert offset_idx == text.last + 1
        assert tok.convert_ids_to_tokens(text.ids[offset_idx]) == "<end_of_turn>"
    else:
        assert offset_idx == text.last == enc.text_last
        assert len(code.ids) + FAMILY_OFFSETS[family] == code.last == enc.code_last


def test_strip_views_gives_the_plain_lm_loss(synth_records, tokenizer_corpus):
    model, tok = _setup("llama", 2, tokenizer_corpus)
    cfg = _cfg("llama", 2, Padding.LEFT, Distance.COSINE)
    batch = JepaCollator(tok, cfg)(synth_records[:4])
    stripped = strip_views(batch)
    assert stripped["input_ids"].shape[1] < batch["input_ids"].shape[1]
    with torch.no_grad():
        full = jepa_forward(model, batch, cfg)
        plain = jepa_forward(model, stripped, cfg)
    assert torch.allclose(full["lm_loss"], plain["lm_loss"], atol=1e-5)
    assert float(plain["n_pairs"]) == 0


def test_malformed_records(tmp_path, synth_records, tokenizer_corpus):
    good = synth_records[0]
    bad = [{"messages": [{"role": "user", "content": "x"}]},  # missing assistant
           {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "  "},
                         {"role": "assistant", "content": "a"}]},  # empty text
           {"text": "no messages"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [good, *bad, good]) + "\n")
    with pytest.raises(RecordError, match="record 1: roles"):
        load_records(path)
    assert len(load_records(path, on_invalid=InvalidRecords.SKIP)) == 2
    (tmp_path / "broken.jsonl").write_text('{"messages": [\n')
    with pytest.raises(RecordError, match="broken.jsonl:1: not valid JSON"):
        load_records(tmp_path / "broken.jsonl")
    _, tok = _setup("llama", 1, tokenizer_corpus)
    cfg = _cfg("llama", 1, Padding.RIGHT, Distance.COSINE)
    cfg.data.max_length = 16
    with pytest.raises(RecordError, match="max_length=16"):
        JepaCollator(tok, cfg).encode(good)


def _unverified(kind: str, tok):
    """Tiny random models of families outside VERIFIED_FAMILIES, vocabulary fitted to the tiny tokenizer."""
    import transformers as tf

    common = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, intermediate_size=64, pad_token_id=tok.pad_token_id)
    config, cls = {"cohere": (tf.CohereConfig(**common, logit_scale=0.0625), tf.CohereForCausalLM),
                   "granite": (tf.GraniteConfig(**common, logits_scaling=8.0), tf.GraniteForCausalLM),
                   "olmo2": (tf.Olmo2Config(**common), tf.Olmo2ForCausalLM)}[kind]
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return cls(config).eval()


@pytest.mark.parametrize("kind", ["cohere", "granite"])
def test_guard_refuses_a_family_whose_forward_scales_logits(kind, synth_records, tokenizer_corpus):
    _, tok = _setup("llama", 1, tokenizer_corpus)
    cfg = _cfg("llama", 1, Padding.RIGHT, Distance.COSINE)
    with pytest.raises(UnsupportedModelError, match=f"model type '{kind}' is not supported"):
        jepa_forward(_unverified(kind, tok), JepaCollator(tok, cfg)(synth_records[:2]), cfg)


def test_guard_refuses_a_decoder_that_ignores_masks_and_positions(synth_records, tokenizer_corpus, monkeypatch):
    """Remote code that builds its own causal mask and positions lets the Code view see the other segments.
    (Dropping only one of the two is harmless in transformers 5: it rebuilds block masks from restarting
    position ids, and RoPE only sees distances inside a segment.)"""
    import copy

    model, tok = _setup("llama", 1, tokenizer_corpus)
    model = copy.deepcopy(model)  # a private copy: the probe result is cached per model
    model.config.model_type = "my_remote_llama"
    decoder = model.get_decoder()
    original = decoder.forward
    monkeypatch.setattr(decoder, "forward",
                        lambda *a, attention_mask=None, position_ids=None, **kw: original(*a, **kw))
    cfg = _cfg("llama", 1, Padding.LEFT, Distance.COSINE)
    with pytest.raises(UnsupportedModelError, match="ignores 4-D attention masks"):
        jepa_forward(model, JepaCollator(tok, cfg)(synth_records[:2]), cfg)


def test_guard_lets_an_unverified_but_faithful_family_through(synth_records, tokenizer_corpus, caplog):
    _, tok = _setup("llama", 1, tokenizer_corpus)
    model = _unverified("olmo2", tok)
    cfg = _cfg("llama", 1, Padding.LEFT, Distance.COSINE)
    collate = JepaCollator(tok, cfg)
    with torch.no_grad(), caplog.at_level("WARNING"):
        packed = jepa_forward(model, collate(synth_records[:3]), cfg)
        ref = separate_passes(model, collate, synth_records[:3], cfg)
    assert "not in the verified families" in caplog.text
    for key in ("lm_loss", "jepa_loss"):
        assert torch.allclose(packed[key], ref[key], atol=1e-5), key


def test_explicit_text_and_code_views_are_used(tokenizer_corpus):
    """HellaSwag names its views: Text = the context without the options, Code = the ending, not its letter."""
    record = load_records("hellaswag_test", limit=1)[0]
    _, tok = _setup("llama", 1, tokenizer_corpus)
    cfg = _cfg("llama", 1, Padding.RIGHT, Distance.COSINE)
    cfg.data.max_length = 4096  # the tiny BPE was trained on NL-RX: long rows here
    enc = JepaCollator(tok, cfg).encode(record)
    text, code = tok.decode(enc.text_ids), tok.decode(enc.code_ids)
    assert record["text"][0]["content"].strip()[-30:] in text and "A)" not in text
    assert code.endswith(record["code"][0]["content"].strip()) and record["messages"][2]["content"] == "A"
    with pytest.raises(RecordError, match="'code' must be a list of one message"):
        JepaCollator(tok, cfg).encode({**record, "code": "A"})


def test_max_length_bounds_the_packed_row(synth_records, tokenizer_corpus):
    _, tok = _setup("llama", 1, tokenizer_corpus)
    cfg = _cfg("llama", 1, Padding.RIGHT, Distance.COSINE)
    enc = JepaCollator(tok, cfg).encode(synth_records[0])
    row = len(enc.full_ids) + len(enc.text_ids) + len(enc.code_ids)
    cfg.data.max_length = row - 1  # every view fits, the row does not
    assert max(len(enc.full_ids), len(enc.text_ids), len(enc.code_ids)) < cfg.data.max_length
    with pytest.raises(RecordError, match=f"packed row has {row} tokens"):
        JepaCollator(tok, cfg).encode(synth_records[0])
    cfg.data.max_length = row
    assert JepaCollator(tok, cfg).row_length(JepaCollator(tok, cfg).encode(synth_records[0])) == row
