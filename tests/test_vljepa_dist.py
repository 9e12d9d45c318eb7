"""Two real processes (torchrun, gloo): gathered InfoNCE equals the single-process loss on the
same global batch, and the gradients that reach each process's own embeddings equal the
single-process gradients (times the world size, which DDP's averaging divides out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vljepa.losses import info_nce

WORKER = r'''
import json, sys, torch, torch.distributed as dist
from vljepa.losses import info_nce
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
g = torch.Generator().manual_seed(0)
pred, target = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
ids = torch.tensor([0, 1, 2, 3, 4, 0, 6, 3])  # duplicates across the two processes' halves
b = 8 // world
sl = slice(rank * b, (rank + 1) * b)
p = pred[sl].clone().requires_grad_(True)
t = target[sl].clone().requires_grad_(True)
out = info_nce(p, t, logit_scale=10.0, target_ids=ids[sl])
out["loss"].backward()
loss = out["loss"].detach().clone()
dist.all_reduce(loss)
res = {"rank": rank, "mean_loss": loss.item() / world, "grad_p": p.grad.tolist(), "grad_t": t.grad.tolist()}
json.dump(res, open(sys.argv[1] + f"/rank{rank}.json", "w"))
dist.destroy_process_group()
'''


@pytest.mark.multiproc
def test_gathered_info_nce_equals_single_process(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    g = torch.Generator().manual_seed(0)
    pred = torch.randn(8, 16, generator=g).requires_grad_(True)
    target = torch.randn(8, 16, generator=g).requires_grad_(True)
    ids = torch.tensor([0, 1, 2, 3, 4, 0, 6, 3])
    ref = info_nce(pred, target, logit_scale=10.0, target_ids=ids)
    ref["loss"].backward()
    for rank in (0, 1):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert res["mean_loss"] == pytest.approx(ref["loss"].item(), rel=1e-5)
        sl = slice(rank * 4, (rank + 1) * 4)
        torch.testing.assert_close(torch.tensor(res["grad_p"]) / 2, pred.grad[sl], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.tensor(res["grad_t"]) / 2, target.grad[sl], rtol=1e-4, atol=1e-6)
