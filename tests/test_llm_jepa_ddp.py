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

# Every launched script ends in leave(). torch 2.13 + gloo: a rank that has finished its work can abort in
# interpreter teardown ("terminate called without an active exception", no Python frame: a C++ thread still
# joinable when static destructors run). Measured: 16 of 30 minimal all_reduce scripts abort if they exit
# with the group alive, 0 of 30 after destroy_process_group; with FSDP2's device mesh 8 of 80 abort even
# after it, 0 of 40 leaving with os._exit. HF Trainer leaves its group alive; train() tears it down itself.
LEAVE = textwrap.dedent("""
    def leave():
        import os, sys
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
""")

SCRIPT = LEAVE + textwrap.dedent("""
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
    leave()
""")


def _launch(script, variant: str, out, world: int, args: list[str] | None = None) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = args if args is not None else [variant, str(out)]
    if world == 1:
        cmd = [sys.executable, str(script), *args]
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            env.pop(key, None)
    else:
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
        assert torchrun, "torchrun not found next to the Python interpreter"
        cmd = [torchrun, "--nproc_per_node", str(world), "--master_port", "29517", str(script), *args]
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


FSDP_SCRIPT = LEAVE + textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    import torch.distributed as dist
    from llm_jepa.collator import JepaCollator
    from llm_jepa.config import LLMJepaConfig
    from llm_jepa.data import load_records
    from llm_jepa.modeling import JepaModule, load_model_and_tokenizer, step_norms
    out, world = sys.argv[1], int(os.environ.get("WORLD_SIZE", "1"))
    cfg = LLMJepaConfig()
    cfg.jepa.predictors = 1
    records = load_records("synth_train", limit=8)
    model, tok = load_model_and_tokenizer(cfg, [m["content"] for r in records for m in r["messages"]])
    module, rank, reduce = JepaModule(model, cfg), 0, None
    if world > 1:  # what accelerate's fsdp_version 2 does on GPUs: fully_shard each decoder layer, then the root
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        dist.init_process_group("gloo")
        rank, mesh = dist.get_rank(), init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(module, mesh=mesh)

        def reduce(t):
            dist.all_reduce(t)
            return t
    per = 8 // world
    batch = JepaCollator(tok, cfg)(records[rank * per:(rank + 1) * per])
    lm_norm, jepa_norm = step_norms([batch], True, cfg, reduce, world)
    module(**batch, lm_norm=lm_norm, jepa_norm=jepa_norm)["loss"].backward()
    with torch.no_grad():  # one SGD step, lr 1 (the gradients are averaged over the shards' ranks)
        for p in module.parameters():
            p -= p.grad
    full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in module.parameters()]
    if rank == 0:
        torch.save(torch.cat([p.detach().flatten() for p in full]), f"{out}/fsdp_world{world}.pt")
    leave()
""")


@pytest.mark.multiproc
def test_fsdp2_sharded_step_equals_one_process(tmp_path):
    """Accelerate cannot run FSDP on a CPU (1.15: DistributedType.FSDP is set for GPU-like devices only; on
    MULTI_CPU the plugin is ignored and the model is wrapped in DDP), so this runs torch's FSDP2
    `fully_shard` (the engine of recipes/accelerate/fsdp.yaml) on gloo: the sharded JepaModule's step on
    2 x batch 4 equals one process on batch 8."""
    script = tmp_path / "fsdp_step.py"
    script.write_text(FSDP_SCRIPT)
    for world in (2, 1):
        _launch(script, "fsdp", tmp_path, world, args=[str(tmp_path)])
    sharded, single = torch.load(tmp_path / "fsdp_world2.pt"), torch.load(tmp_path / "fsdp_world1.pt")
    assert torch.allclose(sharded, single, atol=1e-5, rtol=1e-4), float((sharded - single).abs().max())


def test_fsdp_recipe_builds_a_plugin_whose_layer_classes_exist():
    """recipes/accelerate/fsdp.yaml as far as a CPU goes: its fsdp_config builds accelerate's plugin and
    every decoder-layer class it wraps is a transformers class."""
    import transformers
    import yaml
    from accelerate.utils import FullyShardedDataParallelPlugin

    fsdp = yaml.safe_load(open("recipes/accelerate/fsdp.yaml"))["fsdp_config"]
    names = fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")
    assert {"LlamaDecoderLayer", "Gemma3DecoderLayer", "Qwen3DecoderLayer"} <= set(names)
    assert all(hasattr(transformers, n) or _layer_class(n) for n in names), names
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=names, state_dict_type=fsdp["fsdp_state_dict_type"],
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
        cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"])
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == names


def _layer_class(name: str) -> bool:
    import importlib

    family = {"Llama": "llama", "Gemma2": "gemma2", "Gemma3": "gemma3", "Qwen2": "qwen2", "Qwen3": "qwen3",
              "Mistral": "mistral"}[name.removesuffix("DecoderLayer")]
    module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    return hasattr(module, name)
