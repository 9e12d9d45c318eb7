"""VL-JEPA training end to end on the tiny offline recipe: `vljepa cache-features` then
`vljepa train` from the cache overfits a small synthetic set (text-to-video R@1 on the
training clips near 1.0), and an interrupted run resumed from its checkpoint ends with the
same weights as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jepa_common.config import load_config
from vljepa.cache import CachedFeatureDataset
from vljepa.cli import main
from vljepa.data import collate
from vljepa.modeling import VLJepaModel
from vljepa.recipe import TrainConfig
from vljepa.tasks import recall_at_k, retrieval_scores
from vljepa.train import train

RECIPE = str(Path(__file__).resolve().parent.parent / "recipes" / "vljepa" / "tiny_cpu.yaml")
N_CLIPS = 12


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vljepa") / "cache"
    main(["cache-features", "--config", RECIPE, "--out", str(out), "--set", f"data.synthetic_n={N_CLIPS}"])
    return out


def _cfg(cache_dir: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, RECIPE, [
        "data.source=cache", f"data.cache_dir={cache_dir}", f"run.output_dir={out}", "run.progress=false",
        "optim.y_lr_multiplier=0", *extra])


def test_tiny_run_overfits_synthetic_clips(cache_dir, tmp_path):
    out = tmp_path / "run"
    main(["train", "--config", RECIPE, "--set", "data.source=cache", "--set", f"data.cache_dir={cache_dir}",
          "--set", f"run.output_dir={out}", "--set", "run.progress=false", "--set", "optim.y_lr_multiplier=0",
          "--set", f"optim.batch_size={N_CLIPS}", "--set", "optim.max_steps=100"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "loss_v2t", "loss_t2v", "temperature"} <= set(rows[-1])
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    model = VLJepaModel.from_pretrained(out / "model").eval()
    data = CachedFeatureDataset(cache_dir, model=model)
    batch = collate([data[i] for i in range(len(data))])
    scores = retrieval_scores(model, batch["target"], visual=batch["visual"], query=batch["query"])
    relevant = torch.tensor([[a == b for b in batch["target"]] for a in batch["target"]])
    assert recall_at_k(scores, relevant, k=1) >= 0.9
    assert (out / "config.yaml").is_file() and (out / "DONE").is_file()


def test_resume_matches_uninterrupted_run(cache_dir, tmp_path):
    extra = ["optim.batch_size=8", "run.save_every=3", "run.log_every=1"]  # 2 batches/epoch: resume mid-epoch
    straight = train(_cfg(cache_dir, tmp_path / "a", "optim.max_steps=6", *extra))
    train(_cfg(cache_dir, tmp_path / "b", "optim.max_steps=3", *extra))
    assert (tmp_path / "b" / "checkpoints" / "step_000003" / "trainer_state.json").is_file()
    resumed = train(_cfg(cache_dir, tmp_path / "b", "optim.max_steps=6", *extra))
    assert resumed["step"] == 6 and [r["step"] for r in resumed["history"]] == [4, 5, 6]
    assert resumed["last"]["loss"] == pytest.approx(straight["last"]["loss"], rel=1e-4)
    a = VLJepaModel.from_pretrained(tmp_path / "a" / "model").state_dict()
    b = VLJepaModel.from_pretrained(tmp_path / "b" / "model").state_dict()
    for key in ("predictor_head.weight", "visual_proj.weight", "predictor.layers.0.mlp.up_proj.weight"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
