"""FAISS retrieval and retrieval metrics (text-to-video and video-to-text).

Data flow: query embeddings (Q, D) and gallery embeddings (G, D) -> L2-normalised float32 ->
a FAISS index (exact inner product by default; IVF-Flat, IVF-PQ, HNSW or any factory string
as options; on GPU when a GPU build and device are present) -> top-k (scores, gallery ids),
searched in query batches with a progress bar. Galleries larger than memory are searched
shard by shard (e.g. a `np.load(..., mmap_mode="r")` array): each shard's index is built,
searched and freed, and FAISS's ResultHeap merges the per-shard top-k; a shard too small for
the configured index (a short last shard) is searched exactly instead. NaN/inf embeddings are
refused with an error naming the rows. FAISS GPU indexes return at most 2048 neighbours, so a
deeper search (a full ranking) moves the index to the CPU.

Units and ties: R@k, mAP and every other rate are percentages in [0, 100] (as papers report
them; `eval.classify` and `eval.llm_tasks` use the same unit). Tied scores are resolved
pessimistically: a positive tied with negatives is ranked after all of them, so the metric
never depends on gallery ids (FAISS itself breaks ties by id) and constant scores score 0.

`retrieval_metrics(ranked_ids, positives)` turns rankings into R@K, median/mean rank and mAP
with several correct items per query (MSR-VTT has 20 captions per video);
`evaluate_retrieval(text_emb, video_emb, text_to_video)` runs both directions.
Models and saved embeddings reach this module through `vljepa.eval_cli` (`vljepa eval retrieval`).
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass

import faiss
import numpy as np
from tqdm.auto import tqdm


class IndexKind(enum.Enum):
    FLAT = "flat"  # exact inner product
    IVF_FLAT = "ivf_flat"
    IVF_PQ = "ivf_pq"
    HNSW = "hnsw"
    FACTORY = "factory"  # any faiss.index_factory string in IndexConfig.factory


class Device(enum.Enum):
    CPU = "cpu"
    GPU = "gpu"  # error when no GPU build / device
    AUTO = "auto"  # GPU when available, else CPU


@dataclass
class IndexConfig:
    """How the gallery is indexed and searched."""

    kind: IndexKind = IndexKind.FLAT
    nlist: int = 0  # IVF lists; 0 = default_nlist(gallery size) = 4 * sqrt(n), at most n
    nprobe: int = 16  # IVF lists visited per query
    pq_m: int = 48  # IVF-PQ sub-quantisers (must divide the dimension)
    pq_bits: int = 8  # bits per sub-quantiser code
    hnsw_m: int = 32  # HNSW neighbours per node
    ef_construction: int = 80  # HNSW build-time beam
    ef_search: int = 64  # HNSW search-time beam
    refine_k_factor: float = 0.0  # > 0: re-rank k * this many PQ candidates with exact vectors (RFlat)
    factory: str = ""  # faiss.index_factory string, used when kind = factory
    train_per_list: int = 64  # IVF training sample: this many vectors per list (at most the gallery)
    normalize: bool = True  # L2-normalise both sides, so inner product = cosine
    device: Device = Device.CPU
    shard_size: int = 0  # 0 = one index; else build/search/free the gallery in shards of this size
    query_batch: int = 4096  # queries per search call (progress bar over batches)
    seed: int = 0


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Float32 copy with unit rows (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32).copy()
    faiss.normalize_L2(x)
    return x


GPU_MAX_K = 2048  # FAISS GPU indexes return at most this many neighbours per query


def check_finite(x: np.ndarray, what: str, offset: int = 0) -> None:
    """ValueError naming the rows of `x` (N, D) that hold NaN or inf (scoring them gives silently
    wrong ranks: FAISS orders NaN arbitrarily)."""
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"{bad.size} of {len(x)} {what} embeddings contain NaN or inf (rows "
                         f"{(bad[:5] + offset).tolist()}); fix the model or the saved arrays (e.g. an fp16 "
                         "overflow: run in float32 or bfloat16) before scoring")


def _as_float32(x: np.ndarray, normalize: bool, what: str = "input", offset: int = 0) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError(f"no {what} embeddings (shape {x.shape}); retrieval needs at least one")
    raw = np.ascontiguousarray(x, dtype=np.float32)
    check_finite(raw, what, offset)
    return l2_normalize(raw) if normalize else raw


def default_nlist(n: int) -> int:
    """IVF lists when IndexConfig.nlist = 0: 4 sqrt(n) (FAISS's guideline is 4-16 sqrt(n)), at most n."""
    return max(1, min(n, int(4 * math.sqrt(n))))


def too_small_for(cfg: IndexConfig, n: int) -> str | None:
    """Why `n` vectors cannot train the configured index (None when they can)."""
    nlist = cfg.nlist or default_nlist(n)
    if cfg.kind in (IndexKind.IVF_FLAT, IndexKind.IVF_PQ) and nlist > n:
        return f"nlist={nlist} is more than the {n} gallery vectors; lower nlist or use kind=flat"
    if cfg.kind is IndexKind.IVF_PQ and n < 2**cfg.pq_bits:
        return (f"IVF-PQ with pq_bits={cfg.pq_bits} trains {2**cfg.pq_bits} centroids per sub-quantiser and "
                f"needs at least that many vectors, got {n}; use pq_bits <= {max(1, int(math.log2(n)))}, "
                "kind=ivf_flat or kind=flat (exact search of so few vectors is cheap)")
    return None


def factory_string(cfg: IndexConfig, n: int, dim: int) -> str:
    """The faiss.index_factory description of the configured index for n vectors of size dim."""
    nlist = cfg.nlist or default_nlist(n)
    if cfg.kind is IndexKind.IVF_PQ and dim % cfg.pq_m:
        raise ValueError(f"pq_m={cfg.pq_m} must divide the embedding dimension {dim}; pick a divisor")
    problem = too_small_for(cfg, n)
    if problem:
        raise ValueError(problem)
    if cfg.kind is IndexKind.FLAT:
        return "Flat"
    if cfg.kind is IndexKind.IVF_FLAT:
        return f"IVF{nlist},Flat"
    if cfg.kind is IndexKind.IVF_PQ:
        # "np": no polysemous training (a slow annealing step useful only for Hamming-filtered search)
        refine = ",RFlat" if cfg.refine_k_factor > 0 else ""
        return f"IVF{nlist},PQ{cfg.pq_m}x{cfg.pq_bits}np{refine}"
    if cfg.kind is IndexKind.HNSW:
        return f"HNSW{cfg.hnsw_m},Flat"
    if not cfg.factory:
        raise ValueError("kind=factory needs IndexConfig.factory, e.g. 'IVF4096,PQ64x4fs,RFlat'")
    return cfg.factory


def _use_gpu(device: Device) -> bool:
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device is Device.GPU and not has_gpu:
        raise RuntimeError("device=gpu but FAISS sees no GPU: install the `gpu` extra (faiss-gpu "
                           "instead of faiss-cpu) on a CUDA machine, or use device=auto/cpu")
    return device is not Device.CPU and has_gpu


def set_search_params(index: faiss.Index, cfg: IndexConfig) -> None:
    """Apply nprobe (IVF) / efSearch (HNSW) to a CPU or GPU index."""
    if "Gpu" in type(index).__name__:  # GPU indexes are Flat or IVF (FAISS has no GPU HNSW)
        if cfg.kind in (IndexKind.IVF_FLAT, IndexKind.IVF_PQ):
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", cfg.nprobe)
        return
    if faiss.try_extract_index_ivf(index) is not None:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", cfg.nprobe)
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", cfg.ef_search)
    if isinstance(faiss.downcast_index(index), faiss.IndexRefine) and cfg.refine_k_factor > 0:
        faiss.downcast_index(index).k_factor = cfg.refine_k_factor


def build_index(gallery: np.ndarray, cfg: IndexConfig | None = None) -> faiss.Index:
    """Index of `gallery` (G, D) (already normalised if cfg.normalize); trains IVF/PQ on a sample."""
    cfg = cfg or IndexConfig()
    n, dim = gallery.shape
    index = faiss.index_factory(dim, factory_string(cfg, n, dim), faiss.METRIC_INNER_PRODUCT)
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        faiss.downcast_index(index).hnsw.efConstruction = cfg.ef_construction
    ivf = faiss.try_extract_index_ivf(index)
    n_train = cfg.train_per_list * (ivf.nlist if ivf is not None else 256)
    if cfg.kind is IndexKind.IVF_PQ:  # k-means of each sub-quantiser wants ~40 points per centroid
        n_train = max(n_train, 40 * 2**cfg.pq_bits)
    n_train = min(n, n_train)
    if _use_gpu(cfg.device):
        index = faiss.index_cpu_to_all_gpus(index)
    if not index.is_trained:
        rng = np.random.default_rng(cfg.seed)
        sample = gallery[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else gallery
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    set_search_params(index, cfg)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int, batch: int = 4096,
           desc: str = "search") -> tuple[np.ndarray, np.ndarray]:
    """Batched top-k: (scores (Q, k) float32, ids (Q, k) int64), best first; -1 ids pad short lists."""
    k = min(k, index.ntotal)
    if "Gpu" in type(index).__name__ and k > GPU_MAX_K:
        warnings.warn(f"FAISS GPU indexes return at most {GPU_MAX_K} neighbours; searching k={k} (a full "
                      "ranking) on the CPU instead", stacklevel=2)
        index = faiss.index_gpu_to_cpu(index)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    starts = range(0, len(queries), batch)
    for s in tqdm(starts, desc=desc, disable=len(starts) <= 1, leave=False):
        scores[s:s + batch], ids[s:s + batch] = index.search(queries[s:s + batch], k)
    return scores, ids


def retrieve(queries: np.ndarray, gallery: np.ndarray, k: int,
             index_cfg: IndexConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k gallery items for each query -> (scores (Q, k), ids (Q, k)), best first.

    `gallery` may be a memory-mapped array: with `shard_size` > 0 only one shard is in memory
    (normalised and indexed) at a time.
    """
    cfg = index_cfg or IndexConfig()
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != gallery dim {gallery.shape[1]}")
    q = _as_float32(queries, cfg.normalize, "query")
    n = gallery.shape[0]
    shard = cfg.shard_size or n
    k = min(k, n)
    if shard >= n:
        return search(build_index(_as_float32(gallery, cfg.normalize, "gallery"), cfg), q, k, cfg.query_batch)
    heap = faiss.ResultHeap(len(q), k, keep_max=True)  # inner product: larger is better
    for start in tqdm(range(0, n, shard), desc="shards", leave=False):
        part = _as_float32(np.asarray(gallery[start:start + shard]), cfg.normalize, "gallery", start)
        scores, ids = search(build_index(part, _shard_config(cfg, len(part), start)), q, k, cfg.query_batch)
        if scores.shape[1] < k:  # a last shard smaller than k
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        heap.add_result(np.ascontiguousarray(scores), np.where(ids >= 0, ids + start, -1))
    heap.finalize()
    return heap.D, heap.I


def _shard_config(cfg: IndexConfig, n: int, start: int) -> IndexConfig:
    """The shard's index config: exact search for a shard too small to train the index."""
    problem = too_small_for(cfg, n)
    if problem is None:
        return cfg
    warnings.warn(f"gallery shard at row {start} has {n} vectors, too few for {cfg.kind.value} ({problem}); "
                  "searching this shard exactly", stacklevel=3)
    return IndexConfig(kind=IndexKind.FLAT, normalize=cfg.normalize, device=cfg.device, query_batch=cfg.query_batch)


def _first_ranks_and_ap(ranked_ids: np.ndarray, positives: list[set[int]],
                        scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of the first positive per query (inf when not in the list) and average precision.
    With `scores`, items of equal score are reordered so positives come after negatives (pessimistic)."""
    ranks = np.full(len(positives), np.inf)
    aps = np.zeros(len(positives))
    for i, (row, pos) in enumerate(zip(ranked_ids, positives)):
        if not pos:
            raise ValueError(f"query {i} has no positive gallery item; every query needs at least one")
        is_pos = np.isin(row, list(pos))
        if scores is not None:
            is_pos = is_pos[np.lexsort((is_pos, -scores[i]))]  # by score, then negatives before positives
        hits = np.flatnonzero(is_pos)  # 0-based positions of positives
        if hits.size:
            ranks[i] = hits[0] + 1
            aps[i] = np.sum((np.arange(hits.size) + 1) / (hits + 1)) / len(pos)  # precision at each hit
    return ranks, aps


def retrieval_metrics(ranked_ids: np.ndarray, positives: list[set[int]],
                      ks: tuple[int, ...] = (1, 5, 10), scores: np.ndarray | None = None) -> dict[str, float]:
    """R@k (a positive in the top k), median/mean rank of the first positive, mAP; R@k and mAP in percent.

    `scores` (Q, K), the similarities of `ranked_ids`, make tie handling deterministic: a positive
    tied with negatives ranks after them (pessimistic). Without scores the given order is used.

    `ranked_ids` (Q, K): gallery ids best first. With a full ranking (K = gallery size) every
    number is exact; with a truncated one, R@k is exact for k <= K, a query whose positives all
    fall outside the list counts rank K+1 (median/mean rank become lower bounds, reported in
    `n_unranked`) and positives outside the list add 0 to AP.
    """
    ranked_ids = np.asarray(ranked_ids)
    if len(ranked_ids) != len(positives):
        raise ValueError(f"{len(ranked_ids)} rankings but {len(positives)} positive sets")
    width = ranked_ids.shape[1]
    too_deep = [k for k in ks if k > width]
    if too_deep:
        raise ValueError(f"R@{too_deep} needs rankings of at least {max(too_deep)} items, got {width}; "
                         "search with a larger k")
    if scores is not None and np.shape(scores) != ranked_ids.shape:
        raise ValueError(f"scores shape {np.shape(scores)} != ranked_ids shape {ranked_ids.shape}")
    ranks, aps = _first_ranks_and_ap(ranked_ids, positives, None if scores is None else np.asarray(scores))
    out = {f"R@{k}": float(100 * np.mean(ranks <= k)) for k in ks}
    finite = np.where(np.isinf(ranks), width + 1, ranks)
    out.update(median_rank=float(np.median(finite)), mean_rank=float(np.mean(finite)),
               mAP=float(100 * aps.mean()), n_queries=len(positives), n_unranked=int(np.isinf(ranks).sum()))
    return out


def evaluate_retrieval(text_emb: np.ndarray, video_emb: np.ndarray, text_to_video: list[int],
                       ks: tuple[int, ...] = (1, 5, 10), index_cfg: IndexConfig | None = None,
                       rank_depth: int | None = None) -> dict[str, dict[str, float]]:
    """Text-to-video and video-to-text metrics; caption i describes video `text_to_video[i]`.

    rank_depth: how deep each ranking is searched (None = the whole gallery: exact ranks).
    """
    t2v_ids = check_ids(text_to_video, len(text_emb), len(video_emb))
    videos_of_text = [{int(v)} for v in t2v_ids]
    texts_of_video: list[set[int]] = [set() for _ in range(len(video_emb))]
    for t, v in enumerate(t2v_ids):
        texts_of_video[v].add(t)
    uncaptioned = [v for v, texts in enumerate(texts_of_video) if not texts]
    if uncaptioned:
        raise ValueError(f"videos {uncaptioned[:5]} ({len(uncaptioned)} in all) have no caption in text_to_video; "
                         "video-to-text retrieval needs at least one caption per video: drop those videos")
    t2v_scores, t2v = retrieve(text_emb, video_emb, rank_depth or len(video_emb), index_cfg)
    v2t_scores, v2t = retrieve(video_emb, text_emb, rank_depth or len(text_emb), index_cfg)
    return {"t2v": retrieval_metrics(t2v, videos_of_text, ks, t2v_scores),
            "v2t": retrieval_metrics(v2t, texts_of_video, ks, v2t_scores)}


def check_ids(text_to_video, n_texts: int, n_videos: int) -> np.ndarray:
    """text_to_video as an int array, or a ValueError naming the first bad entry (a float, a
    negative id, which numpy would read as "the last video", or an id past the gallery)."""
    ids = np.asarray(text_to_video)
    if ids.ndim != 1 or len(ids) != n_texts:
        raise ValueError(f"text_to_video must be a 1-D list with one video id per text ({n_texts}), "
                         f"got shape {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"text_to_video must hold integer video ids, got dtype {ids.dtype} "
                         f"(e.g. {ids[:3].tolist()}); save it as int64")
    bad = np.flatnonzero((ids < 0) | (ids >= n_videos))
    if bad.size:
        raise ValueError(f"text_to_video[{bad[0]}] = {ids[bad[0]]} is not a video id in [0, {n_videos}) "
                         f"({bad.size} such entries); every caption must name one of the {n_videos} videos")
    return ids.astype(np.int64)
