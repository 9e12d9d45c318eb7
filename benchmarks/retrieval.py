"""Retrieval benchmark: exact FAISS search versus approximate indexes on a large gallery.

Data flow: a synthetic gallery of N x D L2-normalised vectors drawn around many cluster
centres (real embedding sets are clustered; i.i.d. Gaussian vectors are the worst case for
any approximate index and unlike real data), queries = noisy copies of random gallery items
(like a caption near its video) -> for exact (Flat) and each approximate index of
`eval.retrieval` (IVF-Flat, IVF-PQ with exact re-ranking, HNSW) at a few search settings:
build time, queries per second, index memory (serialised size), recall@10 relative to the
exact top-10 -> a markdown table and a JSON file.

    python benchmarks/retrieval.py --n 1000000 --dim 384      # the issue's full size
    python benchmarks/retrieval.py --n 200000 --out benchmarks/results/retrieval_200k.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np

from eval.retrieval import IndexConfig, IndexKind, build_index, l2_normalize, search, set_search_params
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
    """(name, build config, search settings to sweep) for each index family; nlist 0 = 2 sqrt(n)."""
    nlist = nlist or int(2 * np.sqrt(n))
    tpl = train_per_list
    pq_m = next(m for m in (48, 32, 24, 16, 8, 4, 2, 1) if dim % m == 0)
    return [
        ("ivf_flat", IndexConfig(kind=IndexKind.IVF_FLAT, nlist=nlist, train_per_list=tpl),
         [{"nprobe": p} for p in (4, 8, 16, 32)]),
        ("ivf_pq+refine", IndexConfig(kind=IndexKind.IVF_PQ, nlist=nlist, pq_m=pq_m, train_per_list=tpl,
                                      refine_k_factor=10),
         [{"nprobe": p, "refine_k_factor": r} for p, r in ((8, 10), (16, 10), (16, 30))]),
        ("hnsw", IndexConfig(kind=IndexKind.HNSW, hnsw_m=32, ef_construction=64),
         [{"ef_search": e} for e in (32, 64, 128)]),
    ]


def timed_search(index: faiss.Index, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[np.ndarray, float]:
    """Ids and queries per second (best of `repeats`)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, ids = search(index, queries, k, batch=len(queries))
        best = min(best, time.perf_counter() - t0)
    return ids, len(queries) / best


def recall_at(ids: np.ndarray, exact: np.ndarray) -> float:
    """Mean overlap of the approximate and exact top-k lists."""
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(ids, exact)]))


def run(n: int, dim: int, n_queries: int, seed: int, k: int = 10,
        families: tuple[str, ...] = ("ivf_flat", "ivf_pq+refine", "hnsw"), nlist: int = 0,
        train_per_list: int = 40) -> list[dict]:
    gallery, queries = make_data(n, dim, n_queries, seed)
    rows = []
    t0 = time.perf_counter()
    flat = build_index(gallery, IndexConfig())
    build_s = time.perf_counter() - t0
    exact, exact_qps = timed_search(flat, queries, k)
    mem = faiss.serialize_index(flat).nbytes
    del flat
    rows.append(dict(index="flat (exact)", params="", build_s=build_s, qps=exact_qps, mem_mb=mem / 2**20,
                     recall_at_10=1.0, speedup=1.0))
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
            ids, qps = timed_search(index, queries, k, repeats=2)
            rows.append(dict(index=name, params=json.dumps(params), build_s=build_s, qps=qps,
                             mem_mb=mem / 2**20, recall_at_10=recall_at(ids, exact), speedup=qps / exact_qps))
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
    parser.add_argument("--nlist", type=int, default=0, help="IVF lists (0 = 2 sqrt(n)); keep it near the "
                        "number of clusters in the data (n/100 here), or recall drops")
    parser.add_argument("--train-per-list", type=int, default=40, help="IVF k-means sample per list")
    parser.add_argument("--out", default="benchmarks/results/retrieval.json")
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rows = run(args.n, args.dim, args.queries, args.seed, families=tuple(args.indexes.split(",")),
               nlist=args.nlist, train_per_list=args.train_per_list)
    header = (f"Retrieval benchmark: gallery {args.n} x {args.dim} (clustered, normalised), {args.queries} "
              f"queries, k=10, FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    md = to_markdown(rows, header)
    print(md)
    out = Path(args.out)
    atomic_write_json(out, {"config": vars(args), "rows": rows, "meta": run_metadata()})
    atomic_write_text(out.with_suffix(".md"), md)


if __name__ == "__main__":
    main()
