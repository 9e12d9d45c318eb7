"""Tests for eval.retrieval: FAISS exact search == torch top-k, sharding, approximate indexes, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.retrieval import (
    Device,
    IndexConfig,
    IndexKind,
    evaluate_retrieval,
    l2_normalize,
    retrieval_metrics,
    retrieve,
)


def _clustered(n: int, dim: int, seed: int, n_centres: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_centres, dim))
    return (centres[rng.integers(n_centres, size=n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def test_exact_search_equals_torch_topk():
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(64, 32)), rng.normal(size=(3000, 32))
    scores, ids = retrieve(queries, gallery, k=10)
    q = torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
    g = torch.nn.functional.normalize(torch.from_numpy(gallery), dim=1)
    ref_scores, ref_ids = (q @ g.T).topk(10, dim=1)
    assert np.array_equal(ids, ref_ids.numpy())
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5)


def test_sharded_memmap_search_equals_single_index(tmp_path):
    rng = np.random.default_rng(1)
    queries, gallery = rng.normal(size=(40, 16)), rng.normal(size=(1005, 16)).astype(np.float32)
    np.save(tmp_path / "g.npy", gallery)
    mm = np.load(tmp_path / "g.npy", mmap_mode="r")
    ref_scores, ref_ids = retrieve(queries, gallery, k=10)
    cfg = IndexConfig(shard_size=250, query_batch=16)  # last shard has 5 rows < k
    scores, ids = retrieve(queries, mm, k=10, index_cfg=cfg)
    assert np.array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)


@pytest.mark.parametrize("cfg,min_recall", [
    (IndexConfig(kind=IndexKind.IVF_FLAT, nlist=32, nprobe=32), 1.0),  # probes every list = exact
    (IndexConfig(kind=IndexKind.IVF_FLAT, nlist=32, nprobe=8), 0.8),
    (IndexConfig(kind=IndexKind.HNSW, hnsw_m=16, ef_search=64), 0.9),
    (IndexConfig(kind=IndexKind.IVF_PQ, nlist=16, nprobe=16, pq_m=8, pq_bits=4), 0.15),  # random = 0.0025
    (IndexConfig(kind=IndexKind.IVF_PQ, nlist=16, nprobe=16, pq_m=8, pq_bits=4, refine_k_factor=100), 0.95),
    (IndexConfig(kind=IndexKind.FACTORY, factory="IVF16,Flat", nprobe=16), 1.0),
])
def test_approximate_indexes_recall(cfg, min_recall):
    gallery, queries = _clustered(4000, 32, seed=2), _clustered(50, 32, seed=3)
    _, exact = retrieve(queries, gallery, k=10)
    _, approx = retrieve(queries, gallery, k=10, index_cfg=cfg)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= min_recall


def test_index_config_errors():
    x = np.ones((5, 12), dtype=np.float32)
    with pytest.raises(ValueError, match="must divide"):
        retrieve(x, x, 2, IndexConfig(kind=IndexKind.IVF_PQ, nlist=1, pq_m=5))
    with pytest.raises(ValueError, match="nlist"):
        retrieve(x, x, 2, IndexConfig(kind=IndexKind.IVF_FLAT, nlist=10))
    with pytest.raises(ValueError, match="dim"):
        retrieve(x, np.ones((5, 8)), 2)
    with pytest.raises(RuntimeError, match="gpu"):
        retrieve(x, x, 2, IndexConfig(device=Device.GPU))


def _plain_metrics(ranked, positives, ks):
    """Straightforward reference: loops only."""
    out = {}
    first = []
    aps = []
    for row, pos in zip(ranked, positives):
        r = next((i + 1 for i, g in enumerate(row) if g in pos), len(row) + 1)
        first.append(r)
        hits, precisions = 0, []
        for i, g in enumerate(row):
            if g in pos:
                hits += 1
                precisions.append(hits / (i + 1))
        aps.append(sum(precisions) / len(pos))
    for k in ks:
        out[f"R@{k}"] = 100 * sum(r <= k for r in first) / len(first)
    s = sorted(first)
    n = len(s)
    out["median_rank"] = (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)
    out["mean_rank"] = sum(first) / n
    out["mAP"] = 100 * sum(aps) / n
    return out


def test_metrics_hand_made_case():
    ranked = np.array([[3, 1, 2, 0], [0, 1, 2, 3], [2, 3, 0, 1]])
    positives = [{1}, {1, 3}, {0, 1}]
    m = retrieval_metrics(ranked, positives, ks=(1, 2, 4))
    # first-positive ranks: 2, 2, 3 -> R@1 0, R@2 2/3, R@4 1; AP: 1/2, (1/2 + 2/4)/2, (1/3 + 2/4)/2
    assert m["R@1"] == 0.0 and m["R@2"] == pytest.approx(200 / 3) and m["R@4"] == 100.0
    assert m["median_rank"] == 2 and m["mean_rank"] == pytest.approx(7 / 3)
    assert m["mAP"] == pytest.approx(100 * (0.5 + 0.5 + 5 / 12) / 3)
    assert m["n_unranked"] == 0


def test_metrics_match_plain_python_on_random_rankings():
    rng = np.random.default_rng(4)
    ranked = np.stack([rng.permutation(30) for _ in range(25)])
    positives = [set(rng.choice(30, size=rng.integers(1, 5), replace=False).tolist()) for _ in range(25)]
    ref = _plain_metrics(ranked, positives, (1, 5, 10))
    got = retrieval_metrics(ranked, positives, (1, 5, 10))
    for key, value in ref.items():
        assert got[key] == pytest.approx(value), key
    # truncated ranking: misses count as rank K+1 and are reported
    trunc = retrieval_metrics(ranked[:, :10], positives, (1, 5, 10))
    assert trunc["R@10"] == got["R@10"]
    assert trunc["n_unranked"] == sum(min(list(r).index(g) for g in p) >= 10 for r, p in zip(ranked, positives))


def test_metrics_errors():
    with pytest.raises(ValueError, match="larger k"):
        retrieval_metrics(np.zeros((1, 3), dtype=int), [{0}], ks=(5,))
    with pytest.raises(ValueError, match="no positive"):
        retrieval_metrics(np.zeros((1, 3), dtype=int), [set()], ks=(1,))


def test_evaluate_retrieval_both_directions_with_several_captions():
    rng = np.random.default_rng(5)
    videos = l2_normalize(rng.normal(size=(20, 24)))
    text_to_video = [v for v in range(20) for _ in range(3)]  # 3 captions per video
    texts = videos[text_to_video] + 0.05 * rng.normal(size=(60, 24))
    m = evaluate_retrieval(texts, videos, text_to_video)
    assert m["t2v"]["R@1"] == 100.0 and m["v2t"]["R@1"] == 100.0
    assert m["v2t"]["mAP"] == pytest.approx(100.0)  # all 3 captions ranked first
    assert m["t2v"]["n_queries"] == 60 and m["v2t"]["n_queries"] == 20
    shuffled = evaluate_retrieval(texts, videos, list(rng.permutation(text_to_video)))
    assert shuffled["t2v"]["R@1"] < 30
