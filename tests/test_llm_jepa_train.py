"""Training side: exact gradient accumulation (Accelerate loop and JepaTrainer), resume after a
crash, LoRA with trainable predictor tokens, and outputs that `transformers.pipeline` loads.

    pytest tests/test_llm_jepa_train.py
"""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, TrainingArguments, pipeline

from llm_jepa.collator import JepaCollator
from llm_jepa.config import Distance, LLMJepaConfig, load_llm_jepa_config
from llm_jepa.data import InvalidRecords, RecordError, load_records
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
        logged = trainer.state.log_history[0]  # every term is logged, and they add up to the loss
        assert logged["jepa_loss"] > 0
        assert logged["loss"] == pytest.approx(cfg.jepa.gamma * logged["lm_loss"] + cfg.jepa.lam * logged["jepa_loss"],
                                               rel=1e-3)
        assert -1.0 <= logged["cos_sim"] <= 1.0
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6, rtol=1e-4)


def _trainer_args(out, **kw) -> TrainingArguments:
    base = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                report_to=[], seed=3, logging_steps=1, use_cpu=True, disable_tqdm=True, save_strategy="no")
    return TrainingArguments(**{**base, **kw})


def test_paper_compat_divides_neither_term_by_accumulation(synth_records, tokenizer_corpus):
    """The reference's JEPA arm returns per-micro-batch means and skips the accumulation division: both
    terms, so the weighting lambda holds (the bug divided only the LM term: effective lambda x GA)."""
    cfg = LLMJepaConfig()
    cfg.jepa.predictors, cfg.jepa.paper_compat = 1, True
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    module, acc, collate = JepaModule(model, cfg), Accelerator(cpu=True), JepaCollator(tok, cfg)
    micro = [collate(synth_records[i:i + 4]) for i in range(0, 16, 4)]
    for lam, gamma in ((1.0, 0.0), (0.0, 1.0)):
        cfg.jepa.lam, cfg.jepa.gamma = lam, gamma
        run_step(module, micro, True, cfg, acc)
        accumulated = _grads(module)
        module.zero_grad()
        summed = 0
        for b in micro:  # each micro-batch alone, its own mean, undivided
            run_step(module, [b], True, cfg, acc)
            summed = summed + _grads(module)
            module.zero_grad()
        assert torch.allclose(accumulated, summed, atol=1e-6, rtol=1e-4), (lam, gamma)


def test_jepa_trainer_paper_compat_matches_the_reference_scaling(tmp_path, synth_records, tokenizer_corpus):
    """JEPA-only, SGD, no clipping: GA = 4 x batch 4 moves the weights 4x as far as one batch of 16 (per-micro
    means, no division), as in the reference; without paper_compat the two updates are equal."""
    deltas = {}
    for compat in (True, False):
        for bs, ga in ((16, 1), (4, 4)):
            cfg = LLMJepaConfig()
            cfg.jepa.predictors, cfg.jepa.paper_compat, cfg.jepa.gamma = 1, compat, 0.0
            model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
            before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
            args = _trainer_args(tmp_path / f"c{compat}{bs}", per_device_train_batch_size=bs, max_steps=1,
                                 gradient_accumulation_steps=ga, learning_rate=1.0, optim="sgd", max_grad_norm=0.0,
                                 lr_scheduler_type="constant")
            JepaTrainer(model=model, args=args, cfg=cfg, processing_class=tok, train_dataset=synth_records[:16]).train()
            deltas[compat, ga] = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert torch.allclose(deltas[True, 4], 4 * deltas[True, 1], atol=1e-6, rtol=1e-3)
    assert torch.allclose(deltas[False, 4], deltas[False, 1], atol=1e-6, rtol=1e-3)


def test_jepa_trainer_resume_checkpointing_eval_terms_and_invalid_records(tmp_path, synth_records, tokenizer_corpus):
    cfg = LLMJepaConfig()
    cfg.jepa.predictors, cfg.data.max_length = 1, 200
    too_long = {"messages": [{"role": "user", "content": "x " * 400}, {"role": "assistant", "content": "y"}]}
    data = [*synth_records[:12], too_long, *synth_records[12:16]]
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    args = _trainer_args(tmp_path / "t", max_steps=4, gradient_checkpointing=True, save_strategy="steps",
                         save_steps=2, eval_strategy="no")
    trainer = JepaTrainer(model=model, args=args, cfg=cfg, processing_class=tok, train_dataset=data,
                          eval_dataset=synth_records[16:24])  # the over-long record is skipped (on_invalid=skip)
    assert len(trainer.train_dataset) == 16
    trainer.train()
    ckpt = tmp_path / "t" / "checkpoint-2"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "training_args.json").is_file()
    assert not (ckpt / "training_args.bin").exists()
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_lm_loss", "eval_jepa_loss", "eval_cos_sim"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_lm_loss"] + metrics["eval_jepa_loss"], rel=1e-3)
    final = torch.cat([p.detach().flatten() for p in model.parameters()])
    model2, _ = load_model_and_tokenizer(cfg, tokenizer_corpus)
    resumed = JepaTrainer(model=model2, args=_trainer_args(tmp_path / "t", max_steps=4, save_strategy="no"),
                          cfg=cfg, processing_class=tok, train_dataset=data)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == 4
    assert torch.allclose(torch.cat([p.detach().flatten() for p in model2.parameters()]), final, atol=1e-5)
    cfg.data.on_invalid = InvalidRecords.ERROR  # fails at construction, naming the record, not mid-run
    with pytest.raises(RecordError, match="record 12: .*max_length=200"):
        JepaTrainer(model=model2, args=_trainer_args(tmp_path / "e"), cfg=cfg, processing_class=tok, train_dataset=data)


