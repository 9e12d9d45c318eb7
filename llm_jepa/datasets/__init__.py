"""The LLM-JEPA paper's chat-format data sets, shipped inside the package (gzip-compressed JSONL).

Each `<name>.jsonl.gz` holds one `{"messages": [system, user, assistant]}` record a line; the
user text is the Text view and the assistant text the Code view (arXiv:2509.14252). The files
are read through `importlib.resources`, so they load from an editable checkout and from an
installed wheel alike, with no network and nothing outside the package:

    from llm_jepa.datasets import packaged_names, read_packaged_lines
    packaged_names()                      # ['gsm8k_test', 'gsm8k_train', ..., 'yelp_test']
    lines = read_packaged_lines("synth_test")

Provenance and licences (see README.md beside this file): the sets come as published with the
LLM-JEPA paper's code (Apache-2.0, LICENSE-LLM-JEPA); NL-RX (synth_*, turk_*) is MIT
(LICENSE-NL-RX); gsm8k_train was converted from the GSM8K release (MIT, LICENSE-GSM8K).
"""

from __future__ import annotations

import gzip
from importlib import resources
from importlib.resources.abc import Traversable

SUFFIX = ".jsonl.gz"


def _root() -> Traversable:
    return resources.files(__name__)


def packaged_names() -> list[str]:
    """Short names of the packaged sets, sorted ('synth_train', 'gsm8k_test', ...)."""
    return sorted(f.name[: -len(SUFFIX)] for f in _root().iterdir() if f.name.endswith(SUFFIX))


def packaged_file(name: str) -> Traversable | None:
    """The packaged file for a short name, or None when there is no such set."""
    f = _root().joinpath(name + SUFFIX)
    return f if f.is_file() else None


def read_packaged_lines(name: str) -> list[str]:
    """The non-empty JSON lines of a packaged set; KeyError naming the valid names when unknown."""
    f = packaged_file(name)
    if f is None:
        raise KeyError(f"no packaged data set {name!r}; packaged sets: {', '.join(packaged_names())}")
    with f.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        return [line for line in text.read().splitlines() if line.strip()]
