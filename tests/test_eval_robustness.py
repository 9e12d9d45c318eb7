"""Bad inputs to the model-agnostic evaluation layer get named errors; ties, ANN edge cases and
results provenance behave as documented (issue 13: "Evaluation inputs", "Security and provenance")."""

from __future__ import annotations

import os
import stat
import warnings

import faiss
import numpy as np
import pytest

from eval.classify import classification_metrics, zero_shot_from_embeddings
from eval.results import media_signature, model_identity, write_results
from eval.retrieval import (
    GPU_MAX_K,
    IndexConfig,
    IndexKind,
    default_nlist,
    evaluate_retrieval,
    factory_string,
    l2_normalize,
    retrieval_metrics,
    retrieve,
    search,
)
from jepa_common.io import atomic_write_text, run_metadata


def _pair(n_video: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    video = l2_normalize(rng.normal(size=(n_video, 8)))
    return video, video + 0.01 * rng.normal(size=video.shape).astype(np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_are_refused_naming_rows(bad):
    video, text = _pair()
    text[2, 0] = bad
    with pytest.raises(ValueError, match=r"1 of 6 query embeddings contain NaN or inf \(rows \[2\]\)"):
        evaluate_retrieval(text, video, list(range(6)))
    video[4, 1] = bad
    with pytest.raises(ValueError, match=r"gallery embeddings contain NaN or inf \(rows \[4\]\)"):
        retrieve(text[:2], video, 3)
    with pytest.raises(ValueError, match="NaN or inf"):
        zero_shot_from_embeddings(video, video, [0, 1, 2, 3, 4, 5], list("abcdef"))


@pytest.mark.parametrize("ids,match", [
    ([0, 1, 2, 3, 4, -1], r"text_to_video\[5\] = -1 is not a video id in \[0, 6\)"),
    ([0, 1, 2, 3, 4, 6], r"text_to_video\[5\] = 6 is not a video id"),
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "integer video ids, got dtype float64"),
    ([0, 1, 2], "one video id per text"),
])
def test_bad_text_to_video_ids(ids, match):
    video, text = _pair()
    with pytest.raises(ValueError, match=match):
        evaluate_retrieval(text, video, ids)


def test_empty_inputs_are_named():
    video, text = _pair()
    with pytest.raises(ValueError, match="no query embeddings"):
        retrieve(text[:0], video, 3)
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics(np.zeros((0, 3)), [], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"label\[1\] = 3 is not a class id in \[0, 3\)"):
        classification_metrics(np.zeros((2, 3)), [0, 3], ["a", "b", "c"])


def test_retrieval_ties_are_pessimistic_whatever_the_ids():
    # every gallery item identical: each caption is tied with all videos -> rank = gallery size
    video = np.ones((5, 4), dtype=np.float32)
    m = evaluate_retrieval(video.copy(), video, list(range(5)), ks=(1, 5))
    assert m["t2v"]["R@1"] == 0.0 and m["t2v"]["R@5"] == 100.0
    assert m["t2v"]["median_rank"] == 5.0 and m["v2t"]["median_rank"] == 5.0
    # a positive tied with one negative: rank 2 whether its id is lower or higher than the negative's
    ids, scores, pos = np.array([[3, 7, 1]]), np.array([[0.9, 0.9, 0.1]]), [{7}]
    for order in ([3, 7, 1], [7, 3, 1]):
        got = retrieval_metrics(np.array([order]), pos, ks=(1, 2), scores=scores)
        assert got["R@1"] == 0.0 and got["R@2"] == 100.0 and got["mean_rank"] == 2.0
    assert retrieval_metrics(ids, pos, ks=(1,), scores=np.array([[0.9, 0.8, 0.1]]))["R@1"] == 0.0


def test_zero_shot_ties_do_not_go_to_class_zero():
    constant = np.zeros((4, 3))
    m = classification_metrics(constant, [0, 0, 0, 0], ["a", "b", "c"], ks=(1, 3))
    assert m["top1"] == 0.0 and m["top3"] == 100.0  # was 100 % (argmax picked class 0)
    assert all(row[0] == 0 for row in m["confusion"][1:]) and m["confusion"][0][0] == 0
    exact = classification_metrics(np.eye(3), [0, 1, 2], ["a", "b", "c"])
    assert exact["top1"] == 100.0


def test_sharded_ivf_with_a_small_last_shard_searches_it_exactly():
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(1030, 16)).astype(np.float32), rng.normal(size=(20, 16))
    cfg = IndexConfig(kind=IndexKind.IVF_FLAT, nlist=40, nprobe=40, shard_size=500)  # last shard: 30 < nlist
    with pytest.warns(UserWarning, match="shard at row 1000 has 30 vectors"):  # was a crash after 2 shards
        _, ids = retrieve(queries, gallery, 10, cfg)
    _, exact = retrieve(queries, gallery, 10)
    assert np.array_equal(ids, exact)  # nprobe >= nlist on the big shards, exact on the small one


