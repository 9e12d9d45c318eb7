"""Retrieval benchmark: exact FAISS search versus approximate indexes on a large gallery.

Data flow: a gallery and queries -> for exact (Flat) and each approximate index of
`eval.retrieval` (IVF-Flat, IVF-PQ with exact re-ranking, HNSW) at a few search settings:
build time, queries per second, index memory (serialised size), recall@10 relative to the
exact top-10 -> a markdown table and a JSON file. Each setting's QPS is timed `--repeats` times
alternately with exact search, and the speed-up is the ratio of the medians (the machine is
shared, so absolute times drift; the interleaved ratio does not).

Galleries (`--data`):
- `synthetic`: N x D L2-normalised vectors around N/100 cluster centres, queries = noisy copies
  of random gallery items (clustered data is easier for approximate indexes than real data);
- `real`: all-MiniLM-L6-v2 embeddings of ~200k real sentences of the packaged LLM-JEPA data
  sets, queries = held-out sentences (`benchmarks/real_sentences.py` embeds and caches them
  under `benchmarks/.cache/`; the benchmark uses what is cached so far).

    python benchmarks/retrieval.py --n 200000 --out benchmarks/results/retrieval_200k.json
    python benchmarks/real_sentences.py && python benchmarks/retrieval.py --data real \
        --out benchmarks/results/retrieval_real_minilm.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from eval.retrieval import (
    IndexConfig,
    IndexKind,
    build_index,
    default_nlist,
    l2_normalize,
    search,
    set_search_params,
)
from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata


def make_data(n: int, dim: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit gallery (n, dim) and queries (n_queries, dim) near random gallery items."""
    rng = np.random.default_rng(seed)
    n_centres = max(16, n // 100)
    centres = rng.standard_normal((n_centres, dim), dtype=np.float32)
    gallery = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):  # chunked to bound temporary memory
        e = min(n, s + 100_000)
        gallery[s:e] = centres[rng.integers(n_centres, size=e - s)] + \
            1.0 * rng.standard_normal((e - s, dim), dtype=np.float32)
    faiss.normalize_L2(gallery)
    picks = gallery[rng.integers(n, size=n_queries)]
    queries = l2_normalize(picks + 0.3 / np.sqrt(dim) * rng.standard_normal(picks.shape, dtype=np.float32))
    return gallery, queries


def settings(n: int, dim: int, nlist: int = 0, train_per_list: int = 40) -> list[tuple[str, IndexConfig, list[dict]]]:
    """(name, build config, search settings to sweep) for each index family; nlist 0 = the library
    default (eval.retrieval.default_nlist: 4 sqrt(n))."""
    nlist = nlist or default_nlist(n)
    tpl = train_per_list
    pq_m = next(m for m in (48, 32, 24, 16, 8, 4, 2, 1) if dim % m == 0)
    return [
        ("ivf_flat", IndexConfig(kind=IndexKind.IVF_FLAT, nlist=nlist, train_per_list=tpl),
         [{"nprobe": p} for p in (4, 8, 16, 32, 64, 128)]),
        ("ivf_pq+refine", IndexConfig(kind=IndexKind.IVF_PQ, nlist=nlist, pq_m=pq_m, train_per_list=tpl,
                                      refine_k_factor=10),
         [{"nprobe": p, "refine_k_factor": r} for p, r in ((8, 10), (16, 10), (32, 10), (64, 10))]),
        ("hnsw", IndexConfig(kind=IndexKind.HNSW, hnsw_m=32, ef_construction=64),
         [{"ef_search": e} for e in (32, 64, 128, 256)]),
    ]


def timed_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Ids and queries per second of one search of every query."""
    t0 = time.perf_counter()
    _, ids = search(index, queries, k, batch=len(queries))
    return ids, len(queries) / (time.perf_counter() - t0)


def interleaved_qps(index: faiss.Index, flat: faiss.Index, queries: np.ndarray, k: int,
                    repeats: int) -> tuple[np.ndarray, float, float]:
    """(ids, median QPS, median exact QPS), timing the index and exact search alternately."""
    qps, exact_qps, ids = [], [], None
    for _ in range(repeats):
        ids, q = timed_search(index, queries, k)
        qps.append(q)
        exact_qps.append(timed_search(flat, queries, k)[1])
    return ids, float(np.median(qps)), float(np.median(exact_qps))


def recall_at(ids: np.ndarray, exact: np.ndarray) -> float:
    """Mean overlap of the approximate and exact top-k lists."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(ids, exact)]))


