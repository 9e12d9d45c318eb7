"""Typed training configuration for LLM-JEPA finetuning (`LLMJepaConfig` and its sections).

Data flow: these dataclasses give the defaults -> a recipe under `recipes/llm_jepa/*.yaml`
overrides them -> `--set a.b=c` on the CLI overrides the recipe (`jepa_common.config`) ->
the resolved tree is written to `<output_dir>/config.yaml` by `llm_jepa.train.train`.

    cfg = load_llm_jepa_config("recipes/llm_jepa/tiny_cpu.yaml", ["jepa.lam=0.5"])

The loss is `gamma * L_LM + lam * d(Pred(Enc(Text)), Enc(Code))` (arXiv:2509.14252, eq. 1).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path

from jepa_common.config import load_config
from jepa_common.runtime import MixedPrecision  # noqa: F401  (re-exported: part of this config's API)
from llm_jepa.data import InvalidRecords
from llm_jepa.stp import StpConfig


class Distance(enum.Enum):
    """d(.,.) between predicted and target embeddings (paper section 3; cosine is the default)."""

    COSINE = "cosine"  # 1 - cos(a, b), batch mean
    L2 = "l2"  # ||a - b||_2, batch mean
    MSE = "mse"  # mean squared error over features and batch
    INFONCE = "infonce"  # in-batch contrastive, Code targets as classes (temperature below)


class Objective(enum.Enum):
    """Which JEPA term is added to the LM loss (its weight is `jepa.lam` either way)."""

    VIEWS = "views"  # LLM-JEPA: d(Pred(Enc(Text)), Enc(Code)) between two extra views (arXiv:2509.14252)
    STP = "stp"  # Semantic Tube Prediction on the conversation's own states, no extra view (`stp` section)


class JepaMode(enum.Enum):
    """How Enc(Text) is computed."""

    REFERENCE = "reference"  # Text view run alone (the paper's definition), packed into the record's row
    IN_CONTEXT = "in_context"  # hidden state at the end of the user turn inside the full conversation


class Padding(enum.Enum):
    RIGHT = "right"
    LEFT = "left"


class Schedule(enum.Enum):
    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


@dataclass
class ModelSection:
    name_or_path: str = "tiny"  # hub id, local folder, shipped "mini-llama" (llm_jepa.pretrained), or "tiny" = random
    tiny_family: str = "llama"  # for name_or_path=tiny: llama | gemma | gemma3 | qwen | qwen3 | mistral
    tiny_sliding_window: int | None = None  # for name_or_path=tiny: window of the sliding-attention layers
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_vocab_size: int = 512  # BPE trained on the training records
    attn_implementation: str = "sdpa"  # sdpa | eager (Gemma 2 always eager)
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


@dataclass
class DataSection:
    train: str = "synth_train"  # packaged set name (llm_jepa/datasets), JSONL path, or datasets hub id org/name
    split: str | None = None  # for hub ids
    limit: int | None = None  # use only the first N records
    max_length: int = 512  # longest view; longer records follow on_invalid
    on_invalid: InvalidRecords = InvalidRecords.SKIP  # malformed / over-long records: error | skip
    padding_side: Padding = Padding.RIGHT


@dataclass
class JepaSection:
    lam: float = 1.0  # weight of the JEPA term (0 = plain finetuning, no extra views computed)
    objective: Objective = Objective.VIEWS  # views (LLM-JEPA) | stp (options in the `stp` section)
    gamma: float = 1.0  # weight of the LM term
    predictors: int = 1  # k predictor tokens appended to the Text view
    distance: Distance = Distance.COSINE
    temperature: float = 0.07  # InfoNCE temperature (the reference's value)
    mode: JepaMode = JepaMode.REFERENCE
    dropout: float = 0.0  # alpha: skip the JEPA term on this fraction of optimizer steps
    last_token_offset: int | None = None  # None: tracked span; an int: reference-style offset from the end
    paper_compat: bool = False  # reproduce the reference's quirks (docs/llm_jepa.md)


@dataclass
class LoraSection:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])
    merge: bool = True  # final/ = merged full checkpoint; false: adapter/ only (LoRA + predictor rows)


@dataclass
class TrainSection:
    lr: float = 2e-5
    weight_decay: float = 0.0
    epochs: int = 4
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 4  # per process, per micro-batch
    grad_accum: int = 1
    mixed_precision: MixedPrecision = MixedPrecision.NO
    max_grad_norm: float | None = 1.0
    schedule: Schedule = Schedule.LINEAR
    warmup_ratio: float = 0.0
    seed: int = 0
    output_dir: str = "runs/llm_jepa"
    save_every: int | None = None  # optimizer steps between checkpoints (None: only at the end)
    resume: bool = True  # continue from output_dir/checkpoints/last when it exists
    log_every: int = 1
    report_to: list[str] = field(default_factory=list)  # accelerate trackers, e.g. ["tensorboard"]
    shuffle: bool = True


@dataclass
class LLMJepaConfig:
    """Everything a run needs; `load_llm_jepa_config` builds it from a recipe plus overrides."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    jepa: JepaSection = field(default_factory=JepaSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    stp: StpConfig = field(default_factory=StpConfig)  # used when jepa.objective = stp

    def __post_init__(self) -> None:
        if self.jepa.predictors < 0:
            raise ValueError(f"jepa.predictors={self.jepa.predictors}; use 0 or more predictor tokens")
        if not 0.0 <= self.jepa.dropout < 1.0:
            raise ValueError(f"jepa.dropout={self.jepa.dropout}; it is a fraction of steps in [0, 1)")
        if self.train.grad_accum < 1 or self.train.batch_size < 1:
            raise ValueError("train.batch_size and train.grad_accum must be at least 1")
        if not (math.isfinite(self.jepa.lam) and math.isfinite(self.jepa.gamma)):
            raise ValueError(f"jepa.lam={self.jepa.lam}, jepa.gamma={self.jepa.gamma}; the loss weights must be finite")
        if self.model.tiny_sliding_window is not None and self.model.tiny_sliding_window < 1:
            raise ValueError(f"model.tiny_sliding_window={self.model.tiny_sliding_window}; use a window of at least "
                             "1 token, or leave it unset")
        if self.jepa.objective is Objective.STP and self.jepa.distance is not Distance.COSINE:
            raise ValueError(f"jepa.distance={self.jepa.distance.value} is for the views objective; STP is "
                             "1 - cos by definition (use jepa.distance=cosine)")


def load_llm_jepa_config(path: str | Path | None = None, overrides: list[str] | None = None) -> LLMJepaConfig:
    """Defaults <- YAML recipe <- `a.b=c` overrides."""
    return load_config(LLMJepaConfig, path, overrides)
