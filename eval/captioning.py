"""CIDEr for generated captions, through pycocoevalcap's `Cider` (CIDEr-D, as in COCO).

CIDEr weighs n-grams by an IDF computed over the *reference set of the call*, so a set of
captions must be scored in ONE call: scoring captions one by one gives every n-gram an IDF of
zero (the score of a single item is always 0). `cider_score` therefore takes the whole set.

Text is normalised here (lower case, punctuation dropped, whitespace split) instead of with
pycocoevalcap's PTBTokenizer, which needs a Java runtime.

    mean, per_item = cider_score([["a red digit moves left"]], ["a red digit moving left"])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pycocoevalcap.cider.cider import Cider

_PUNCT = re.compile(r"[^\w\s]")


def normalize_caption(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace (a Java-free PTB-tokenizer stand-in)."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


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
        if isinstance(refs, str) or not refs:
            raise ValueError(f"item {i}: references must be a non-empty list of strings, got {refs!r}")
        gts[i] = [normalize_caption(r) for r in refs]
        res[i] = [normalize_caption(cand)]
    mean, scores = Cider().compute_score(gts, res)
    return float(mean), [float(s) for s in scores]
