"""End to end: train the tiny recipe a few steps, `llm-jepa eval` it, check results.json/summary.json;
batched left-padded generation equals one-at-a-time generation; PEFT adapter folders load."""

from __future__ import annotations

import json

import pytest
import torch

from eval.results import load_results
from llm_jepa.cli import main as llm_jepa_main
from llm_jepa.config import load_llm_jepa_config
from llm_jepa.generate import generate_answers, load_for_generation
from llm_jepa.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_llm_jepa_config("recipes/llm_jepa/tiny_cpu.yaml", [
        "data.limit=48", "train.max_steps=3", f"train.output_dir={out}", "train.save_every=null",
        "train.batch_size=4", "train.grad_accum=1"])
    return train(cfg)["output"]


def test_train_then_eval_writes_results(trained_run, tmp_path):
    out = tmp_path / "eval"
    rc = llm_jepa_main(["eval", "--checkpoint", trained_run, "--task", "synth", "--data", "synth_test",
                        "--limit", "12", "--out", str(out), "--max-new-tokens", "12", "--representation",
                        "--set", "generation.batch_size=5"])
    assert rc == 0
    results = json.loads((out / "examples.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    record = load_results(out)  # the versioned schema shared with `vljepa eval`
    assert record["task"] == "llm_jepa/synth" and record["metrics"]["accuracy"] == summary["metrics"]["accuracy"]
    assert record["dataset"]["n"] == 12 and record["model"]["revision"].startswith("local-")
    assert len(results) == 12 and {"prediction", "gold", "exact_match", "equivalent", "regex_verdict"} <= set(results[0])
    assert results[0]["gold"] == "~((dog.*[0-9].*){3,})"  # first synth_test record, in order
    m = summary["metrics"]
    assert m["task"] == "synth" and m["n"] == 12 and 0.0 <= m["accuracy"] <= 100.0  # percent
    assert m["accuracy"] == pytest.approx(100 * sum(r["equivalent"] for r in results) / 12)
    assert summary["config"]["generation"]["batch_size"] == 5 and summary["config"]["task"] == "synth"
    assert "packages" in summary and "git_commit" in summary and summary["checkpoint"].endswith("final")
    rep = summary["representation"]
    assert rep["n"] == 12 and -1.0 <= rep["cos_mean"] <= 1.0 and (out / "representation" / "representation.png").is_file()
    assert (out / "config.yaml").is_file()


def test_eval_rejects_unknown_task_and_key(trained_run, tmp_path):
    with pytest.raises(SystemExit):
        llm_jepa_main(["eval", "--checkpoint", trained_run, "--task", "synth_test", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        llm_jepa_main(["eval", "--checkpoint", trained_run, "--set", "generation.beams=2", "--out", str(tmp_path)])


def test_batched_left_padded_generation_matches_single(trained_run, synth_records):
    model, tok = load_for_generation(trained_run)
    records = [synth_records[i] for i in (0, 5, 17, 33)]  # prompts of different lengths
    batched = generate_answers(model, tok, records, batch_size=4, max_new_tokens=8, progress=False)
    single = [generate_answers(model, tok, [r], batch_size=1, max_new_tokens=8, progress=False)[0] for r in records]
    assert batched == single


def test_peft_adapter_dir_loads_and_generates(make_model, synth_records, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tok = make_model("llama")
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    model.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                                  init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = None
    peft_model.save_pretrained(adapter_dir)
    with pytest.raises(ValueError, match="base model"):
        load_for_generation(adapter_dir)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    loaded, ltok = load_for_generation(adapter_dir)
    ids = torch.tensor([[1, 5, 9, 12]])
    assert torch.allclose(loaded(ids).logits, peft_model(ids).logits, atol=1e-5)
    assert len(generate_answers(loaded, ltok, synth_records[:2], max_new_tokens=4, progress=False)) == 2
