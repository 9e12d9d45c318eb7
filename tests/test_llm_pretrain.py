"""The NL-RX-free pretraining corpus (`llm_jepa.corpus`), the pretraining loop (`llm_jepa.pretrain`)
and the shipped pretrained model (`llm_jepa.pretrained`, short name `mini-llama`).

    pytest tests/test_llm_pretrain.py
"""

from __future__ import annotations

import json

import pytest
import torch

from llm_jepa.config import LLMJepaConfig
from llm_jepa.corpus import MIN_LEAK_CHARS, NLRX_TEST, build_corpus, find_leaks, nlrx_regexes
from llm_jepa.data import load_records, split_record
from llm_jepa.modeling import load_model_and_tokenizer
from llm_jepa.pretrain import PretrainConfig, heldout_loss, pretrain, to_blocks
from llm_jepa.pretrained import pretrained_path


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(0.02, 0)


def _texts(docs):
    return ["\n".join(m["content"] for m in d) for d in docs]


def test_corpus_holds_no_nlrx_test_record_and_no_nlrx_regex(corpus):
    train, held, stats = corpus
    docs = train + held
    regexes = nlrx_regexes()
    test_desc = {split_record(r)[1] for n in NLRX_TEST for r in load_records(n)}
    contents = {m["content"].strip() for d in docs for m in d}
    assert not contents & regexes  # no NL-RX assistant turn, train or test
    assert not contents & test_desc  # no NL-RX test description
    assert find_leaks(_texts(docs), regexes) == []  # no NL-RX regex of >= 8 characters inside any text
    nlrx = [d for d in docs if d[0]["content"] == "Convert natural language to regular expression."]
    assert nlrx and all([m["role"] for m in d] == ["system", "user"] for d in nlrx)  # descriptions only
    assert len(nlrx) == stats.documents["synth_train (descriptions only)"] - stats.dropped_leaking_documents
    assert stats.dropped_test_description > 0 and stats.dropped_test_regex > 0
    assert {"gsm8k_train", "spider_train", "rotten_tomatoes_train", "nq_open_train", "yelp_test",
            "hellaswag_test"} <= set(stats.documents)
    assert not {id(d) for d in train} & {id(d) for d in held} and len(held) == stats.heldout_documents


def test_find_leaks_finds_a_planted_regex_and_ignores_short_ones():
    rx = r"(\b([A-Z])+\b)&(dog)"
    assert len(rx) >= MIN_LEAK_CHARS
    texts = ["a dog walks.", f"the answer is {rx} ok", "([A-Z]) alone", rx]
    assert find_leaks(texts, {rx, "dog", "[A-Z]"}) == [1, 3]


def _tiny(tmp_path, name: str, steps: int) -> PretrainConfig:
    return PretrainConfig(out_dir=str(tmp_path / name), vocab_size=300, hidden_size=32, layers=1, heads=2,
                          kv_heads=1, intermediate_size=64, block=64, batch_size=4, max_steps=steps, warmup_steps=2,
                          save_every=2, eval_every=100, max_documents=300)


def test_pretrain_resume_equals_uninterrupted_and_saves_a_loadable_checkpoint(tmp_path):
    straight = pretrain(_tiny(tmp_path, "a", 4))
    pretrain(_tiny(tmp_path, "b", 2))  # "killed" after 2 steps (warmup: the LR does not depend on max_steps)
    resumed = pretrain(_tiny(tmp_path, "b", 4))
    assert resumed["step"] == straight["step"] == 4
    assert resumed["heldout_loss_fp32"] == pytest.approx(straight["heldout_loss_fp32"], rel=1e-6)
    assert [json.loads(ln)["step"] for ln in open(tmp_path / "b" / "metrics.jsonl")] == [1, 2, 3, 4]
    cfg = LLMJepaConfig()
    cfg.model.name_or_path = str(tmp_path / "a" / "final")
    model, tok = load_model_and_tokenizer(cfg)  # the finetuning loader takes it as is
    assert tok.pad_token == "<|finetune_right_pad_id|>" and tok.pad_token_id != tok.eos_token_id
    assert model.config.hidden_size == 32 and "<|predictor_1|>" in tok.get_vocab()


def test_shipped_mini_llama_is_pretrained(corpus):
    """Loads by short name, matches its README's held-out loss, and beats a random init by far."""
    path = pretrained_path("mini-llama")
    metrics = json.load(open(f"{path}/pretrain_metrics.json"))
    assert f"{metrics['heldout_loss_bf16_weights']:.3f}" in open(f"{path}/README.md").read()
    cfg = LLMJepaConfig()
    cfg.model.name_or_path = "mini-llama"
    model, tok = load_model_and_tokenizer(cfg)
    n = sum(p.numel() for p in model.get_base_model().parameters()) if hasattr(model, "get_base_model") else \
        sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 5e6
    blocks = to_blocks(tok, list(corpus[1][:40]), 256)[:8]  # held-out documents
    loss = heldout_loss(model, blocks, 8)
    random = heldout_loss(type(model)(model.config), blocks, 8)
    assert loss < 0.6 * random
    assert loss == pytest.approx(metrics["heldout_loss_bf16_weights"], abs=0.5)
    assert torch.isfinite(torch.tensor(loss))
