"""Typed training recipe for VL-JEPA and the factories that turn it into a model and a dataset.

Data flow: `recipes/vljepa/<x>.yaml` -> `load_config(TrainConfig, path, ["optim.lr=1e-4", ...])`
(jepa_common.config: unknown keys are errors, enums coerced) -> `build_model(cfg.model)` and
`build_dataset(cfg.data, model)` -> `vljepa.train.train(cfg)` / `vljepa.cache.cache_features`.

Each field is documented where it is declared; the paper's stages are recipes, not code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from torch.utils.data import Dataset

from jepa_common.runtime import MixedPrecision  # noqa: F401  (re-exported for vljepa.train)
from vljepa.configuration import LossType


class ModelSource(str, enum.Enum):
    TINY = "tiny"  # build_tiny_vljepa: random tiny encoders, packaged MiniLM (offline)
    PRETRAINED = "pretrained"  # build_vljepa from hub ids / local paths of the three parts
    CHECKPOINT = "checkpoint"  # VLJepaModel.from_pretrained(model.checkpoint): a previous stage


class DataSource(str, enum.Enum):
    SYNTHETIC = "synthetic"  # vljepa.synthetic digit clips (offline)
    MANIFEST = "manifest"  # JSONL / CSV manifest (vljepa.data.load_manifest)
    HF = "hf"  # Hugging Face dataset with a column of media paths
    CACHE = "cache"  # features written by `vljepa cache-features`


class Schedule(str, enum.Enum):
    COSINE = "cosine"  # linear warmup, cosine decay to 0 at max_steps
    CONSTANT = "constant"  # linear warmup, then constant (the paper's stage recipes: constant 5e-5)
    LINEAR = "linear"  # linear warmup, linear decay to 0


@dataclass
class ModelConfig:
    source: ModelSource = ModelSource.TINY
    checkpoint: str | None = None  # saved VL-JEPA folder, for source=checkpoint
    x_encoder: str = "facebook/vjepa2-vitl-fpc64-256"  # hub id / path (source=pretrained)
    predictor: str = "meta-llama/Llama-3.2-1B"  # causal LM whose last layers form the predictor
    y_encoder: str = "google/embeddinggemma-300m"  # sentence encoder folder / hub id
    predictor_layers: int = 8  # last n decoder layers kept (paper: 8 of 16)
    embed_dim: int = 1536  # shared embedding size D
    attn_implementation: str = "sdpa"  # predictor attention: sdpa | eager (bidirectional either way)
    tiny_x_kind: str = "vjepa2"  # source=tiny: vjepa2 | siglip
    tiny_crop_size: int = 32
    loss: LossType = LossType.INFONCE
    temperature: float = 0.07  # InfoNCE temperature (initial value if learnable)
    learn_temperature: bool = True
    unfreeze_x_encoder: bool = False  # late-stage option; the paper keeps it frozen
    save_x_encoder: bool = False  # also store X-encoder weights in saved models (offline use)
    freeze_predictor_embeddings: bool = False  # keep the LM's token-embedding table fixed (263M at paper scale)
    seed: int = 0  # initialisation seed of tiny models


@dataclass
class DataConfig:
    source: DataSource = DataSource.SYNTHETIC
    num_frames: int = 8  # frames per clip (paper stages: 1 (images), 8, 32)
    manifest: str | None = None  # source=manifest
    hf_name: str | None = None  # source=hf: dataset id or folder
    hf_split: str = "train"
    hf_path_column: str = "path"
    hf_target_column: str = "caption"
    hf_query_column: str | None = None
    cache_dir: str | None = None  # source=cache
    synthetic_n: int = 32  # source=synthetic: number of clips
    synthetic_size: int = 32  # frame size of synthetic clips
    synthetic_seed: int = 0
    synthetic_long_videos: int = 0  # source=synthetic: also the windows of this many long videos (every stream kind)
    skip_bad_media: bool = False  # skip and count unreadable files instead of failing
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-4
    y_lr_multiplier: float = 0.05  # Y-encoder LR = lr * this (paper best 0.05-0.10; 0 = frozen)
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 0
    schedule: Schedule = Schedule.COSINE  # cosine | constant | linear (all with linear warmup)
    batch_size: int = 8  # per process
    grad_accum: int = 1
    max_steps: int = 100  # optimizer steps
    max_grad_norm: float = 1.0


@dataclass
class RunConfig:
    output_dir: str = "runs/vljepa"
    mixed_precision: MixedPrecision = MixedPrecision.NO
    log_every: int = 10
    save_every: int = 0  # checkpoint (resumable state) every n steps; 0 = only at the end
    resume: bool = True  # continue from the newest checkpoint in output_dir if there is one
    seed: int = 0
    progress: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def build_model(cfg: ModelConfig):
    """The VLJepaModel a recipe asks for, with the loss/freezing options applied."""
    from vljepa.builders import build_tiny_vljepa, build_vljepa
    from vljepa.modeling import VLJepaModel

    common = dict(loss=cfg.loss.value, temperature=cfg.temperature, learn_temperature=cfg.learn_temperature)
    if cfg.source is ModelSource.TINY:
        model = build_tiny_vljepa(x_kind=cfg.tiny_x_kind, crop_size=cfg.tiny_crop_size,
                                  predictor_layers=cfg.predictor_layers, attn_implementation=cfg.attn_implementation,
                                  embed_dim=cfg.embed_dim, seed=cfg.seed, **common)
    elif cfg.source is ModelSource.PRETRAINED:
        model = build_vljepa(cfg.x_encoder, cfg.predictor, cfg.y_encoder, predictor_layers=cfg.predictor_layers,
                             embed_dim=cfg.embed_dim, attn_implementation=cfg.attn_implementation, **common)
    else:
        if not cfg.checkpoint:
            raise ValueError("model.source=checkpoint needs model.checkpoint=<saved VL-JEPA folder>")
        model = VLJepaModel.from_pretrained(cfg.checkpoint)
    model.config.save_x_encoder = cfg.save_x_encoder
    model.set_x_encoder_trainable(cfg.unfreeze_x_encoder)
    model.set_predictor_embeddings_trainable(not cfg.freeze_predictor_embeddings)
    return model


def build_dataset(cfg: DataConfig, model) -> Dataset:
    """Records -> a dataset of preprocessed clips, or the feature cache."""
    from vljepa.cache import CachedFeatureDataset
    from vljepa.data import VideoTextDataset, load_hf_records, load_manifest, synthetic_records
    from vljepa.processing import VideoTransform

    if cfg.source is DataSource.CACHE:
        if not cfg.cache_dir:
            raise ValueError("data.source=cache needs data.cache_dir (made by `vljepa cache-features`)")
        return CachedFeatureDataset(cfg.cache_dir, model=model)
    if cfg.source is DataSource.SYNTHETIC:
        records = synthetic_records(cfg.synthetic_n, cfg.num_frames, cfg.synthetic_size, cfg.synthetic_seed,
                                    cfg.synthetic_long_videos)
    elif cfg.source is DataSource.MANIFEST:
        if not cfg.manifest:
            raise ValueError("data.source=manifest needs data.manifest=<file.jsonl|file.csv>")
        records = load_manifest(cfg.manifest)
    else:
        if not cfg.hf_name:
            raise ValueError("data.source=hf needs data.hf_name=<dataset id or folder>")
        records = load_hf_records(cfg.hf_name, cfg.hf_split, cfg.hf_path_column, cfg.hf_target_column,
                                  cfg.hf_query_column)
    return VideoTextDataset(records, VideoTransform.for_encoder(model.config.x_encoder), cfg.num_frames,
                            skip_bad_media=cfg.skip_bad_media)
