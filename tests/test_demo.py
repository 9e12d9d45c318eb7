"""End-to-end test of the offline VL-JEPA demo (`python -m vljepa.demo`) at tiny settings.

Runs the pretrained X-encoder arm plus the random one via --compare-steps (both from cached features),
the Y-decoder and selective decoding on one short long-video, and checks the written results.

    pytest tests/test_demo.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vljepa.demo import main

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "vljepa" / "pretrain_tiny_cpu.yaml"

TINY = ["--steps", "12", "--x-encoder", "pretrained", "--compare-steps", "6", "--pretrain-recipe", str(RECIPE),
        *[a for kv in ("optim.max_steps=4", "optim.batch_size=4", "optim.warmup_steps=1", "data.synthetic_n=6",
                       "data.video_windows=0", "monitor.every=2", "monitor.train_clips=20", "monitor.test_clips=10",
                       "monitor.attentive_steps=20", "run.progress=false") for a in ("--pretrain-set", kv)],
        "--batch-size", "16", "--train-clips", "48", "--test-clips", "20", "--decoder-steps", "10",
        "--long-videos", "2", "--calib-videos", "1", "--decoder-videos", "1", "--events", "4", "--embed-dim", "32",
        "--seeds", "2", "--kinds", "hard_cut,gradual", "--bootstrap", "20", "--train-long-videos", "1"]


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    try:
        main(["--out", str(out), *TINY])
    finally:
        torch.set_num_threads(threads)
    res = json.loads((out / "demo_results.json").read_text())
    for key in ("setup", "train", "pretrain", "params", "clips", "arms", "selective_decoding",
                "decode_reduction_at_equal_cider", "timings_s", "wall_s"):
        assert key in res, key
    assert set(res["arms"]) == {"random_x_encoder", "pretrained_x_encoder"}
    for arm in res["arms"].values():
        assert arm["n_clips"] == 20 and 0 <= arm["zero_shot_accuracy"] <= 1
        assert all(_finite(arm["t2v"][k]) for k in ("R@1", "R@5", "R@10"))
        assert arm["t2v"]["R@1"] <= arm["t2v"]["R@5"] <= arm["t2v"]["R@10"]
    assert res["arms"]["random_x_encoder"]["steps"] == 6 and res["train"]["step"] == 12
    assert res["pretrain"]["steps"] == 4
    assert all(_finite(h["loss"]) for h in res["train"]["history"])
    sd = res["selective_decoding"]
    assert set(sd["headline"]) == {"offline/mean", "online"} and sd["protocol"]["seeds"] == [0, 1]
    for entry in sd["headline"].values():  # mean over seeds, its CI, and every seed's value
        assert _finite(entry["value"]) and len(entry["per_seed"]) == 2 and entry["ci"][0] <= entry["ci"][1]
    assert set(sd["pooled"]) == set(sd["across_seeds"]) == set(sd["oracle_across_seeds"]) == {"hard_cut", "gradual"}
    assert all(_finite(v["value"]) and len(v["per_seed"]) == 2 for v in sd["oracle_headline"].values())
    for summary in sd["pooled"].values():
        assert set(summary["curves"]) == {"uniform/mean", "uniform/midpoint", "offline/mean", "offline/midpoint",
                                          "online"}
        assert all(_finite(c) for curve in summary["curves"].values() for c in curve["cider"])
        by_length = summary["quality_by_event_length"]["0.9"]["uniform/mean"]  # the baseline always reaches 90 %
        assert len(by_length["cider"]) == len(by_length["edges_s"]) + 1 and sum(by_length["n_events"]) > 0
    assert [r["seed"] for r in sd["per_seed"]] == [0, 1] and len(res["seeds"]) == 2
    quality = sd["per_seed"][0]["decoder_quality"]["hard_cut"]["final"]
    assert all(_finite(quality[k]) for k in ("text", "event_mean", "event_midpoint"))
    assert all(_finite(v) for v in res["decode_reduction_at_equal_cider"].values())
    assert (out / "seeds" / "1" / "pretrained_x" / "run" / "model" / "y_decoder" / "decoder.json").is_file()
    assert "fewer decodes than uniform at equal CIDEr" in (out / "summary.txt").read_text()
    for fig in ("losses.png", "cider_vs_rate.png", "timeline.png"):
        assert (out / fig).stat().st_size > 1000, fig
    report = (out / "report.md").read_text()
    assert "random_x_encoder" in report and "pretrained_x_encoder" in report
    assert "Oracle on the same test videos" in report and "oracle on the same videos" in (out / "summary.txt").read_text()
    assert "Decoder quality alone" in report and "latency" in report and "per hour" in report
    assert "quality by event length" in report
    # the demo model's frozen X-encoder weights were saved with it (no hub source for a tiny one)
    assert (out / "pretrained_x" / "run" / "model" / "config.json").is_file()



def test_bad_window_video_count_is_refused_before_any_work(capsys):
    with pytest.raises(SystemExit):
        main(["--train-long-videos", "-1"])
    assert "--train-long-videos must be between 0 and 1000" in capsys.readouterr().err


def test_decoder_replay_repeats_captions_only_when_there_are_too_few():
    """Stage 2 of the Y-decoder replays a third as many captions as it has predicted embeddings; with
    more training clips than 3 x the captions (--train-clips 8192) it must repeat them, not crash."""
    import numpy as np

    from vljepa.demo_selective import replay_indices

    few = replay_indices(np.random.default_rng(0), 1280, 2048 + 900)
    assert len(few) == 982 and len(set(few.tolist())) == 982  # each caption at most once
    many = replay_indices(np.random.default_rng(0), 1280, 8192 + 900)
    assert len(many) == 3030 and many.min() >= 0 and many.max() < 1280


@pytest.mark.parametrize("flag", ["--train-clips", "--steps"])
def test_training_size_flags_refuse_non_positive_values_before_any_work(flag, capsys):
    with pytest.raises(SystemExit):
        main([flag, "0"])
    assert f"argument {flag}: must be >= 1, got 0" in capsys.readouterr().err
