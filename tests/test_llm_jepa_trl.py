"""TRL: `JepaSFTTrainer` (llm_jepa.sft) on a conversational `messages` dataset with a tiny Llama:
each loss term logged in train and eval, gradient accumulation exact (4 x 4 == 16), and the saved
output loads in `pipeline("text-generation")`.

    pytest tests/test_llm_jepa_trl.py
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl", reason="TRL is not installed: pip install jepa-lab[trl]")

from datasets import Dataset  # noqa: E402
from transformers import pipeline  # noqa: E402
from trl import SFTConfig  # noqa: E402

from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer  # noqa: E402
from llm_jepa.config import LLMJepaConfig  # noqa: E402
from llm_jepa.sft import JepaSFTTrainer  # noqa: E402


def _run(tmp_path, records, corpus, bs: int, ga: int, **kw):
    tok = tiny_tokenizer("llama", corpus)
    model = tiny_causal_lm("llama", tok, seed=0)
    jepa = LLMJepaConfig()
    jepa.jepa.predictors = 1
    args = SFTConfig(output_dir=str(tmp_path / f"sft{bs}x{ga}"), per_device_train_batch_size=bs,
                     gradient_accumulation_steps=ga, max_steps=1, learning_rate=1.0, optim="sgd", max_grad_norm=0.0,
                     lr_scheduler_type="constant", report_to=[], seed=3, logging_steps=1, use_cpu=True,
                     disable_tqdm=True, save_strategy="no", bf16=False, **kw)
    trainer = JepaSFTTrainer(model=model, args=args, jepa=jepa, processing_class=tok,
                             train_dataset=Dataset.from_list(records[:16]),
                             eval_dataset=Dataset.from_list(records[16:24]))
    trainer.train()
    return trainer, model, tok


def test_sft_trainer_logs_terms_and_accumulates_exactly(tmp_path, synth_records, tokenizer_corpus):
    records = [{"messages": r["messages"]} for r in synth_records[:24]]
    big, big_model, _ = _run(tmp_path, records, tokenizer_corpus, 16, 1)
    small, small_model, _ = _run(tmp_path, records, tokenizer_corpus, 4, 4)
    logged = small.state.log_history[0]
    assert logged["loss"] == pytest.approx(logged["lm_loss"] + logged["jepa_loss"], rel=1e-3)
    assert logged["lm_loss"] == pytest.approx(big.state.log_history[0]["lm_loss"], rel=1e-4)
    w_big = torch.cat([p.detach().flatten() for p in big_model.parameters()])
    w_small = torch.cat([p.detach().flatten() for p in small_model.parameters()])
    assert torch.allclose(w_big, w_small, atol=1e-6, rtol=1e-4)
    metrics = small.evaluate()
    assert {"eval_loss", "eval_lm_loss", "eval_jepa_loss", "eval_cos_sim"} <= set(metrics)


def test_sft_trainer_output_loads_in_a_pipeline(tmp_path, synth_records, tokenizer_corpus):
    records = [{"messages": r["messages"]} for r in synth_records[:24]]
    trainer, _, tok = _run(tmp_path, records, tokenizer_corpus, 4, 1)
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    gen = pipeline("text-generation", model=str(out))
    reply = gen([{"role": "user", "content": "lines with a dog"}], max_new_tokens=3, do_sample=False)
    assert reply[0]["generated_text"][-1]["role"] == "assistant"
    assert "<|predictor_1|>" in gen.tokenizer.get_vocab() and gen.tokenizer.pad_token != gen.tokenizer.eos_token
