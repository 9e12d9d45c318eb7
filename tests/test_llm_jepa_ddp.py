"""Two processes on the CPU (torchrun, gloo): the Accelerate loop keeps the ranks' weights equal
after optimizer steps (each rank saw different records; DDP averaged the gradients).

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
    import sys, torch
    torch.set_num_threads(1)
    import llm_jepa.train as T
    from llm_jepa.config import LLMJepaConfig
    out = sys.argv[1]
    original = T.save_output

    def dump_then_save(acc, module, tok, cfg, out_dir):
        flat = torch.cat([p.detach().flatten() for p in acc.unwrap_model(module).parameters()])
        torch.save(flat, f"{out}/rank{acc.process_index}of{acc.num_processes}.pt")
        return original(acc, module, tok, cfg, out_dir)

    T.save_output = dump_then_save
    cfg = LLMJepaConfig()
    cfg.data.limit, cfg.train.batch_size, cfg.train.grad_accum, cfg.train.max_steps = 64, 4, 2, 2
    cfg.train.lr, cfg.train.output_dir, cfg.jepa.predictors = 1e-3, out + "/run", 1
    result = T.train(cfg)
    print("RESULT", result["lm_loss"], result["jepa_loss"])
""")


@pytest.mark.multiproc
def test_two_ranks_agree_after_steps(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun not found next to the Python interpreter"
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517", str(script), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = torch.load(tmp_path / "rank0of2.pt"), torch.load(tmp_path / "rank1of2.pt")  # a real 2-rank group
    assert torch.equal(w0, w1)
    assert (tmp_path / "run" / "final" / "config.json").is_file()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert len(lines) == 2 and all(float(x) > 0 for x in lines[0].split()[1:])
