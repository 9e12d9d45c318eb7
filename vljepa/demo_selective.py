"""The demo's selective-decoding part (`python -m vljepa.demo`): long videos, the Y-decoder fitted
to the trained model's stream, the protocol per stream kind, and the results over seeds.

Data flow, per seed (one trained model):
  synthetic long videos of every `StreamKind` (test, calibration and decoder-training videos,
  disjoint seeds) -> sliding-window predicted-embedding streams (`vljepa.selective_eval`)
  -> `fit_decoder`: Y-decoder on the Y-encoder embeddings of every caption of the synthetic
     world, then on predicted embeddings (training clips, and windows of the decoder-training
     videos labelled with their dominant event) with noise, mixtures and text replay
  -> per kind: `measure` (uniform / offline Ward / online trigger curves; trigger calibrated on
     the calibration videos) -> `eval.selective_decoding.analyze` (isotonic fits, equal-quality
     rates, bootstrap over videos) ; the same on the `Oracle` stream of the same videos (a perfect
     predictor and decoder: the bound) ; decoder quality alone ; single-decode wall time
then over seeds: `pool` (all seeds' videos as one corpus, bootstrap stratified by seed) and
`eval.selective_decoding.combine_seeds` (geometric mean over seeds, two-level bootstrap CI).

    python -m vljepa.demo --out demo_out/vljepa --seeds 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from eval.selective_decoding import (
    Analysis,
    CaptionCache,
    Corpus,
    ProtocolConfig,
    VideoStream,
    analyze,
    combine_seeds,
    concat_curves,
    summarize,
)
from eval.selective_report import (
    cost_table,
    event_length_table,
    fmt,
    latency_table,
    rates_table,
    reduction_table,
    with_ci,
)
from jepa_common.config import to_dict
from vljepa.decoder import DecoderTrainConfig, YDecoder, train_decoder
from vljepa.segment import TriggerConfig
from vljepa.selective_eval import (
    BASELINE,
    OFFLINE_MEAN,
    ONLINE,
    SELECTIVE,
    OracleConfig,
    SweepConfig,
    calibrate_trigger,
    decoder_quality,
    evaluate,
    long_video_streams,
    nearest_caption_decoder,
    oracle_stream,
    select,
    window_targets,
)
from vljepa.stream import StreamConfig
from vljepa.synthetic import QUERIES, StreamKind, all_captions, parse_caption
from vljepa.tasks import text_embeddings, video_embeddings

QUERY = QUERIES[0]
HEADLINE_KIND = StreamKind.HARD_CUT.value
HEADLINE = ("offline/mean", "online")  # the paper's offline selective decoding, and the causal trigger


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _kinds(text: str) -> str:
    """Comma-separated `StreamKind` values, checked at parse time rather than after training."""
    known = [k.value for k in StreamKind]
    bad = [k for k in text.split(",") if k not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown stream kind(s) {bad}; choose from {known}")
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The selective-decoding options of `python -m vljepa.demo` (counts checked at parse time)."""
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds of data and training (seed, seed+1, ...)")
    p.add_argument("--kinds", type=_kinds, default=",".join(k.value for k in StreamKind),
                   help="stream kinds of the long videos, comma separated")
    p.add_argument("--long-videos", type=positive_int, default=8, help="test long videos per kind and seed")
    p.add_argument("--calib-videos", type=positive_int, default=1, help="calibration long videos per kind and seed")
    p.add_argument("--decoder-videos", type=positive_int, default=1,
                   help="long videos per kind and seed whose windows train the Y-decoder")
    p.add_argument("--events", type=positive_int, default=15, help="events per long video")
    p.add_argument("--decoder-steps", type=int, default=300,
                   help="Y-decoder steps on caption embeddings; half as many more on predicted ones")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples of the videos")
    p.add_argument("--headline-level", type=float, default=0.95,
                   help="equal quality = this fraction of the best uniform CIDEr (also reported: 0.9, 0.95, 1.0)")


def protocol(args: argparse.Namespace) -> ProtocolConfig:
    levels = tuple(sorted({0.9, 0.95, 1.0, args.headline_level}))
    return ProtocolConfig(levels=levels, headline_level=args.headline_level, n_boot=args.bootstrap, seed=args.seed)


def _video_seeds(args: argparse.Namespace, kind_index: int, role: int, n: int) -> list[int]:
    """Disjoint video seeds per (training seed, kind, role): role 0 test, 1 calibration, 2 decoder."""
    return [1_000_000 + 10_000 * args.seed + 1000 * role + 100 * kind_index + i for i in range(n)]


