"""Runtime choices shared by the training loops of `llm_jepa` and `vljepa`.

`MixedPrecision` is the one enum both configs use; `torchrun_on_cpu()` says whether Accelerate
must be told `cpu=True`: under `torchrun` on a machine without CUDA, Accelerate otherwise does
not form the gloo process group and each process trains alone.
"""

from __future__ import annotations

import enum
import os

import torch


class MixedPrecision(str, enum.Enum):
    """fp32 master weights with autocast ("bf16"/"fp16"); "no" = full fp32."""

    NO = "no"
    BF16 = "bf16"
    FP16 = "fp16"


def torchrun_on_cpu() -> bool:
    """True for a multi-process launch (WORLD_SIZE > 1) on a machine without CUDA."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
