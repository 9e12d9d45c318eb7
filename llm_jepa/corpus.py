"""The NL-RX-free general corpus for pretraining a small LM (`llm_jepa.pretrain`), with its exclusions.

Data flow: the packaged chat sets that are NOT NL-RX (GSM8K, Spider, Rotten Tomatoes, NQ-Open,
Yelp, HellaSwag; every split that ships) -> one document per record (its message list, rendered
later with the tokenizer's chat template) + the NL-RX-SYNTH *training* descriptions (system + user
turn only, never the regex) -> exclusions -> a seeded document-level train / held-out split.

Exclusions (so the finetuning test in docs/llm_jepa_reproduction.md measures something the
pretrained model never saw): no NL-RX test record (synth_test, turk_test); no NL-RX regex (the
assistant turn of every synth/turk train and test record); a training description is dropped when
its text equals a test description or its regex is also a test regex (NL-RX reuses regexes across
splits); and any document that contains an NL-RX regex of `MIN_LEAK_CHARS` or more characters
verbatim is dropped (`find_leaks`; shorter regexes such as `dog` or `[0-9]` are ordinary text).

    train_docs, heldout_docs, stats = build_corpus(heldout_frac=0.02, seed=0)
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from llm_jepa.data import load_records, split_record

GENERAL_SETS = ("gsm8k_train", "gsm8k_test", "spider_train", "spider_test", "rotten_tomatoes_train",
                "rotten_tomatoes_test", "nq_open_train", "nq_open_test", "yelp_test", "hellaswag_test")
NLRX_TRAIN = "synth_train"  # descriptions only
NLRX_TEST = ("synth_test", "turk_test")
NLRX_ALL = ("synth_train", "synth_test", "turk_train", "turk_test")
MIN_LEAK_CHARS = 8


@dataclass
class CorpusStats:
    """What went into the corpus and what was excluded (written next to the pretrained model)."""

    documents: dict[str, int] = field(default_factory=dict)  # per source set
    dropped_test_description: int = 0
    dropped_test_regex: int = 0
    dropped_leaking_documents: int = 0
    train_documents: int = 0
    heldout_documents: int = 0


def nlrx_regexes() -> set[str]:
    """Every NL-RX regex: the assistant turns of the synth and turk train and test splits."""
    return {split_record(r)[2] for name in NLRX_ALL for r in load_records(name)}


def find_leaks(texts: list[str], needles: set[str], min_chars: int = MIN_LEAK_CHARS) -> list[int]:
    """Indices of `texts` that contain any needle of >= `min_chars` characters verbatim.

    Scans each text once per distinct needle start character and looks its `min_chars`-character
    window up in a table of needle prefixes (a cheap Aho-Corasick stand-in: ~1 s for 13 MB)."""
    by_prefix: dict[str, list[str]] = {}
    for n in needles:
        if len(n) >= min_chars:
            by_prefix.setdefault(n[:min_chars], []).append(n)
    firsts = {p[0] for p in by_prefix}
    hits = []
    for i, text in enumerate(texts):
        if any(_contains_any(text, ch, by_prefix, min_chars) for ch in firsts if ch in text):
            hits.append(i)
    return hits


def _contains_any(text: str, ch: str, by_prefix: dict[str, list[str]], k: int) -> bool:
    pos = text.find(ch)
    while pos != -1:
        cands = by_prefix.get(text[pos:pos + k])
        if cands and any(text.startswith(c, pos) for c in cands):
            return True
        pos = text.find(ch, pos + 1)
    return False


def _nlrx_description_docs(stats: CorpusStats) -> list[list[dict]]:
    test = [split_record(r) for name in NLRX_TEST for r in load_records(name)]  # (system, user, regex)
    test_desc, test_rx = {t[1] for t in test}, {t[2] for t in test}
    docs = []
    for rec in load_records(NLRX_TRAIN):
        system, user, regex = split_record(rec)
        if user in test_desc:
            stats.dropped_test_description += 1
        elif regex in test_rx:
            stats.dropped_test_regex += 1
        else:
            docs.append([{"role": "system", "content": system}, {"role": "user", "content": user}])
    return docs


@functools.lru_cache(maxsize=2)  # ~5 s to build; callers must not mutate the lists
def build_corpus(heldout_frac: float = 0.02, seed: int = 0) -> tuple[list[list[dict]], list[list[dict]], CorpusStats]:
    """(train documents, held-out documents, stats); a document is a list of chat messages."""
    if not 0.0 < heldout_frac < 0.5:
        raise ValueError(f"heldout_frac={heldout_frac}; use a small fraction such as 0.02")
    stats = CorpusStats()
    docs: list[list[dict]] = []
    for name in GENERAL_SETS:
        recs = [r["messages"] for r in load_records(name)]
        stats.documents[name] = len(recs)
        docs += recs
    nlrx = _nlrx_description_docs(stats)
    stats.documents[f"{NLRX_TRAIN} (descriptions only)"] = len(nlrx)
    docs += nlrx
    leaks = set(find_leaks(["\n".join(m["content"] for m in d) for d in docs], nlrx_regexes()))
    stats.dropped_leaking_documents = len(leaks)
    docs = [d for i, d in enumerate(docs) if i not in leaks]
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_held = max(1, int(round(heldout_frac * len(docs))))
    held, train = [docs[i] for i in order[:n_held]], [docs[i] for i in order[n_held:]]
    stats.train_documents, stats.heldout_documents = len(train), len(held)
    return train, held, stats
