"""Multi-seed runner: statistics against scipy by hand, pairing by seed, the table, a real tiny sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from llm_jepa.multiseed import (
    Arm,
    compare,
    main,
    markdown_table,
    mean_std,
    paired_difference,
    paired_one_tailed,
    run_multiseed,
)


def test_mean_std_and_paired_test():
    assert mean_std([0.5, 0.7, 0.6]) == pytest.approx((0.6, 0.1))
    base, arm = [0.50, 0.55, 0.60, 0.52], [0.56, 0.58, 0.66, 0.55]
    res = paired_one_tailed(base, arm)
    d = np.subtract(arm, base)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert res["t"] == pytest.approx(t) and res["p_one_tailed"] == pytest.approx(sps.t.sf(t, len(d) - 1))
    assert res["p_one_tailed"] < 0.05
    assert paired_one_tailed(arm, base)["p_one_tailed"] > 0.95  # the other direction is not significant
    with pytest.raises(ValueError, match="same"):
        paired_one_tailed([0.1, 0.2], [0.3])


def test_paired_difference_ci_by_hand():
    base, arm = [0.50, 0.55, 0.60, 0.52, 0.58], [0.49, 0.57, 0.61, 0.50, 0.60]
    d = np.subtract(arm, base)
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    res = paired_difference(base, arm)
    assert res["mean_diff"] == pytest.approx(d.mean())
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert res["p_two_sided"] == pytest.approx(2 * sps.t.sf(abs(d.mean() / (d.std(ddof=1) / math.sqrt(5))), 4))
    assert res["ci_low"] < 0 < res["ci_high"] and res["p_two_sided"] > 0.5  # "matches": CI straddles 0
    with pytest.raises(ValueError, match=">= 2 seeds"):
        paired_difference([0.1], [0.2])


def test_compare_pairs_by_seed_not_by_position():
    scores = {"sft": {82: 0.5, 23: 0.6, 37: 0.7}, "jepa": {37: 0.71, 82: 0.52, 23: 0.63}}
    out = compare(scores, "sft")
    assert out["jepa"]["vs_baseline"]["mean_diff"] == pytest.approx(0.02)
    assert out["jepa"]["seeds"] == [23, 37, 82] and "vs_baseline" not in out["sft"]
    table = markdown_table(out, "accuracy", "sft", scale=100.0)  # fractions shown as percent
    assert "| jepa | 62.0 ± 9.5 | 63.0, 71.0, 52.0 | +2.0 |" in table and table.count("\n") == 4


def test_run_multiseed_with_a_fake_runner(tmp_path):
    calls = []

    def runner(train_overrides, eval_overrides, run_dir):
        calls.append((tuple(train_overrides), run_dir.name))
        seed = int(train_overrides[-1].split("=")[1])
        bonus = 0.05 + (seed % 7) / 1000 if "jepa.lam=1" in train_overrides else 0.0
        return {"metrics": {"accuracy": 0.4 + seed / 1000 + bonus}}

    stats = run_multiseed(None, [Arm("sft", ["jepa.lam=0"]), Arm("jepa", ["jepa.lam=1"])], [82, 23, 37], [],
                          tmp_path, runner=runner)
    assert len(calls) == 6 and calls[0] == (("jepa.lam=0", "train.seed=82"), "seed82")
    assert stats["jepa"]["vs_baseline"]["mean_diff"] == pytest.approx(0.053)  # 0.05 + (5+2+2)/3000
    saved = json.loads((tmp_path / "multiseed.json").read_text())
    assert saved["seeds"] == [82, 23, 37] and (tmp_path / "table.md").read_text().startswith("| arm |")
    with pytest.raises(KeyError, match="bleu"):
        run_multiseed(None, [Arm("a")], [1], [], tmp_path, metric="bleu", runner=runner)


def test_cli_real_tiny_sweep(tmp_path, capsys):
    train = ["data.limit=16", "train.max_steps=2", "train.batch_size=4", "train.grad_accum=1", "train.save_every=null"]
    rc = main(["--config", "recipes/llm_jepa/tiny_cpu.yaml", "--arm", "sft", "jepa.lam=0", *train,
               "--arm", "jepa", "jepa.lam=1", *train, "--seeds", "82", "23",
               "--eval", "task=synth", "--eval", "data=synth_test", "--eval", "limit=4",
               "--eval", "generation.max_new_tokens=6", "--out", str(tmp_path)])
    assert rc == 0 and "| jepa |" in capsys.readouterr().out
    for arm in ("sft", "jepa"):
        for seed in (82, 23):
            summary = json.loads((tmp_path / arm / f"seed{seed}" / "eval" / "summary.json").read_text())
            assert summary["metrics"]["n"] == 4 and summary["config"]["checkpoint"].endswith("final")
    cfg = (tmp_path / "jepa" / "seed23" / "train" / "config.yaml").read_text()
    assert "seed: 23" in cfg and "lam: 1.0" in cfg
