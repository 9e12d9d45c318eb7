"""Tests for eval.captioning (CIDEr, the bootstrap scorer), eval.selective_decoding (matching, curves,
isotonic fits, equal-quality rates, bootstrap, seeds) and vljepa.selective_eval (grids, sweep)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from eval.captioning import CorpusCider, cider_score, normalize_caption
from eval.selective_decoding import (
    CaptionCache,
    Corpus,
    Curve,
    ProtocolConfig,
    VideoStream,
    analyze,
    change_latency,
    combine_seeds,
    concat_curves,
    monotone_fit,
    nearest_decoded,
    quality_by_event_length,
    rate_to_reach,
    summarize,
)
from eval.selective_report import cost_table, event_length_table, latency_table, plot_analyses
from vljepa.segment import DecodePoint, TriggerConfig
from vljepa.selective_eval import (
    BASELINE,
    SELECTIVE,
    OracleConfig,
    SweepConfig,
    decoder_quality,
    measure,
    nearest_caption_decoder,
    oracle_stream,
    settings,
)

BANK = ["a red 3 moves left", "a blue 7 grows", "a green 1 fades out", "a white 5 spins around",
        "a yellow 2 moves up", "a purple 9 shrinks"]
WORDS = "a red blue green 3 7 1 moves left right up grows shrinks the digit is".split()


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


def _sentence(rng) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(2, 8)))


def test_cider_scores_a_set_at_once_and_rejects_single_items():
    refs = [["a red digit moves left"], ["a blue three appears"], ["the seven turns green"]]
    perfect, per = cider_score(refs, [r[0] for r in refs])
    assert perfect == pytest.approx(10.0) and per == pytest.approx([10.0] * 3)
    mean, per = cider_score(refs, ["a red digit moving left", "a blue three appears", "nothing here"])
    assert 0 < per[0] < 10 and per[2] == 0 and mean == pytest.approx(np.mean(per))
    with pytest.raises(ValueError, match="single item"):
        cider_score([["a b"]], ["a b"])
    assert normalize_caption("A Red, 3!  moves") == "a red 3 moves"


def test_corpus_cider_equals_pycocoevalcap_on_the_corpus_and_on_resampled_corpora():
    rng = np.random.default_rng(0)
    refs = [[_sentence(rng) for _ in range(rng.integers(1, 4))] for _ in range(30)]
    cands = [_sentence(rng) for _ in range(30)]
    scorer = CorpusCider(refs)
    _, per = cider_score(refs, cands)
    np.testing.assert_allclose(scorer.scores(list(enumerate(cands)))[0], per, rtol=1e-12)
    draws = [rng.integers(0, 30, 30) for _ in range(3)]  # bootstrap: items repeated, others missing
    weights = np.stack([np.bincount(d, minlength=30) for d in draws]).astype(float)
    scores = scorer.scores(list(enumerate(cands)), weights)  # (3, 30)
    for d, w, s in zip(draws, weights, scores):
        expected, _ = cider_score([refs[i] for i in d], [cands[i] for i in d])  # IDF of the resampled list
        assert (w * s).sum() / w.sum() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="weights"):
        scorer.scores([(0, "a")], np.ones((2, 3)))


def test_nearest_decoded_prefers_captions_inside_the_event():
    truth = [(0, 10, None), (10, 12, None), (12, 40, None)]
    assert nearest_decoded(truth, [9.0, 13.0, 30.0]) == [0, 0, 2]
    # inside-the-event ties go to the caption nearest the midpoint
    assert nearest_decoded([(0, 10, None)], [1.0, 4.5, 9.0]) == [1]


def test_caption_cache_decodes_each_distinct_embedding_once():
    seen = []
    cache = CaptionCache(lambda e: seen.append(len(e)) or [f"c{float(x[0]):.0f}" for x in e])
    embs = np.array([[1.0, 0], [2, 0], [1, 0], [3, 0]])
    assert cache(embs) == ["c1", "c2", "c1", "c3"]
    assert cache(embs[::-1]) == ["c3", "c1", "c2", "c1"]
    assert seen == [3] and cache.calls == 1 and cache.decoded == 3  # the second call decoded nothing


def test_monotone_fit_is_sklearns_isotonic_regression_on_log_rate():
    rng = np.random.default_rng(1)
    rates = np.repeat(np.geomspace(0.01, 2, 25), 2)  # ties, like equal rates of two settings
    quality = np.log(rates) + rng.normal(0, 1, len(rates))
    grid = np.linspace(np.log(0.005), np.log(3), 200)
    expected = IsotonicRegression(out_of_bounds="clip").fit(np.log(rates), quality).predict(grid)
    np.testing.assert_allclose(monotone_fit(rates, quality, grid), expected, atol=1e-12)
    batch = monotone_fit(rates, np.stack([quality, -quality]), grid)
    assert batch.shape == (2, 200) and np.allclose(batch[0], expected)
    assert np.all(np.diff(batch[1]) >= 0)


def test_rate_to_reach_interpolates_and_says_never():
    grid = np.log(np.array([0.1, 1.0, 10.0]))
    fit = np.array([1.0, 3.0, 5.0])
    assert rate_to_reach(grid, fit, 2.0) == pytest.approx(10 ** -0.5)
    assert rate_to_reach(grid, fit, 0.5) == pytest.approx(0.1)
    assert np.isnan(rate_to_reach(grid, fit, 5.5))


def _synthetic_curves(n_videos=8, events=10, seed=0):
    """Curves whose quality is known: at rate r a fraction min(1, r / r_full) of the events get their
    own caption, the rest a wrong one. Uniform needs r_full = 0.8 Hz, selective 0.2 Hz."""
    rng = np.random.default_rng(seed)
    refs = [[f"a red {v} moves left number {e}"] for v in range(n_videos) for e in range(events)]
    streams = [VideoStream(np.arange(100) * 1.0, np.zeros((100, 2)),
                           [(10 * e, 10 * e + 10, refs[v * events + e]) for e in range(events)]) for v in range(n_videos)]
    n_events = n_videos * events
    texts = [r[0] for r in refs] + ["zzz"]

    def curve(label, r_full):
        rates = np.geomspace(0.01, 2.0, 30)
        caps = []
        for r in rates:
            right = rng.permutation(n_events) < round(min(1.0, r / r_full) * n_events)
            caps.append(np.where(right, np.arange(n_events), n_events))
        return Curve(label, rates, rates * 100 * n_videos, 100.0 * n_videos, np.array(caps), texts,
                     np.full((30, n_videos), np.nan))

    curves = {"uniform/mean": curve("uniform/mean", 0.8), "uniform/midpoint": curve("uniform/midpoint", 1.2),
              "offline/mean": curve("offline/mean", 0.2), "online": curve("online", 1e9)}
    return Corpus.of(streams), curves


def test_analyze_recovers_a_known_decode_reduction_with_a_bootstrap_interval(tmp_path):
    corpus, curves = _synthetic_curves()
    cfg = ProtocolConfig(n_boot=200)
    a = analyze(corpus, curves, ["uniform/mean", "uniform/midpoint"], ["offline/mean", "online"], cfg)
    assert a.point["uniform:best_cider"] == pytest.approx(10.0)
    for level in (0.9, 0.95, 1.0):  # the better uniform pooling (0.8 Hz) against selective (0.2 Hz): 4x
        assert a.point[f"offline/mean@{level}:reduction"] == pytest.approx(4.0, rel=0.2)
        lo, hi = summarize(a, cfg)["metrics"][f"offline/mean@{level}:reduction"]["ci"]
        assert lo <= a.point[f"offline/mean@{level}:reduction"] <= hi
        assert np.isnan(a.point[f"online@{level}:hz"]) and a.point[f"online@{level}:reduction"] == 0.0
    assert a.point["offline/mean:area"] > 0 > a.point["online:area"]
    summary = summarize(a, cfg, seconds_per_decode=0.01)
    cost = summary["cost_per_hour"]
    assert cost["offline/mean"]["decoder_calls_per_hour"] == pytest.approx(3600 * a.point["offline/mean@0.95:hz"])
    assert cost["uniform"]["decoder_s_per_hour"] == pytest.approx(36 * a.point["uniform@0.95:hz"])
    assert set(summary["latency_by_level"]) == set(summary["cost_by_level"]) == {"0.9", "0.95", "1.0"}
    assert summary["cost_per_hour"] == summary["cost_by_level"]["0.95"]
    assert np.isnan(summary["cost_by_level"]["0.9"]["online"]["decoder_calls_per_hour"])
    table = cost_table(summary, [0.9, 0.95])
    assert len(table) == 2 + 2 * 3 and "| 90 % | online | n.r." in table[4]
    assert summary["latency"] == summary["latency_by_level"]["0.95"]
    assert summary["latency_by_level"]["0.9"]["online"]["hz"] is None  # never reached: no operating point
    rows = latency_table({"synthetic": summary}, ["uniform/mean", "online"], levels=[0.9, 1.0])
    assert len(rows) == 2 + 4 and "| synthetic | 90 % | online | n.r." in rows[3]
    plot_analyses({"synthetic": a}, str(tmp_path / "curves.png"))
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_seeds_combine_as_geometric_means_with_a_two_level_interval():
    cfg = ProtocolConfig(n_boot=100)
    analyses = []
    for seed in range(3):
        corpus, curves = _synthetic_curves(seed=seed)
        analyses.append(analyze(corpus, curves, ["uniform/mean", "uniform/midpoint"], ["offline/mean"], cfg))
    out = combine_seeds(analyses, cfg)
    entry = out["offline/mean@0.95:reduction"]
    values = [a.point["offline/mean@0.95:reduction"] for a in analyses]
    assert entry["per_seed"] == pytest.approx(values)
    assert entry["value"] == pytest.approx(np.exp(np.mean(np.log(values))))
    assert entry["ci"][0] <= entry["value"] <= entry["ci"][1]
    assert out["uniform:best_cider"]["value"] == pytest.approx(10.0)


def test_concat_curves_keeps_common_settings_and_remaps_captions():
    a = Curve("x", np.array([1.0, 0.5]), np.array([10.0, 5.0]), 10.0, np.array([[0, 1], [1, 1]]), ["p", "q"],
              np.array([[1.0], [2.0]]))
    b = Curve("x", np.array([0.5, 0.25]), np.array([4.0, 2.0]), 8.0, np.array([[0], [0]]), ["q"], np.array([[3.0], [4.0]]))
    c = concat_curves([a, b])
    assert c.params.tolist() == [0.5] and c.n_decodes.tolist() == [9.0] and c.duration_s == 18.0
    assert [c.texts[i] for i in c.captions[0]] == ["q", "q", "q"] and c.latency_s.tolist() == [[2.0, 3.0]]


def test_change_latency_counts_from_the_change_to_the_first_caption_inside_the_new_event():
    truth = [(0, 10, None), (10, 20, None), (20, 30, None)]
    pts = [DecodePoint(2, np.zeros(1), 0, 0, 3.0), DecodePoint(12, np.zeros(1), 0, 0, 13.0),
           DecodePoint(11, np.zeros(1), 0, 0, 14.0)]
    lat = change_latency(truth, pts, lag_s=1.0)
    assert lat[0] == pytest.approx(4.0) and np.isnan(lat[1])  # 13 + 1 - 10; nothing inside the third


def test_bootstrap_resamples_videos_within_each_stratum():
    streams = [VideoStream(np.arange(4.0), np.zeros((4, 1)), [(0, 2, ["a"]), (2, 4, ["b"])]) for _ in range(5)]
    corpus = Corpus.of(streams, strata=[0, 0, 0, 1, 1])
    w = corpus.bootstrap_weights(50, np.random.default_rng(0))  # (B, E) event counts
    per_video = w[:, ::2]  # the two events of a video always share its count
    np.testing.assert_array_equal(per_video, w[:, 1::2])
    assert np.all(per_video[:, :3].sum(axis=1) == 3) and np.all(per_video[:, 3:].sum(axis=1) == 2)


def test_grids_are_fine_every_stride_and_every_segment_count(centers):
    streams = [make_stream(s, centers, n_events=15) for s in (3, 4)]
    cfg = SweepConfig()
    uniform = settings(streams, "uniform/mean", cfg)
    assert [round(2.0 / p) for p, _ in uniform[:40]] == list(range(1, 41))  # every stride up to 40 steps
    offline = [p for p, _ in settings(streams, "offline/mean", cfg)]
    assert len(offline) > 60 and min(offline) < 0.01 and max(offline) == pytest.approx(2.0)


def test_sweep_decodes_only_matched_points_and_selective_beats_uniform(centers):
    streams = [make_stream(s, centers, n_events=15) for s in (3, 4, 5)]
    fake = CountingDecoder(centers)
    cache = CaptionCache(fake)
    curves = measure(streams, cache, TriggerConfig(settle_tol=0.2), SweepConfig(thresholds=(0.01, 1.0, 12)))
    n_events = sum(len(s.truth) for s in streams)
    assert fake.embeddings_seen == cache.decoded <= sum(len(c.params) for c in curves.values()) * n_events
    assert curves["uniform/mean"].n_decodes[0] == sum(len(s.times) for s in streams)  # stride 1: every window
    a = analyze(Corpus.of(streams), curves, BASELINE, SELECTIVE, ProtocolConfig(n_boot=50))
    assert a.point["uniform:best_cider"] == pytest.approx(10.0)  # perfect decoder, dense decoding
    assert a.point["offline/mean@0.95:reduction"] > 1.5 and a.point["offline/mean:area"] > 0


def test_decoder_quality_alone_scores_text_and_oracle_segments(centers):
    streams = [make_stream(s, centers) for s in (1, 2)]
    fake = CountingDecoder(centers)
    q = decoder_quality(streams, fake, text_embed=lambda texts: centers[[BANK.index(t) for t in texts]], lag_s=0.5)
    assert q["text"] == pytest.approx(10.0) and q["event_mean"] == pytest.approx(10.0)
    assert q["n_events"] == 24 and 0 < q["event_midpoint"] <= 10.0


def test_protocol_settings_are_checked():
    with pytest.raises(ValueError, match="headline_level"):
        ProtocolConfig(levels=(0.9,), headline_level=0.95)
    with pytest.raises(ValueError, match="thresholds"):
        SweepConfig(thresholds=(1.0, 0.1, 5))


def test_a_curve_whose_settings_share_one_rate_still_gets_a_fit():
    corpus, curves = _synthetic_curves()
    one = curves["offline/mean"]
    curves["offline/mean"] = Curve(one.label, one.params[12:13], one.n_decodes[12:13], one.duration_s,
                                   one.captions[12:13], one.texts, one.latency_s[12:13])
    a = analyze(corpus, curves, ["uniform/mean", "uniform/midpoint"], ["offline/mean"], ProtocolConfig(n_boot=5))
    assert np.isfinite(a.point["offline/mean:best_cider"])
    with pytest.raises(ValueError, match="share no setting"):
        concat_curves([one, Curve(one.label, np.array([123.0]), np.ones(1), 1.0, one.captions[:1], one.texts,
                                  one.latency_s[:1])])


@pytest.mark.parametrize("kind", ["hard_cut", "gradual"])
def test_oracle_stream_is_the_true_caption_inside_events_and_a_blend_across_fades(kind):
    truth = [(0.0, 6.0, "a red 3 moves left"), (6.0, 10.0, "a blue 7 grows"), (10.0, 15.0, "a green 1 appears")]
    bank = [c for _, _, c in truth] + ["a white 0 shrinks"]
    emb = np.eye(4, 8)  # orthonormal caption embeddings
    stream = oracle_stream(truth, dict(zip(bank, emb)), kind, np.random.default_rng(0), OracleConfig())
    assert np.allclose(np.diff(stream.times), 0.5) and stream.times[0] == 1.0  # 2-s windows every 0.5 s
    decode = nearest_caption_decoder(bank, emb)
    for t, e, caption in zip(stream.times, stream.embeddings, decode(stream.embeddings)):
        event = next(i for i, (s, end, _) in enumerate(truth) if s <= t < end)
        if all(t - 1 >= s or t + 1 <= s for s, _, _ in truth[1:]) and (kind == "hard_cut" or
                                                                         all(abs(t - s) >= 2 for s, _, _ in truth[1:])):
            assert np.allclose(e, emb[event]) and caption == truth[event][2]  # wholly inside: the caption itself
    at_fade = stream.embeddings[int(np.argmin(np.abs(stream.times - 6.0)))]  # centred on the first boundary
    assert at_fade[0] > 0.3 and at_fade[1] > 0.3 and np.isclose(np.linalg.norm(at_fade), 1)
    noisy = oracle_stream(truth, dict(zip(bank, emb)), kind, np.random.default_rng(0), OracleConfig(noise=0.5))
    assert 0.2 < np.linalg.norm(noisy.embeddings - stream.embeddings, axis=1).mean() < 0.8


def test_oracle_stream_and_nearest_caption_decoder_name_bad_input():
    emb = {"a red 3 moves left": np.ones(4)}
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="no embedding for 1 caption"):
        oracle_stream([(0.0, 5.0, "a blue 7 grows")], emb, "hard_cut", rng)
    with pytest.raises(ValueError, match="at least one"):
        oracle_stream([], emb, "hard_cut", rng)
    with pytest.raises(ValueError, match="shorter than one"):
        oracle_stream([(0.0, 1.0, "a red 3 moves left")], emb, "hard_cut", rng)
    with pytest.raises(ValueError, match="one embedding row per caption"):
        nearest_caption_decoder(["a red 3 moves left", "a blue 7 grows"], np.ones((1, 4)))


def test_quality_by_event_length_splits_the_corpus_score_by_event_length(centers):
    """Events of 1-30 s; a caption that is right on events of 4 s and longer and wrong below: the bins
    below 4 s score 0, the others the perfect 10, and the per-bin means weighted by their event counts
    give back the corpus CIDEr-D. A rate never reached gives None; the summary and the table carry it."""
    streams = [make_stream(s, centers, n_events=15) for s in range(4)]
    corpus = Corpus.of(streams)
    assert corpus.event_s == pytest.approx([e - s for st in streams for s, e, _ in st.truth])
    wrong = {r[0]: BANK[(BANK.index(r[0]) + 1) % len(BANK)] for r in corpus.refs}
    caps = [r[0] if d >= 4 else wrong[r[0]] for r, d in zip(corpus.refs, corpus.event_s)]
    texts = sorted(set(caps))
    curve = Curve("selective", np.array([0.5]), np.array([12.0]), corpus.duration_s,
                  np.array([[texts.index(c) for c in caps]]), texts, np.zeros((1, 0)))
    q = quality_by_event_length(corpus, curve, 0.01, (2.0, 4.0, 8.0))
    n = np.array(q["n_events"])
    assert q["hz"] == pytest.approx(12.0 / corpus.duration_s) and n.sum() == len(caps) and n.min() > 0
    assert q["cider"][0] == q["cider"][1] == 0.0 and q["cider"][2] == q["cider"][3] == pytest.approx(10.0)
    total, _ = cider_score(corpus.refs, caps)
    assert np.dot(n, q["cider"]) / n.sum() == pytest.approx(total)
    never = quality_by_event_length(corpus, curve, float("nan"), (2.0, 4.0, 8.0))
    assert never["hz"] is None and never["cider"] == [None] * 4 and never["n_events"] == q["n_events"]
    with pytest.raises(ValueError, match="event_s"):
        quality_by_event_length(Corpus(corpus.refs, corpus.video, corpus.duration_s), curve, 0.1, (2.0,))
    with pytest.raises(ValueError, match="event_bins_s"):
        ProtocolConfig(event_bins_s=(3.0, 2.0))
    cfg = ProtocolConfig(n_boot=20, event_bins_s=(2.0, 4.0, 8.0))
    summary = summarize(measure_and_analyze(streams, centers, cfg), cfg)
    assert set(summary["quality_by_event_length"]) == {"0.9", "0.95", "1.0"}
    table = event_length_table({"toy": summary}, [*BASELINE, "online"], 0.9)
    assert table[0].startswith("| kind | strategy | decodes/s | < 2 s | 2-4 s | 4-8 s | >= 8 s |")
    assert table[2].startswith("| toy | events | |") and len(table) == 2 + 1 + 3


def measure_and_analyze(streams, centers, cfg: ProtocolConfig):
    """The protocol end to end on toy streams with the perfect nearest-caption decoder."""
    curves = measure(streams, CaptionCache(CountingDecoder(centers)), TriggerConfig(settle_tol=0.2),
                     SweepConfig(thresholds=(0.01, 1.0, 12)))
    return analyze(Corpus.of(streams), curves, BASELINE, SELECTIVE, cfg)
