"""Tests for eval.captioning (CIDEr), eval.selective_decoding (matching, decode reduction) and the sweep."""

from __future__ import annotations

import numpy as np
import pytest

from eval.captioning import cider_score, normalize_caption
from eval.selective_decoding import (
    Strategy,
    VideoStream,
    decode_reduction,
    headline_reduction,
    nearest_decoded,
    plot_sweep,
    uniform_rate_for,
)
from vljepa.selective_eval import sweep

BANK = ["a red 3 moves left", "a blue 7 grows", "a green 1 fades out", "a white 5 spins around",
        "a yellow 2 moves up", "a purple 9 shrinks"]


class CountingDecoder:
    """Nearest caption of BANK to each embedding (a perfect decoder), counting every embedding seen."""

    def __init__(self, centers: np.ndarray):
        self.centers, self.calls, self.embeddings_seen = centers, 0, 0

    def __call__(self, embs: np.ndarray) -> list[str]:
        self.calls += 1
        self.embeddings_seen += len(embs)
        return [BANK[i] for i in (embs @ self.centers.T).argmax(axis=1)]


def make_stream(seed: int, centers: np.ndarray, n_events: int = 12, hz: float = 2.0, noise: float = 0.3):
    """Events of log-uniform duration (1-30 s), each holding its caption's embedding plus noise."""
    rng = np.random.default_rng(seed)
    truth, embs, t = [], [], 0.0
    prev = -1
    for _ in range(n_events):
        k = int(rng.choice([i for i in range(len(BANK)) if i != prev]))
        prev = k
        n = max(1, int(round(np.exp(rng.uniform(0, np.log(30))) * hz)))
        truth.append((t, t + n / hz, [BANK[k]]))
        embs.append(centers[k] + noise * rng.normal(size=(n, centers.shape[1])) / np.sqrt(centers.shape[1]))
        t += n / hz
    embs = np.concatenate(embs)
    return VideoStream(times=np.arange(len(embs)) / hz, embeddings=embs, truth=truth)


@pytest.fixture(scope="module")
def centers():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(len(BANK), 32))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def test_cider_scores_a_set_at_once_and_rejects_single_items():
    refs = [["a red digit moves left"], ["a blue three appears"], ["the seven turns green"]]
    perfect, per = cider_score(refs, [r[0] for r in refs])
    assert perfect == pytest.approx(10.0) and per == pytest.approx([10.0] * 3)
    mean, per = cider_score(refs, ["a red digit moving left", "a blue three appears", "nothing here"])
    assert 0 < per[0] < 10 and per[2] == 0 and mean == pytest.approx(np.mean(per))
    with pytest.raises(ValueError, match="single item"):
        cider_score([["a b"]], ["a b"])
    assert normalize_caption("A Red, 3!  moves") == "a red 3 moves"


def test_nearest_decoded_prefers_captions_inside_the_event():
    truth = [(0, 10, None), (10, 12, None), (12, 40, None)]
    assert nearest_decoded(truth, [9.0, 13.0, 30.0]) == [0, 0, 2]
    # inside-the-event ties go to the caption nearest the midpoint
    assert nearest_decoded([(0, 10, None)], [1.0, 4.5, 9.0]) == [1]


def test_counting_decoder_is_called_exactly_as_often_as_reported(centers):
    streams = [make_stream(s, centers) for s in (1, 2)]
    cal = [make_stream(9, centers)]
    fake = CountingDecoder(centers)
    rows = sweep(streams, fake, rates=[1.0, 0.2, 0.05], calibration=cal)
    assert len(rows) == 9
    assert fake.embeddings_seen == sum(r["n_decodes"] for r in rows)
    assert fake.calls == len(rows) * len(streams)  # one batched call per video per row
    duration = sum(s.duration for s in streams)
    for r in rows:
        assert r["decodes_per_s"] == pytest.approx(r["n_decodes"] / duration)
        assert r["n_decodes"] <= len(streams) * (1 + r["target_hz"] * duration)  # budget respected


def test_selective_decoding_beats_uniform_at_low_rates(centers, tmp_path):
    streams = [make_stream(s, centers, n_events=15) for s in (3, 4, 5)]
    cal = [make_stream(s, centers, n_events=15) for s in (10, 11)]
    fake = CountingDecoder(centers)
    rows = sweep(streams, fake, rates=[2.0, 0.5, 0.1, 0.05, 0.02], calibration=cal)
    by = {(r["strategy"], r["target_hz"]): r for r in rows}
    assert by[("uniform", 2.0)]["cider"] == pytest.approx(10.0)  # perfect decoder, dense decoding
    for hz in (0.1, 0.05):
        assert by[("offline", hz)]["cider"] > by[("uniform", hz)]["cider"]
    table = decode_reduction(rows, Strategy.OFFLINE.value)
    head = headline_reduction(table, at_hz=0.1)
    assert head["reduction"] > 1.5
    plot_sweep(rows, str(tmp_path / "sweep.png"))
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_uniform_rate_for_interpolates_in_log_rate():
    uniform = [{"decodes_per_s": 0.1, "cider": 2.0}, {"decodes_per_s": 1.0, "cider": 6.0},
               {"decodes_per_s": 0.01, "cider": 1.0}]
    rate, bound = uniform_rate_for(4.0, uniform)
    assert bound == "exact" and rate == pytest.approx(10 ** -0.5)
    assert uniform_rate_for(9.0, uniform) == (1.0, "lower")
    assert uniform_rate_for(0.5, uniform) == (0.01, "upper")


def test_online_sweep_requires_separate_calibration(centers):
    with pytest.raises(ValueError, match="calibration"):
        sweep([make_stream(1, centers)], CountingDecoder(centers), [0.5], strategies=[Strategy.ONLINE])