def seed_streams(model, args: argparse.Namespace) -> dict[str, dict[str, list[VideoStream]]]:
    """{"test" | "calib" | "decoder": {kind: streams}} for one trained model."""
    cfg = StreamConfig(window_s=2.0, stride_s=0.5, frames_per_window=args.frames, query=QUERY, batch_size=32)
    kinds = [StreamKind(k).value for k in args.kinds.split(",")]
    counts = {"test": args.long_videos, "calib": args.calib_videos, "decoder": args.decoder_videos}
    return {role: {k: long_video_streams(model, _video_seeds(args, i, r, counts[role]), k, cfg, args.events)
                   for i, k in enumerate(kinds)} for r, role in enumerate(counts)}


def fit_decoder(model, clips: list[dict], windows: tuple[np.ndarray, list[str]], args: argparse.Namespace,
                pixels: torch.Tensor) -> tuple[YDecoder, YDecoder, list[float]]:
    """Stage 1: Y-encoder embeddings of every caption of the synthetic world (text only, with noise
    and mixtures). Stage 2: predicted embeddings of the training clips and of the decoder-training
    windows (dominant caption; event means), with a third as much stage-1 text replayed so the
    decoder keeps the language. Returns (final decoder, stage-1 copy, losses)."""
    texts = all_captions()
    dec = YDecoder.build(embed_dim=args.embed_dim, corpus=texts, hidden_size=128, num_layers=2, seed=args.seed)
    y = text_embeddings(model, texts)  # (C, D)
    losses = train_decoder(dec, y, texts, DecoderTrainConfig(steps=args.decoder_steps, batch_size=64, lr=3e-3,
                                                             noise_std=0.02, mix_prob=0.3, seed=args.seed))
    stage1 = copy.deepcopy(dec)
    pred = video_embeddings(model, pixels, query=QUERY)  # (N, D)
    rng = np.random.default_rng(args.seed)
    replay = replay_indices(rng, len(texts), len(pred) + len(windows[1]))
    emb = torch.cat([pred, torch.as_tensor(windows[0], dtype=torch.float32), y[replay]])
    labels = [c["caption"] for c in clips] + windows[1] + [texts[i] for i in replay]
    losses += train_decoder(dec, emb, labels, DecoderTrainConfig(steps=args.decoder_steps // 2, batch_size=64, lr=1e-3,
                                                                 noise_std=0.02, mix_prob=0.3, seed=args.seed + 1))
    return dec, stage1, losses


def replay_indices(rng: np.random.Generator, n_texts: int, n_items: int) -> np.ndarray:
    """Stage-1 captions replayed in stage 2: a third as many as the `n_items` predicted embeddings, each
    caption at most once while there are enough of them (repeats once `n_items` // 3 exceeds `n_texts`,
    e.g. with --train-clips 8192 and 1280 captions)."""
    n = n_items // 3
    return rng.choice(n_texts, size=n, replace=n > n_texts)


def _decode_fn(dec: YDecoder):
    return lambda embs: dec.generate(torch.as_tensor(np.asarray(embs), dtype=torch.float32))


def seconds_per_decode(dec: YDecoder, embs: np.ndarray, n: int = 20) -> float:
    """Median wall time of one decode of one embedding (batch 1, as a live stream decodes)."""
    fn, times = _decode_fn(dec), []
    for e in embs[:n]:
        t0 = time.perf_counter()
        fn(e[None])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def evaluate_seed(model, dec: YDecoder, stage1: YDecoder, streams: dict, args: argparse.Namespace) -> dict:
    """Every kind of one seed: curves, analysis (kept for pooling), summary, decoder quality alone."""
    proto, sweep = protocol(args), SweepConfig()
    calib = [s for v in streams["calib"].values() for s in v]
    trigger = calibrate_trigger(calib, lag_s=sweep.lag_s)  # never on the test videos
    cache, bank, texts_seen = CaptionCache(_decode_fn(dec)), all_captions(), {}

    def text(xs: list[str]) -> np.ndarray:  # each list embedded once: the bank per seed, references per kind
        key = tuple(xs)
        if key not in texts_seen:
            texts_seen[key] = text_embeddings(model, xs).numpy()
        return texts_seen[key]

    per_kind, quality = {}, {}
    oracle = Oracle(bank, text(bank), args.seed)
    for kind, test in streams["test"].items():
        t0 = time.time()
        per_kind[kind] = {"streams": test, "analysis": evaluate(test, cache, trigger, sweep, proto),
                          "oracle": oracle.analyze(test, streams["calib"][kind], proto, sweep),
                          "seconds": time.time() - t0}
        quality[kind] = {"final": decoder_quality(test, cache, text, bank=bank),
                         "stage1": decoder_quality(test, _decode_fn(stage1), text)}
        truth = [r[0] for s in test for _, _, r in s.truth]
        for stage in quality[kind].values():
            stage["attribute_accuracy"] = attribute_accuracy(stage.pop("event_mean_captions"), truth)
    spd = seconds_per_decode(dec, np.concatenate([s.embeddings for s in streams["test"][next(iter(streams["test"]))]]))
    summaries = {k: summarize(v["analysis"], proto, spd) for k, v in per_kind.items()}
    return {"seed": args.seed, "per_kind": per_kind, "summaries": summaries, "decoder_quality": quality,
            "seconds_per_decode": spd, "settle_tol": trigger.settle_tol,
            "decoder_work": {"calls": cache.calls, "decoded": cache.decoded, "seconds": cache.seconds}}


