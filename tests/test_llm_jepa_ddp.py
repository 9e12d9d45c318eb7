"""Two processes on the CPU (torchrun, gloo) train exactly like one: 2 processes x batch 4 == 1 process x
batch 8 after a few optimizer steps (weights within tolerance), for the Accelerate loop `train()`, for
`JepaTrainer`, and for `train()` with LoRA (trainable predictor rows); the two ranks also hold equal
weights. The one-process arm runs the same script without torchrun.

    pytest tests/test_llm_jepa_ddp.py -m multiproc
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    variant, out = sys.argv[1], sys.argv[2]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    from llm_jepa.config import LLMJepaConfig
    cfg = LLMJepaConfig()
    cfg.data.limit, cfg.train.batch_size, cfg.train.grad_accum, cfg.train.max_steps = 32, 8 // world, 2, 3
    cfg.train.lr, cfg.train.output_dir, cfg.jepa.predictors, cfg.train.seed = 1e-3, f"{out}/run{world}", 1, 5
    cfg.jepa.dropout = 0.3  # the JEPA-dropout coin must fall the same way on every rank

    def dump(module, rank):
        flat = torch.cat([p.detach().flatten() for p in module.parameters() if p.requires_grad])
        torch.save(flat, f"{out}/{variant}_world{world}_rank{rank}.pt")

    if variant in ("train", "lora"):
        import llm_jepa.train as T
        if variant == "lora":
            cfg.lora.enabled, cfg.lora.r, cfg.lora.target_modules, cfg.lora.dropout = True, 4, ["q_proj", "v_proj"], 0.0
        original = T.save_output

        def dump_then_save(acc, module, tok, cfg, out_dir):
            dump(acc.unwrap_model(module), acc.process_index)
            return original(acc, module, tok, cfg, out_dir)

        T.save_output = dump_then_save
        T.train(cfg)
    else:  # JepaTrainer on 8 records: every optimizer step sees all 8, in any process layout
        from transformers import TrainingArguments
        from llm_jepa.data import load_records
        from llm_jepa.modeling import load_model_and_tokenizer
        from llm_jepa.trainer import JepaTrainer
        records = load_records("synth_train", limit=8)
        model, tok = load_model_and_tokenizer(cfg, [m["content"] for r in records for m in r["messages"]])
        args = TrainingArguments(output_dir=cfg.train.output_dir, per_device_train_batch_size=8 // world,
                                 max_steps=3, learning_rate=1e-3, report_to=[], seed=5, save_strategy="no",
                                 use_cpu=True, disable_tqdm=True, lr_scheduler_type="constant")
        trainer = JepaTrainer(model=model, args=args, cfg=cfg, processing_class=tok, train_dataset=records)
        trainer.train()
        dump(model, trainer.args.process_index)
""")


def _launch(script, variant: str, out, world: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if world == 1:
        cmd = [sys.executable, str(script), variant, str(out)]
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            env.pop(key, None)
    else:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
        assert torchrun, "torchrun not found next to the Python interpreter"
        cmd = [torchrun, "--nproc_per_node", str(world), "--master_port", "29517", str(script), variant, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.multiproc
@pytest.mark.parametrize("variant", ["train", "trainer", "lora"])
def test_two_processes_of_batch_4_equal_one_of_batch_8(variant, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    _launch(script, variant, tmp_path, 2)
    _launch(script, variant, tmp_path, 1)
    w0, w1 = (torch.load(tmp_path / f"{variant}_world2_rank{r}.pt") for r in (0, 1))  # a real 2-rank group
    assert torch.equal(w0, w1)
    single = torch.load(tmp_path / f"{variant}_world1_rank0.pt")
    assert torch.allclose(w0, single, atol=1e-5, rtol=1e-4), float((w0 - single).abs().max())
    if variant != "trainer":
        assert (tmp_path / "run2" / "final" / "config.json").is_file()