def test_ivf_pq_on_too_few_vectors_is_a_clear_error():
    x = np.random.default_rng(1).normal(size=(200, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"needs at least that many vectors, got 200; use pq_bits <= 7"):
        retrieve(x[:5], x, 5, IndexConfig(kind=IndexKind.IVF_PQ, nlist=4, pq_m=4, pq_bits=8))
    _, ids = retrieve(x[:5], x, 5, IndexConfig(kind=IndexKind.IVF_PQ, nlist=4, nprobe=4, pq_m=4, pq_bits=7))
    assert ids.shape == (5, 5)


def test_default_nlist_is_four_sqrt_n_as_documented():
    assert default_nlist(10_000) == 400 and default_nlist(8) == 8
    assert factory_string(IndexConfig(kind=IndexKind.IVF_FLAT), 10_000, 16) == "IVF400,Flat"


class _FakeGpuIndex:
    """Stands in for a faiss GPU index: refuses k > 2048 like the real one."""

    def __init__(self, cpu: faiss.Index):
        self.cpu, self.ntotal = cpu, cpu.ntotal

    def search(self, q, k):  # pragma: no cover - must not be reached with k > GPU_MAX_K
        if k > GPU_MAX_K:
            raise RuntimeError("GPU index only supports k <= 2048")
        return self.cpu.search(q, k)


def test_full_ranking_deeper_than_the_gpu_cap_runs_on_cpu(monkeypatch):
    rng = np.random.default_rng(2)
    gallery, queries = l2_normalize(rng.normal(size=(2500, 8))), l2_normalize(rng.normal(size=(4, 8)))
    cpu = faiss.IndexFlatIP(8)
    cpu.add(gallery)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda index: index.cpu, raising=False)
    with pytest.warns(UserWarning, match="at most 2048"):
        scores, ids = search(_FakeGpuIndex(cpu), queries, 2500)
    assert ids.shape == (4, 2500) and np.array_equal(ids, cpu.search(queries, 2500)[1])


def test_results_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_results(tmp_path, "retrieval", {"R@1": 1.0}, {}, {"id": None}, {"name": "x"})
        plain = atomic_write_text(tmp_path / "other.txt", "x")
    finally:
        os.umask(old)
    for p in (path, tmp_path / "results.md", plain):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644  # mkstemp gave 0600


def test_model_identity_hashes_content_not_sizes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, byte in ((a, b"\x01"), (b, b"\x02")):
        d.mkdir()
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(byte * 4096)  # same size, different weights
    ia, ib = model_identity(a), model_identity(b)
    assert ia["revision"] != ib["revision"] and ia["revision"].startswith("local-")
    (b / "model.safetensors").write_bytes(b"\x01" * 4096)
    assert model_identity(b)["revision"] == ia["revision"]  # same content, same id


def test_media_signature_changes_with_content(tmp_path):
    f = tmp_path / "clip.mp4"
    f.write_bytes(b"a" * 100)
    first = media_signature(f)
    f.write_bytes(b"b" * 100)
    assert media_signature(f) != first and first.startswith(str(f))


def test_run_metadata_records_command_line_python_cuda_device():
    meta = run_metadata()
    assert {"argv", "python", "cuda", "device", "git_commit", "packages"} <= set(meta)
    assert meta["device"].startswith(("cpu", "cuda"))


def test_no_warning_for_regular_ivf():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        retrieve(x[:3], x, 5, IndexConfig(kind=IndexKind.IVF_FLAT, shard_size=500))