class Oracle:
    """The protocol on a perfect model's stream over the *same* test videos (`vljepa.selective_eval.oracle_stream`,
    noise 0, nearest-caption decoder): how many fewer decodes *where to decode* alone can give on them,
    the bound for the trained model's ratios."""

    def __init__(self, bank: list[str], bank_emb: np.ndarray, seed: int, cfg: OracleConfig | None = None):
        self.emb, self.cfg = dict(zip(bank, bank_emb)), cfg or OracleConfig()
        self.decode, self.rng = CaptionCache(nearest_caption_decoder(bank, bank_emb)), np.random.default_rng(seed)

    def streams(self, streams: list[VideoStream]) -> list[VideoStream]:
        return [oracle_stream([(a, b, refs[0]) for a, b, refs in s.truth], self.emb, s.kind, self.rng, self.cfg)
                for s in streams]

    def analyze(self, test: list[VideoStream], calib: list[VideoStream], proto: ProtocolConfig,
                sweep: SweepConfig) -> Analysis:
        test = self.streams(test)
        trigger = calibrate_trigger(self.streams(calib), lag_s=sweep.lag_s)
        return evaluate(test, self.decode, trigger, sweep, proto)


def attribute_accuracy(decoded: list[str], truth: list[str]) -> dict[str, float]:
    """Share of events whose decoded caption names the right colour, digit and action."""
    got = [(parse_caption(d), parse_caption(t)) for d, t in zip(decoded, truth)]
    return {attr: float(np.mean([d is not None and getattr(d, attr) == getattr(t, attr) for d, t in got]))
            for attr in ("colour", "digit", "action")}


def pool(seed_results: list[dict], kind: str, proto: ProtocolConfig) -> Analysis:
    """One corpus of every seed's test videos of `kind` (each seed with its own model and decoder);
    videos are resampled within their seed."""
    streams = [s for r in seed_results for s in r["per_kind"][kind]["streams"]]
    strata = [i for i, r in enumerate(seed_results) for _ in r["per_kind"][kind]["streams"]]
    labels = seed_results[0]["per_kind"][kind]["analysis"].curves
    curves = {lab: concat_curves([r["per_kind"][kind]["analysis"].curves[lab] for r in seed_results]) for lab in labels}
    return analyze(Corpus.of(streams, strata), curves, BASELINE, SELECTIVE, proto)


def aggregate(seed_results: list[dict], args: argparse.Namespace) -> tuple[dict, dict[str, Analysis]]:
    """JSON-ready results over seeds, and the pooled analyses (for the figure)."""
    proto = protocol(args)
    kinds = list(seed_results[0]["per_kind"])
    pooled = {k: pool(seed_results, k, proto) for k in kinds}
    spd = statistics.median(r["seconds_per_decode"] for r in seed_results)
    across = {k: combine_seeds([r["per_kind"][k]["analysis"] for r in seed_results], proto) for k in kinds}
    oracle = {k: combine_seeds([r["per_kind"][k]["oracle"] for r in seed_results], proto) for k in kinds}
    level = proto.headline_level
    headline = {s: across[HEADLINE_KIND][f"{s}@{level}:reduction"] for s in HEADLINE if HEADLINE_KIND in across}
    out = {
        "protocol": {"levels": list(proto.levels), "headline_level": level, "n_boot": proto.n_boot, "ci": proto.ci,
                     "kinds": kinds, "headline_kind": HEADLINE_KIND, "sweep": vars(SweepConfig()),
                     "seeds": [r["seed"] for r in seed_results], "test_videos_per_kind": args.long_videos,
                     "events_per_video": args.events,
                     "trigger": to_dict(TriggerConfig())},
        "headline": headline,
        "across_seeds": across,
        "oracle_across_seeds": oracle,
        "oracle_headline": {s: oracle[HEADLINE_KIND][f"{s}@{level}:reduction"] for s in HEADLINE if HEADLINE_KIND in oracle},
        "pooled": {k: summarize(a, proto, spd) for k, a in pooled.items()},
        "per_seed": [{"seed": r["seed"], "kinds": r["summaries"], "decoder_quality": r["decoder_quality"],
                      "seconds_per_decode": r["seconds_per_decode"], "settle_tol": r["settle_tol"],
                      "decoder_work": r["decoder_work"],
                      "hours_of_video": {k: v["analysis"].curves[BASELINE[0]].duration_s / 3600
                                         for k, v in r["per_kind"].items()}} for r in seed_results],
    }
    return out, pooled


