"""FAISS part of the GPU check: GPU search == CPU search on a 100k x 384 gallery, and QPS of both.

Data flow: a clustered unit gallery (N, 384) and queries near gallery items (`benchmarks/retrieval.py`
`make_data`) ->
  k = 10           - `eval.retrieval.build_index` on CPU and on GPU (exact inner product), `search`:
                     build seconds and search-only queries/s; top-10 ids and scores compared
  k = 4096, k = N  - the full-ranking path above FAISS's GPU top-k limit of 2048: `eval.retrieval.retrieve`
                     (what `evaluate_retrieval` calls) on each device; queries/s include the index build
  torch_<device>   - exact search as one fp32 matmul + top-k on the check's device: an independent
                     reference, and the only "device" arm of the CPU test (`--device cpu --tiny`)
Every arm is compared with FAISS CPU: ids equal (fraction of positions), recall of the CPU top-k, the
largest score difference of the sorted lists (tie-proof); it passes at score diff <= 1e-4 and
recall >= 0.999. A FAISS without GPU support is reported as missing, and the CPU arms still run.

On the GPU machine FAISS GPU comes from the carried `.gpu/faiss_gpu_sm90.tar.xz` (faiss-gpu 1.15.1
cut to sm_90 code, CUDA 12 runtime, a cuBLAS 12 -> 13 forwarding shim; `benchmarks/gpu_prepare.py`),
whose shim finds the cuBLAS 13 that torch has loaded (`JEPA_CUBLAS13`).

Not run directly; `python benchmarks/gpu_check.py` runs this as the `faiss` section.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from gpu_check_common import Ctx, Section, strict_fp32

SCORE_TOL, RECALL_MIN = 1e-4, 0.999


def find_cublas13() -> str | None:
    """Path of the cuBLAS 13 library this process has loaded (torch's), else one next to torch."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libcublas.so.13" in line:
                    return line.split()[-1]
    except OSError:
        pass
    root = Path(torch.__file__).resolve().parents[1]
    hits = sorted(root.glob("nvidia/*/lib/libcublas.so.13")) + sorted(Path("/usr/local/cuda/lib64").glob("libcublas.so.13"))
    return str(hits[0]) if hits else None


def load_faiss(ctx: Ctx):
    """Import faiss (after torch has loaded cuBLAS, for the shim); (module, has_gpu, why_not)."""
    if ctx.device.type == "cuda":
        a = torch.ones(8, 8, device=ctx.device)
        (a @ a).sum().item()  # loads torch's cuBLAS 13
        os.environ.setdefault("JEPA_CUBLAS13", find_cublas13() or "")
    import faiss

    version = getattr(faiss, "__version__", "?")
    if not hasattr(faiss, "StandardGpuResources"):
        return faiss, False, f"faiss {version} is a CPU-only build (no StandardGpuResources)"
    if faiss.get_num_gpus() < 1:
        return faiss, False, f"faiss {version} has GPU support but sees no GPU"
    return faiss, True, None


def compare(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray]) -> dict:
    """Equality of two top-k results (scores, ids), both sorted best first."""
    (rs, ri), (gs, gi) = ref, got
    if ri.shape != gi.shape:
        return {"shape_mismatch": f"{ri.shape} vs {gi.shape}", "pass": False}
    k = ri.shape[1]
    recall = float(np.mean([np.intersect1d(a, b).size / k for a, b in zip(ri, gi)]))
    diff = float(np.max(np.abs(rs.astype(np.float64) - gs))) if rs.size else 0.0
    return {"ids_equal": float(np.mean(ri == gi)), "recall_vs_cpu": recall, "max_score_diff": diff,
            "pass": bool(diff <= SCORE_TOL and recall >= RECALL_MIN)}


def torch_search(gallery: np.ndarray, queries: np.ndarray, k: int, device: torch.device) -> tuple:
    """Exact inner-product top-k as one fp32 matmul on `device`: (scores, ids) numpy."""
    with torch.no_grad(), strict_fp32():
        g = torch.from_numpy(gallery).to(device)
        q = torch.from_numpy(queries).to(device)
        scores, ids = (q @ g.T).topk(k, dim=1)  # (Q, k)
    return scores.float().cpu().numpy(), ids.cpu().numpy()


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _k10_rows(sec: Section, ctx: Ctx, gallery, queries, backends: list[str], ref: dict) -> None:
    from eval.retrieval import Device, IndexConfig, build_index, search

    k = 10
    for backend in backends:
        def arm(b=backend):
            if b.startswith("torch"):
                torch_search(gallery, queries[:8], k, ctx.device)  # warm-up
                got, dt = _timed(lambda: torch_search(gallery, queries, k, ctx.device))
                build = 0.0
            else:
                index, build = _timed(lambda: build_index(gallery, IndexConfig(device=Device(b.split("_")[1]))))
                search(index, queries[:8], k)  # warm-up
                got, dt = _timed(lambda: search(index, queries, k, batch=len(queries)))
            if b == "faiss_cpu":
                ref[k] = got
            includes = "search (data on host)" if b.startswith("torch") else "search"
            return {"build_s": build, "qps": len(queries) / dt, "qps_includes": includes, **compare(ref[k], got)}

        sec.arm({"k": k, "backend": backend, "queries": len(queries)}, arm, ctx)


def _deep_rows(sec: Section, ctx: Ctx, gallery, queries, k: int, backends: list[str]) -> None:
    from eval.retrieval import Device, IndexConfig, retrieve

    ref = {}
    for backend in backends:
        def arm(b=backend):
            if b.startswith("torch"):
                got, dt = _timed(lambda: torch_search(gallery, queries, k, ctx.device))
                includes = "search (data on host)"
            else:
                got, dt = _timed(lambda: retrieve(queries, gallery, k, IndexConfig(device=Device(b.split("_")[1]))))
                includes = "index build + search"
            ref.setdefault("cpu", got if b == "faiss_cpu" else None)
            if ref["cpu"] is None:
                raise RuntimeError("the FAISS CPU arm failed, nothing to compare with")
            return {"qps": len(queries) / dt, "qps_includes": includes, **compare(ref["cpu"], got)}

        sec.arm({"k": k, "backend": backend, "queries": len(queries)}, arm, ctx)


def run_faiss(ctx: Ctx) -> Section:
    """FAISS GPU vs CPU (and exact torch on the device) on N x 384, k = 10, 4096 and N."""
    from retrieval import make_data

    sec = Section()
    n, (q10, q4k, qfull) = (5_000, (64, 16, 8)) if ctx.tiny else (100_000, (1000, 256, 32))
    faiss, has_gpu, why = load_faiss(ctx)
    backends = ["faiss_cpu"] + (["faiss_gpu"] if has_gpu else []) + [f"torch_{ctx.device.type}"]
    if not has_gpu:
        (sec.missing if ctx.device.type == "cuda" else sec.notes).append(f"FAISS GPU: {why}")
    sec.notes.append(f"gallery {n} x 384 clustered unit vectors (benchmarks/retrieval.py make_data), seed 0; "
                     f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads on CPU")
    gallery, queries = make_data(n, 384, q10, seed=0)
    _k10_rows(sec, ctx, gallery, queries, backends, {})
    _deep_rows(sec, ctx, gallery, queries[:q4k], 4096, backends)
    _deep_rows(sec, ctx, gallery, queries[:qfull], n, backends)
    for r in sec.rows:
        if "pass" in r and r["backend"] != "faiss_cpu":
            sec.checks[f"{r['backend']} == faiss_cpu at k={r['k']}"] = r["pass"]
    return sec
