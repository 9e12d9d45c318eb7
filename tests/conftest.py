"""Shared pytest fixtures: offline mode, tiny tokenizers and models of the real classes.

Every test runs with HF_HUB_OFFLINE=1 so that a stray hub call fails at once instead of
hanging; models are built from configs (jepa_common.tiny), never downloaded.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer  # noqa: E402
from llm_jepa.datasets import read_packaged_lines  # noqa: E402

# Tiny models are dominated by per-op overhead: one thread is faster and avoids
# oversubscription when tests spawn torchrun workers on a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synth_records() -> list[dict]:
    """The first 256 NL-RX-SYNTH training records (real data, packaged in llm_jepa/datasets)."""
    return [json.loads(line) for line in read_packaged_lines("synth_train")[:256]]


@pytest.fixture(scope="session")
def tokenizer_corpus(synth_records) -> list[str]:
    return [m["content"] for r in synth_records for m in r["messages"]]


@pytest.fixture(scope="session")
def make_tokenizer(tokenizer_corpus):
    """Factory: make_tokenizer('llama' | 'gemma' | 'gemma3' | 'qwen') -> tiny tokenizer (cached)."""
    cache: dict[str, object] = {}

    def make(family: str):
        if family not in cache:
            cache[family] = tiny_tokenizer(family, tokenizer_corpus)
        return cache[family]

    return make


@pytest.fixture
def make_model(make_tokenizer):
    """Factory: make_model(family, **kw) -> (random tiny causal LM of the real class, tokenizer)."""

    def make(family: str, **kw):
        tok = make_tokenizer(family)
        return tiny_causal_lm(family, tok, **kw), tok

    return make
