"""CIDEr for generated captions, through pycocoevalcap's `Cider` (CIDEr-D, as in COCO).

CIDEr weighs n-grams by an IDF computed over the *reference set of the call*, so a set of
captions must be scored in ONE call: scoring captions one by one gives every n-gram an IDF of
zero (the score of a single item is always 0). `cider_score` therefore takes the whole set.

Text is normalised here (lower case, punctuation dropped, whitespace split) instead of with
pycocoevalcap's PTBTokenizer, which needs a Java runtime.

    mean, per_item = cider_score([["a red digit moves left"], ["a blue 7 grows"]], ["a red digit moving left", "a 7"])

`CorpusCider` computes the same numbers for many (item, candidate) pairs at once and for resampled
corpora (bootstrap confidence intervals), re-deriving the IDF of each resample.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from pycocoevalcap.cider.cider import Cider
from scipy import sparse

_PUNCT = re.compile(r"[^\w\s]")


def normalize_caption(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace (a Java-free PTB-tokenizer stand-in)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _check_references(i: int, refs: Sequence[str]) -> None:
    if isinstance(refs, str) or not refs:
        raise ValueError(f"item {i}: references must be a non-empty list of strings, got {refs!r}")


def cider_score(references: Sequence[Sequence[str]], candidates: Sequence[str]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D of `candidates[i]` against `references[i]` (one or more strings each).

    Returns (mean score, per-item scores). All items share one IDF table, so pass the whole
    evaluation set at once."""
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} reference lists but {len(candidates)} candidates; "
                         "pass one candidate per item")
    if not candidates:
        raise ValueError("cider_score needs at least one item")
    if len(candidates) == 1:
        raise ValueError("CIDEr of a single item is always 0 (its IDF is log(1/1)); score the whole set at once")
    gts, res = {}, {}
    for i, (refs, cand) in enumerate(zip(references, candidates)):
        _check_references(i, refs)
        gts[i] = [normalize_caption(r) for r in refs]
        res[i] = [normalize_caption(cand)]
    mean, scores = Cider().compute_score(gts, res)
    return float(mean), [float(s) for s in scores]


class CorpusCider:
    """CIDEr-D of candidates against a fixed reference corpus, vectorised over resampled corpora.

    The arithmetic of pycocoevalcap's `CiderScorer` (tested equal to `cider_score`): n-grams 1-4 by
    its `precook`, idf = log(N) - log(max(1, df)) with df counted over corpus items, clipped tf-idf
    cosine per n-gram order, Gaussian length penalty (sigma 6, length = its bigram count), mean over
    orders and references, times 10. `weights` (B, N) says how often each item occurs in B resampled
    corpora (a bootstrap): df and N follow, exactly as if pycocoevalcap scored each resampled list,
    so a confidence interval re-derives the IDF for every resample instead of freezing it.

        cc = CorpusCider(references)                       # one list of references per item
        s = cc.scores([(0, "a red 3 moves left"), (1, "a blue 7 grows")], weights)  # (B, 2)
        corpus_cider = (weights * per_item).sum(1) / weights.sum(1)
    """

    def __init__(self, references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0):
        from pycocoevalcap.cider.cider_scorer import precook

        for i, refs in enumerate(references):
            _check_references(i, refs)
        self._precook, self.n, self.sigma = precook, n, sigma
        self.refs = [[precook(normalize_caption(r), n) for r in refs] for refs in references]
        self.vocab: dict[tuple, int] = {}
        rows, cols = [], []
        for i, refs in enumerate(self.refs):
            for gram in {g for r in refs for g in r}:
                rows.append(i)
                cols.append(self.vocab.setdefault(gram, len(self.vocab)))
        self.presence = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(self.refs), len(self.vocab)))

    def _idf(self, weights: np.ndarray) -> np.ndarray:
        """(B, V + 1): idf per resample; the last column is for n-grams outside the references (df 0)."""
        df = np.asarray((self.presence.T @ weights.T).T)  # (B, V)
        log_n = np.log(weights.sum(axis=1, keepdims=True))  # (B, 1)
        return np.concatenate([log_n - np.log(np.maximum(1.0, df)), log_n], axis=1)

    def _vec(self, counts: dict, idf: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, float]:
        """tf-idf of one cooked sentence under every resample: ({gram: column}, vec (B, G), norm (B, n), length)."""
        grams = list(counts)
        cols = np.array([self.vocab.get(g, -1) for g in grams], dtype=np.int64)  # -1: the df-0 column
        vec = np.array([counts[g] for g in grams], dtype=np.float64) * idf[:, cols]  # (B, G)
        order = np.array([len(g) - 1 for g in grams], dtype=np.int64)
        norm = np.sqrt(np.stack([(vec[:, order == k] ** 2).sum(axis=1) for k in range(self.n)], axis=1))  # (B, n)
        length = float(sum(c for g, c in counts.items() if len(g) == 2))  # pycocoevalcap's quirk: bigram count
        return {g: i for i, g in enumerate(grams)}, vec, norm, length

    def _sim(self, hyp: tuple, ref: tuple) -> np.ndarray:
        (h_idx, h_vec, h_norm, h_len), (r_idx, r_vec, r_norm, r_len) = hyp, ref
        val = np.zeros_like(h_norm)  # (B, n)
        for gram, i in h_idx.items():
            j = r_idx.get(gram)
            if j is not None:
                val[:, len(gram) - 1] += np.minimum(h_vec[:, i], r_vec[:, j]) * r_vec[:, j]
        denom = h_norm * r_norm
        val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
        return val * np.exp(-((h_len - r_len) ** 2) / (2 * self.sigma ** 2))

    def scores(self, pairs: Sequence[tuple[int, str]], weights: np.ndarray | None = None) -> np.ndarray:
        """(B, P) CIDEr-D of each (item index, candidate) pair in each resampled corpus (B = 1 and
        every item once when `weights` is None)."""
        w = np.ones((1, len(self.refs))) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != len(self.refs):
            raise ValueError(f"weights must be (B, {len(self.refs)}) item counts, got shape {w.shape}")
        idf = self._idf(w)
        ref_vecs: dict[int, list] = {}
        out = np.zeros((len(w), len(pairs)))
        for p, (item, cand) in enumerate(pairs):
            if item not in ref_vecs:
                ref_vecs[item] = [self._vec(r, idf) for r in self.refs[item]]
            hyp = self._vec(self._precook(normalize_caption(cand), self.n), idf)
            total = sum(self._sim(hyp, ref) for ref in ref_vecs[item])  # (B, n)
            out[:, p] = total.mean(axis=1) / len(ref_vecs[item]) * 10.0
        return out