def test_jepa_trainer_save_uses_the_state_dict_it_is_given(tmp_path, tokenizer_corpus):
    """FSDP / DeepSpeed gather the full state dict and pass it to `_save` (keys of the JepaModule)."""
    cfg = LLMJepaConfig()
    model, tok = load_model_and_tokenizer(cfg, tokenizer_corpus)
    trainer = JepaTrainer(model=model, args=_trainer_args(tmp_path / "s"), cfg=cfg, processing_class=tok)
    given = {k: torch.zeros_like(v) if "norm" in k else v for k, v in trainer.model.state_dict().items()}
    trainer._save(str(tmp_path / "s" / "out"), state_dict=given)
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "s" / "out")
    assert float(saved.model.norm.weight.detach().abs().sum()) == 0.0


def test_resume_after_crash_reaches_the_same_loss(tmp_path):
    over = dict(train__max_steps=6, train__save_every=2, jepa__dropout=0.5, train__grad_accum=2)
    reference = train(_tiny_cfg(tmp_path / "a", **over))

    def crash(step: int, metrics: dict) -> None:
        if step == 5:
            raise KeyboardInterrupt("simulated kill")

    cfg = _tiny_cfg(tmp_path / "b", **over)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=crash)
    ckpt = tmp_path / "b" / "run" / "checkpoints"
    assert (ckpt / "last").read_text() == "step-4"
    assert json.loads((ckpt / "step-4" / "train_state.json").read_text())["step"] == 4  # our state: JSON
    assert not list((ckpt / "step-4").glob("custom_checkpoint_*"))  # no pickled custom state
    with open(tmp_path / "b" / "run" / "metrics.jsonl", "a") as f:
        f.write('{"loss": 1.0, "st')  # killed mid-write: a torn last line
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


def test_lora_adapter_end_to_end_eval_and_pipeline(tmp_path):
    """LoRA + trainable predictor rows -> adapter/ (no embedding matrix) -> `llm-jepa eval` and
    `pipeline("text-generation")` both load it, and agree with AutoPeftModelForCausalLM."""
    from peft import AutoPeftModelForCausalLM
    from safetensors import safe_open

    from llm_jepa.cli import main

    cfg = _tiny_cfg(tmp_path, train__max_steps=2, lora__enabled=True, lora__merge=False, lora__r=4)
    cfg.lora.target_modules = ["q_proj", "v_proj"]
    adapter = train(cfg)["output"]
    assert adapter.endswith("adapter")
    with safe_open(f"{adapter}/adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        assert not any(k.endswith("embed_tokens.weight") or k.endswith("lm_head.weight") for k in keys), keys
        assert any("trainable_tokens" in k for k in keys)  # the predictor rows travel with the adapter
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", adapter, "--task", "synth", "--data", "synth_test", "--limit", "3",
                 "--out", str(out), "--max-new-tokens", "4"]) == 0
    assert json.loads((out / "summary.json").read_text())["n_records"] == 3
    gen = pipeline("text-generation", model=adapter)
    assert gen([{"role": "user", "content": "a dog"}], max_new_tokens=2, do_sample=False)[0]["generated_text"]
    peft_model = AutoPeftModelForCausalLM.from_pretrained(adapter).eval()
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.allclose(gen.model(ids).logits, peft_model(ids).logits, atol=1e-5)


def test_infonce_warns_that_accumulation_adds_no_negatives(tmp_path, caplog):
    """InfoNCE negatives come from one micro-batch: 4 x 4 accumulation is not batch 16 for it (say so)."""
    with caplog.at_level("WARNING"):
        train(_tiny_cfg(tmp_path, train__max_steps=1, train__grad_accum=2, jepa__distance=Distance.INFONCE))
    assert "negatives from each micro-batch" in caplog.text