def run(gallery: np.ndarray, queries: np.ndarray, k: int = 10,
        families: tuple[str, ...] = ("ivf_flat", "ivf_pq+refine", "hnsw"), nlist: int = 0,
        train_per_list: int = 40, repeats: int = 3) -> list[dict]:
    n, dim = gallery.shape
    rows = []
    t0 = time.perf_counter()
    flat = build_index(gallery, IndexConfig())
    build_s = time.perf_counter() - t0
    exact, _ = timed_search(flat, queries, k)
    exact_qps = float(np.median([timed_search(flat, queries, k)[1] for _ in range(repeats)]))
    rows.append(dict(index="flat (exact)", params="", build_s=build_s, qps=exact_qps, exact_qps=exact_qps,
                     mem_mb=faiss.serialize_index(flat).nbytes / 2**20, recall_at_10=1.0, speedup=1.0))
    print(rows[-1], flush=True)
    for name, cfg, sweep in (s for s in settings(n, dim, nlist, train_per_list) if s[0] in families):
        t0 = time.perf_counter()
        index = build_index(gallery, cfg)
        build_s = time.perf_counter() - t0
        mem = faiss.serialize_index(index).nbytes
        for params in sweep:
            for key, value in params.items():
                setattr(cfg, key, value)
            set_search_params(index, cfg)
            ids, qps, ref_qps = interleaved_qps(index, flat, queries, k, repeats)
            rows.append(dict(index=name, params=json.dumps(params), build_s=build_s, qps=qps, exact_qps=ref_qps,
                             mem_mb=mem / 2**20, recall_at_10=recall_at(ids, exact), speedup=qps / ref_qps))
            print(rows[-1], flush=True)
        del index
    return rows


def to_markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| index | search params | build s | QPS | speed-up vs exact | memory MB | recall@10 |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['index']} | {r['params']} | {r['build_s']:.1f} | {r['qps']:.0f} | "
                     f"{r['speedup']:.1f}x | {r['mem_mb']:.0f} | {r['recall_at_10']:.3f} |")
    ok = [r for r in rows[1:] if r["recall_at_10"] >= 0.95 and r["speedup"] >= 10]
    best = max(ok, key=lambda r: r["speedup"]) if ok else None
    verdict = (f"Target met: {best['index']} {best['params']} gives recall@10 {best['recall_at_10']:.3f} "
               f"at {best['speedup']:.1f}x exact QPS." if best else
               "Target (recall@10 >= 0.95 at >= 10x exact QPS) NOT met by any setting.")
    return "\n".join(lines + ["", verdict, ""])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="gallery size (the issue asks 1,000,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0 = library default)")
    parser.add_argument("--indexes", default="ivf_flat,ivf_pq+refine,hnsw",
                        help="approximate index families to run (HNSW builds of 1M take tens of minutes on 2 cores)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0 = the library default, 4 sqrt(n)); "
                        "keep it near the number of clusters in the data, or recall drops")
    parser.add_argument("--train-per-list", type=int, default=40, help="IVF k-means sample per list")
    parser.add_argument("--data", choices=["synthetic", "real"], default="synthetic",
                        help="synthetic clustered vectors, or real MiniLM sentence embeddings (benchmarks/real_sentences.py)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per setting (median), alternating with exact")
    parser.add_argument("--out", default="benchmarks/results/retrieval.json")
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.data == "real":
        from real_sentences import load_real

        gallery, queries, info = load_real(args.queries, args.seed, cached_only=True)
        if len(gallery) == 0:
            raise SystemExit(f"no cached gallery embeddings for --queries {args.queries} --seed {args.seed}: run "
                             f"`python benchmarks/real_sentences.py --queries {args.queries} --seed {args.seed}` first")
        what = (f"real all-MiniLM-L6-v2 sentence embeddings ({info['n_gallery']} of {info['n_gallery_available']} "
                f"gallery sentences embedded; held-out queries)")
    else:
        gallery, queries = make_data(args.n, args.dim, args.queries, args.seed)
        info, what = {}, "clustered, normalised"
    rows = run(gallery, queries, families=tuple(args.indexes.split(",")), nlist=args.nlist,
               train_per_list=args.train_per_list, repeats=args.repeats)
    header = (f"Retrieval benchmark: gallery {gallery.shape[0]} x {gallery.shape[1]} ({what}), {len(queries)} "
              f"queries, k=10, FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
              f"QPS = median of {args.repeats} timings alternating with exact search")
    md = to_markdown(rows, header)
    print(md)
    out = Path(args.out)
    atomic_write_json(out, {"config": vars(args), "data": info, "rows": rows, "meta": run_metadata()})
    atomic_write_text(out.with_suffix(".md"), md)


if __name__ == "__main__":
    main()
