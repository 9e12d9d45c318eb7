"""Representation diagnostics: Enc() equals training's definition; the statistics on known data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.representation import cosine_stats, linear_fit, text_to_code_recall
from llm_jepa.collator import JepaCollator
from llm_jepa.config import load_llm_jepa_config
from llm_jepa.modeling import jepa_forward, load_model_and_tokenizer
from llm_jepa.representation import View, hf_view_encoder, representation_report


@pytest.mark.parametrize("family, k", [("llama", 1), ("gemma", 0)])
def test_encoder_matches_training_cosine(family, k, synth_records, tokenizer_corpus):
    cfg = load_llm_jepa_config(None, [f"model.tiny_family={family}", f"jepa.predictors={k}", "jepa.lam=1.0",
                                      "jepa.distance=cosine"])
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    records = synth_records[:6]
    with torch.no_grad():
        train_cos = jepa_forward(model, JepaCollator(tok, cfg)(records), cfg)["cos_sim"].item()
    enc = hf_view_encoder(model, tok, predictors=k, batch_size=4)
    t, c = enc(records, View.TEXT), enc(records, View.CODE)  # (6, D) each
    assert t.shape == c.shape == (6, model.config.hidden_size)
    assert cosine_stats(t, c)["cos_mean"] == pytest.approx(train_cos, abs=1e-5)


def test_linear_fit_and_recall_on_known_maps():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(200, 16))
    w = rng.normal(size=(16, 16))
    fit = linear_fit(text, text @ w + 0.5)
    assert fit["r2_held_out"] > 0.999 and fit["r2_in_sample"] > 0.999
    assert np.allclose(fit["map_singular_values"], np.linalg.svd(w, compute_uv=False)[:10], rtol=1e-6)
    noise = linear_fit(text, rng.normal(size=(200, 16)))
    assert noise["r2_held_out"] < 0.05  # unrelated targets: nothing explained out of sample
    rec = text_to_code_recall(text, text + 0.01 * rng.normal(size=text.shape))
    assert rec["t2c_R@1"] == 100.0
    shuffled = text_to_code_recall(text, rng.permutation(text))
    assert shuffled["t2c_R@10"] < 30.0


def test_report_with_a_plain_encode_function(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 8))

    def encode(records, view):
        idx = [r["i"] for r in records]
        return base[idx] if view is View.TEXT else base[idx] * 2.0  # same direction: cosine 1

    report = representation_report(encode, [{"i": i} for i in range(40)], tmp_path)
    assert report["cos_mean"] == pytest.approx(1.0) and report["cos_mismatched_mean"] < 0.5
    assert report["t2c_R@1"] == 100.0 and (tmp_path / "representation.png").stat().st_size > 1000
    assert (tmp_path / "representation.json").is_file()
