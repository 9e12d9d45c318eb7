"""Resumable VL-JEPA training state without pickle: JSON for scalars, safetensors for tensors.

Accelerate's `save_state` pickles the RNG states and the optimizer (and `load_state` unpickles
them with `weights_only=False`), so a checkpoint folder from elsewhere could run code on load.
This module writes only data formats that cannot execute anything. Layout of
`output_dir/checkpoints/step_NNNNNN/`:

    model.safetensors       trainable parameters (+ the logit scale) of the unwrapped model
    optimizer.safetensors   per-parameter optimizer tensors, keyed "<param index>.<name>"
    rng-<rank>.safetensors  torch CPU (and CUDA) generator states of each process
    rng-<rank>.json         Python and NumPy generator states of each process
    trainer_state.json      step, optimizer param groups and scalar state, scheduler state;
                            written last, so a folder without it is incomplete and ignored

    save_state(ckpt_dir, accelerator, model, optimizer, scheduler, step)
    step = load_state(ckpt_dir, accelerator, model, optimizer, scheduler)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from jepa_common.io import atomic_write, atomic_write_json

STATE_FILE = "trainer_state.json"


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    data = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}  # clones: no shared storage
    atomic_write(path, lambda tmp: save_file(data, str(tmp)))


def _trained_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad or n == "logit_scale"}


def _optimizer_parts(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state_dict split into tensors (safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _rng_parts() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(state), gauss],
                     "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def save_state(ckpt: str | Path, accelerator, model, optimizer, scheduler, step: int) -> Path:
    """Write the resumable state of a run at `step` (every process calls this)."""
    ckpt = Path(ckpt)
    rank = accelerator.process_index
    rng_tensors, rng_json = _rng_parts()
    _save_tensors(ckpt / f"rng-{rank}.safetensors", rng_tensors)
    atomic_write_json(ckpt / f"rng-{rank}.json", rng_json)
    if accelerator.is_main_process:
        _save_tensors(ckpt / "model.safetensors", _trained_tensors(accelerator.unwrap_model(model)))
        opt_tensors, opt_json = _optimizer_parts(optimizer)
        _save_tensors(ckpt / "optimizer.safetensors", opt_tensors)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # written last: marks the checkpoint complete
        atomic_write_json(ckpt / STATE_FILE, {"step": step, "optimizer": opt_json,
                                              "scheduler": scheduler.state_dict(),
                                              "world_size": accelerator.num_processes})
    accelerator.wait_for_everyone()
    return ckpt


def _load_optimizer(optimizer, tensors: dict[str, torch.Tensor], info: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(info["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in info["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _load_rng(ckpt: Path, rank: int) -> None:
    if not (ckpt / f"rng-{rank}.json").is_file():  # resumed with more processes: keep the seeded state
        return
    tensors = load_file(str(ckpt / f"rng-{rank}.safetensors"))
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    info = json.loads((ckpt / f"rng-{rank}.json").read_text())
    version, state, gauss = info["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def load_state(ckpt: str | Path, accelerator, model, optimizer, scheduler) -> int:
    """Restore a checkpoint written by `save_state`; returns its step."""
    ckpt = Path(ckpt)
    info = json.loads((ckpt / STATE_FILE).read_text())
    if "optimizer" not in info:
        raise ValueError(f"{ckpt} is an old (pickled Accelerate) checkpoint; this version reads only its own "
                         "JSON/safetensors state: start a new output_dir or set run.resume=false")
    weights = load_file(str(ckpt / "model.safetensors"))
    unwrapped = accelerator.unwrap_model(model)
    unknown = sorted(set(weights) - set(dict(unwrapped.named_parameters())))
    if unknown:
        raise ValueError(f"{ckpt}: weights {unknown[:3]} do not belong to this model; resume with the same recipe")
    unwrapped.load_state_dict(weights, strict=False)
    _load_optimizer(optimizer, load_file(str(ckpt / "optimizer.safetensors")), info["optimizer"])
    scheduler.load_state_dict(info["scheduler"])
    _load_rng(ckpt, accelerator.process_index)
    return int(info["step"])