def decoder_training_windows(streams: dict) -> tuple[np.ndarray, list[str]]:
    return window_targets([s for v in streams["decoder"].values() for s in v])


def headline_text(sd: dict) -> list[str]:
    """One line per headline strategy: "N x fewer decodes at equal quality [CI]" over seeds."""
    p = sd["protocol"]
    lines = []
    for s, m in sd["headline"].items():
        lines.append(f"{s}: **{with_ci(m)}x** fewer decodes than uniform at equal CIDEr ({round(100 * p['headline_level'])} % "
                     f"of the best uniform CIDEr; {p['headline_kind']} streams; geometric mean over seeds "
                     f"{p['seeds']}, per seed {', '.join(fmt(v) for v in m['per_seed'])}; 95 % CI: seeds and videos resampled)")
    return lines


def _quality_rows(sd: dict) -> list[str]:
    rows = ["| seed | kind | decoder | exact caption (ceiling) | GT caption embedding | event-mean predicted | "
            "event-midpoint predicted | nearest caption to event mean | colour / digit / action right |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sd["per_seed"]:
        for kind, q in r["decoder_quality"].items():
            for stage in ("stage1", "final"):
                d, acc = q[stage], q[stage]["attribute_accuracy"]
                rows.append(f"| {r['seed']} | {kind} | {stage} | {fmt(d['ceiling'], 3)} | {fmt(d['text'], 3)} | "
                            f"{fmt(d['event_mean'], 3)} | "
                            f"{fmt(d['event_midpoint'], 3)} | {fmt(d.get('retrieval_event_mean'), 3)} | "
                            f"{acc['colour']:.2f} / {acc['digit']:.2f} / {acc['action']:.2f} |")
    return rows


def report_lines(sd: dict) -> list[str]:
    """The selective-decoding section of report.md."""
    p = sd["protocol"]
    level, kinds, head = p["headline_level"], p["kinds"], sd["pooled"].get(HEADLINE_KIND)
    per_seed = {str(r["seed"]): r["kinds"][HEADLINE_KIND]["metrics"] for r in sd["per_seed"] if HEADLINE_KIND in r["kinds"]}
    lines = ["## Selective decoding", "", *[f"- {x}" for x in headline_text(sd)], f"- {target_line(sd)}", "",
             f"Protocol: per seed {p['test_videos_per_kind']} test videos per stream kind ({p['events_per_video']} events "
             "each); uniform at every stride, offline Ward at every segment count in range, online as a threshold sweep; "
             "isotonic fit of CIDEr-D on log rate; the baseline is the better of uniform mean/midpoint pooling at each "
             "rate; n.r. = never reached; ratio 0 = never reached. Trigger settle tolerance calibrated on separate "
             f"videos; once a change has settled the trigger decodes the mean of {p['trigger']['pool_steps']} steps "
             "of the new segment (`TriggerConfig.pool_steps`).", "", "![CIDEr vs rate](cider_vs_rate.png)", "",
             "### Over seeds (geometric mean of ratios, 95 % CI from seeds and videos resampled)", "",
             *reduction_table({k: sd["across_seeds"][k] for k in kinds}, SELECTIVE, p["levels"]), "",
             "### Oracle on the same test videos (the bound: what *where to decode* alone can give)", "",
             "A perfect predictor and decoder: each window's embedding is the mean over its frames of the Y-encoder "
             "embedding of the true caption (gradual kinds blended over the transition), decoded by the nearest "
             "caption; same protocol, same videos, same seeds. A trained model can beat it only where uniform "
             "decoding of its noisy windows loses more than selective decoding does.", "",
             *reduction_table({k: sd["oracle_across_seeds"][k] for k in kinds}, SELECTIVE, p["levels"]), "",
             f"### Per seed ({HEADLINE_KIND}; 95 % CI over videos)", "",
             *reduction_table(per_seed, SELECTIVE, p["levels"], first="seed"), "",
             "### Pooled (all seeds' videos as one corpus)", "",
             *reduction_table({k: v["metrics"] for k, v in sd["pooled"].items()}, SELECTIVE, p["levels"]), "",
             f"Decode rate needed for {round(100 * level)} % of the best uniform CIDEr (pooled):", "",
             *rates_table({k: v["metrics"] for k, v in sd["pooled"].items()}, ["uniform", *SELECTIVE], level), ""]
    if head is not None:
        lines += [f"### Decoder calls and time per hour of video at equal quality ({HEADLINE_KIND}, pooled; "
                  f"{fmt(1000 * head['seconds_per_decode'], 1)} ms per single decode)", "",
                  *cost_table(head, sorted({0.9, level})), ""]
    lines += ["### Change-to-caption latency at equal quality (pooled; from the change to the first caption "
              "inside the new event, emitted at its window's end)", "",
              *latency_table(sd["pooled"], ["uniform/midpoint", "online"], levels=sorted({0.9, level})), "",
              "### Where each strategy gains or loses: quality by event length at 90 % of the best uniform CIDEr "
              "(pooled; mean CIDEr-D per event at each strategy's operating point for that level)", "",
              *event_length_table(sd["pooled"], [*BASELINE, OFFLINE_MEAN, ONLINE], 0.9), "",
              "### Decoder quality alone (CIDEr-D, one caption per event)", "",
              "`stage1`: trained on caption embeddings only; `final`: continued on predicted clips and stream windows.",
              "", *_quality_rows(sd), "", "![timeline](timeline.png)", ""]
    return lines


def target_line(sd: dict) -> str:
    """The issue-11 targets on hard-cut streams, met or not, from the headline numbers."""
    off, on = sd["headline"].get("offline/mean"), sd["headline"].get("online")
    ok_off = off is not None and off["value"] >= 2.85 and off["ci"][0] > 2
    ok_on = on is not None and on["value"] >= 2
    bound = sd.get("oracle_headline", {})
    oracle = "; ".join(f"{k} {with_ci(v)}x" for k, v in bound.items())
    return (f"targets (offline >= 2.85x with the CI's lower end above 2x; online >= 2x): offline "
            f"{'met' if ok_off else 'NOT met'}, online {'met' if ok_on else 'NOT met'}"
            + (f" (oracle on the same videos, a perfect predictor and decoder: {oracle})" if oracle else ""))


def summary_lines(sd: dict) -> list[str]:
    return [f"  selective decoding, {x}" for x in headline_text(sd)] + [f"  {target_line(sd)}"]


def plot_timeline(stream: VideoStream, decoded: dict[str, list[tuple[float, str]]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.9 * (1 + len(decoded))))
    for i, (s, e, refs) in enumerate(stream.truth):
        ax.barh(0, e - s, left=s, color=f"C{i % 10}", alpha=0.5, edgecolor="k")
        ax.text((s + e) / 2, 0, refs[0], ha="center", va="center", fontsize=6, rotation=20)
    for row, (_name, caps) in enumerate(decoded.items(), start=1):
        for t, cap in caps:
            ax.plot([t], [row], "kv")
            ax.text(t, row + 0.25, cap, fontsize=6, rotation=20)
    ax.set_yticks(range(len(decoded) + 1), ["ground truth", *decoded])
    ax.set_xlabel("seconds")
    ax.set_ylim(-0.6, len(decoded) + 0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline(seed_result: dict, dec: YDecoder, path) -> dict:
    """Captions of the first test video of the headline kind at each strategy's equal-quality rate."""
    kind = HEADLINE_KIND if HEADLINE_KIND in seed_result["per_kind"] else next(iter(seed_result["per_kind"]))
    a = seed_result["per_kind"][kind]["analysis"]
    stream = seed_result["per_kind"][kind]["streams"][0]
    level = seed_result["summaries"][kind]["headline_level"]
    decode, out = _decode_fn(dec), {}
    for label in ("uniform/midpoint", "offline/mean", "online"):
        hz = a.point[f"{'uniform' if label.startswith('uniform') else label}@{level}:hz"]
        if hz != hz:
            continue
        curve = a.curves[label]
        param = float(curve.params[int(np.argmin(np.abs(np.log(curve.rates / hz))))])  # nearest setting
        pts = select(stream, label, param, TriggerConfig(settle_tol=seed_result["settle_tol"]))
        out[f"{label} {hz:.2f} Hz"] = list(zip([p.t for p in pts], decode(np.stack([p.embedding for p in pts]))))
    plot_timeline(stream, out, path)
    return {k: [[round(t, 2), c] for t, c in v] for k, v in out.items()}
