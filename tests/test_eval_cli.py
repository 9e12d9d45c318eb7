"""Tests for vljepa.eval_cli and eval.results: tiny saved VL-JEPA -> retrieval/classify results, saved-embedding
runs reproduce the model runs, versioned results.json, compare table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eval_fake_model import FakeVLJepa, fake_clips

from eval.results import RESULTS_VERSION, compare_table, flatten_metrics, load_results, write_results
from vljepa.eval_cli import main
from vljepa.synthetic import class_names
from vljepa.tasks import video_embeddings


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from vljepa.builders import build_tiny_vljepa

    path = tmp_path_factory.mktemp("tiny_vljepa")
    build_tiny_vljepa(num_frames=4, crop_size=32).save_pretrained(path)
    return path


def _run(*args: str) -> int:
    return main(list(args))


def test_retrieval_cli_model_then_saved_embeddings(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ret"
    assert _run("retrieval", "--set", f"model={tiny_model_dir}", "--set", "data.n=12", "--set", f"out={out}") == 0
    rec = load_results(out)
    assert rec["results_version"] == RESULTS_VERSION and rec["task"] == "retrieval"
    assert rec["dataset"]["n"] == 12 and rec["dataset"]["n_texts"] == 48  # 4 captions per synthetic clip
    assert rec["metrics"]["t2v"]["n_queries"] == 48 and 0 <= rec["metrics"]["v2t"]["R@1"] <= 100
    assert rec["model"]["revision"].startswith("local-") and rec["config"]["data"]["n"] == 12
    assert "torch" in rec["meta"]["packages"] and "git_commit" in rec["meta"]
    assert (out / "results.md").read_text().startswith("# retrieval results")
    again = tmp_path / "ret2"
    _run("retrieval", "--set", f"embeddings={out}", "--set", f"out={again}")
    assert load_results(again)["metrics"] == rec["metrics"]
    assert "results written to" in capsys.readouterr().out


def test_classify_cli_with_templates_and_compare(tiny_model_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ("--set", f"model={tiny_model_dir}", "--set", "data.n=10")
    _run("classify", *common, "--set", f"out={a}")
    _run("classify", *common, "--set", f"out={b}", "--set", "templates=['a digit that {}', '{}']")
    ra, rb = load_results(a), load_results(b)
    assert ra["dataset"]["fingerprint"] == rb["dataset"]["fingerprint"]
    assert len(ra["metrics"]["confusion"]) == len(class_names()) and (a / "confusion.png").is_file()
    assert not np.allclose(np.load(a / "classes.npy"), np.load(b / "classes.npy"))  # templates were used
    capsys.readouterr()
    _run("compare", str(a / "results.json"), str(b / "results.json"))
    table = capsys.readouterr().out
    diff = rb["metrics"]["top1"] - ra["metrics"]["top1"]
    assert "| top1 |" in table and f"{diff:.4g}" in table.split("| top1 |")[1].splitlines()[0]
    assert "per_class" not in table and "different dataset" not in table


def test_classify_from_saved_embeddings_of_a_fake_model(tmp_path):
    names = class_names()
    model = FakeVLJepa(names)
    labels = [i % len(names) for i in range(20)]
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "video.npy", video_embeddings(model, fake_clips(labels), query="what happens?").numpy())
    np.save(emb / "labels.npy", np.array(labels))
    np.save(emb / "classes.npy", torch.nn.functional.normalize(model.encode_text(names), dim=-1).numpy())
    (emb / "class_names.txt").write_text("\n".join(names) + "\n")
    _run("classify", "--set", f"embeddings={emb}", "--set", f"out={tmp_path / 'out'}")
    rec = load_results(tmp_path / "out")
    assert rec["metrics"]["top1"] == 100.0 and rec["model"]["id"] is None


def test_cli_rejects_model_and_embeddings_together(tmp_path):
    with pytest.raises(SystemExit, match="exactly one"):
        _run("retrieval", "--set", "model=x", "--set", "embeddings=y")


def test_results_round_trip_and_version_check(tmp_path):
    path = write_results(tmp_path, "retrieval", {"t2v": {"R@1": 50.0, "n_queries": 2}}, {"k": 1},
                         {"id": "m", "revision": "r"}, {"name": "d", "fingerprint": "f", "n": 2})
    rec = load_results(path)
    assert flatten_metrics(rec["metrics"]) == {"t2v.R@1": 50.0, "t2v.n_queries": 2.0}
    other = json.loads(path.read_text())
    other["metrics"]["t2v"]["R@1"] = 75.0
    assert "| t2v.R@1 | 50 | 75 | 25 |" in compare_table(rec, other)
    other["results_version"] = 999
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="results_version"):
        load_results(path)
