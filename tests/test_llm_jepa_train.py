"""Training side: exact gradient accumulation (Accelerate loop and JepaTrainer), resume after a
crash, LoRA with trainable predictor tokens, and outputs that `transformers.pipeline` loads.

    pytest tests/test_llm_jepa_train.py
"""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from transformers import TrainingArguments, pipeline

from llm_jepa.collator import JepaCollator
from llm_jepa.config import Distance, LLMJepaConfig, load_llm_jepa_config
from llm_jepa.data import load_records
from llm_jepa.modeling import JepaModule, load_model_and_tokenizer
from llm_jepa.train import run_step, train
from llm_jepa.trainer import JepaTrainer


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is much faster on a busy 2-core machine
    yield
    torch.set_num_threads(before)


def _tiny_cfg(tmp_path, **over) -> LLMJepaConfig:
    cfg = LLMJepaConfig()
    cfg.data.limit, cfg.train.batch_size, cfg.train.lr = 64, 4, 1e-3
    cfg.train.output_dir = str(tmp_path / "run")
    cfg.jepa.predictors = 2
    for key, value in over.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _grads(module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


@pytest.mark.parametrize("distance", [Distance.COSINE, Distance.MSE])
def test_accumulation_4x4_equals_one_batch_of_16(distance, synth_records, tokenizer_corpus):
    cfg = LLMJepaConfig()
    cfg.jepa.distance, cfg.jepa.predictors = distance, 1
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    module, acc, collate = JepaModule(model, cfg), Accelerator(cpu=True), JepaCollator(tok, cfg)
    records = synth_records[:16]
    run_step(module, [collate(records)], True, cfg, acc)
    big = _grads(module)
    module.zero_grad()
    sums = run_step(module, [collate(records[i:i + 4]) for i in range(0, 16, 4)], True, cfg, acc)
    assert sums["n_pairs"] == 16
    assert torch.allclose(_grads(module), big, atol=1e-6, rtol=1e-4)
    module.zero_grad()  # lambda-only and LM-only parts match separately too
    for lam, gamma in ((1.0, 0.0), (0.0, 1.0)):
        cfg.jepa.lam, cfg.jepa.gamma = lam, gamma
        run_step(module, [collate(records)], True, cfg, acc)
        one = _grads(module)
        module.zero_grad()
        run_step(module, [collate(records[i:i + 4]) for i in range(0, 16, 4)], True, cfg, acc)
        assert torch.allclose(_grads(module), one, atol=1e-6, rtol=1e-4)
        module.zero_grad()


@pytest.mark.parametrize("overrides", [[], ["jepa.objective=stp", "stp.spans=2", "stp.length_weight=jaccard_like"]],
                         ids=["views", "stp"])
def test_jepa_trainer_accumulation_matches_big_batch(overrides, tmp_path, synth_records, tokenizer_corpus):
    cfg = load_llm_jepa_config(None, ["jepa.predictors=1", *overrides])  # STP: spans keyed per row, so equal
    weights = []
    for bs, ga in ((16, 1), (4, 4)):
        model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
        args = TrainingArguments(output_dir=str(tmp_path / f"t{bs}"), per_device_train_batch_size=bs,
                                 gradient_accumulation_steps=ga, max_steps=1, learning_rate=1.0, optim="sgd",
                                 max_grad_norm=0.0, lr_scheduler_type="constant", report_to=[], seed=3,
                                 save_strategy="no", logging_steps=1, use_cpu=True, disable_tqdm=True)
        trainer = JepaTrainer(model=model, args=args, cfg=cfg, processing_class=tok,
                              train_dataset=synth_records[:16])
        trainer.train()
        assert set(trainer.log_terms) == {"lm_loss", "jepa_loss", "cos_sim"} and trainer.log_terms["jepa_loss"] > 0
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6, rtol=1e-4)


def test_resume_after_crash_reaches_the_same_loss(tmp_path):
    over = dict(train__max_steps=6, train__save_every=2, jepa__dropout=0.5, train__grad_accum=2)
    reference = train(_tiny_cfg(tmp_path / "a", **over))

    def crash(step: int, metrics: dict) -> None:
        if step == 5:
            raise KeyboardInterrupt("simulated kill")

    cfg = _tiny_cfg(tmp_path / "b", **over)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=crash)
    assert (tmp_path / "b" / "run" / "checkpoints" / "last").read_text() == "step-4"
    resumed = train(cfg)
    for key in ("loss", "lm_loss", "jepa_loss", "cos_sim"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-6), key
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "run" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_output_loads_in_a_text_generation_pipeline(tmp_path):
    result = train(_tiny_cfg(tmp_path, train__max_steps=2))
    gen = pipeline("text-generation", model=result["output"])
    out = gen([{"role": "user", "content": "lines with a dog"}], max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
    assert "<|predictor_2|>" in gen.tokenizer.get_vocab() and gen.tokenizer.pad_token != gen.tokenizer.eos_token


def test_lora_trains_distinct_predictor_tokens_and_merges(tmp_path):
    cfg = _tiny_cfg(tmp_path, train__max_steps=3, lora__enabled=True, lora__merge=True, lora__r=4)
    cfg.lora.target_modules = ["q_proj", "v_proj"]
    corpus = [m["content"] for r in load_records(cfg.data.train, limit=cfg.data.limit) for m in r["messages"]]
    init_model, tok = load_model_and_tokenizer(cfg, corpus)  # what train() builds before training
    ids = tok.convert_tokens_to_ids(["<|predictor_1|>", "<|predictor_2|>"])
    init = init_model.get_input_embeddings().weight.detach()
    assert not torch.allclose(init[ids[0]], init[ids[1]])  # distinct at init (reference: identical)
    result = train(cfg)
    gen = pipeline("text-generation", model=result["output"])
    trained = gen.model.get_input_embeddings().weight.detach()
    assert not torch.allclose(trained[ids], init[ids])  # predictor rows were trained under LoRA
    assert torch.allclose(trained[:10], init[:10])  # the rest of the embedding stayed frozen
    assert gen([{"role": "user", "content": "a dog"}], max_new_tokens=2)[0]["generated_text"]


def test_cli_train_with_overrides_and_a_bad_key(tmp_path, capsys):
    from llm_jepa.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "--config", "recipes/llm_jepa/tiny_cpu.yaml", "--set", "train.max_steps=2",
               "--set", "data.limit=64", "--set", f"train.output_dir={out}", "--set", "jepa.distance=infonce"])
    assert rc == 0 and (out / "final" / "config.json").is_file()
    assert "distance: infonce" in (out / "config.yaml").read_text()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(SystemExit):
        main(["train", "--config", "recipes/llm_jepa/tiny_cpu.yaml", "--set", "jepa.lamda=1"])
    assert "lamda" in capsys.readouterr().err
