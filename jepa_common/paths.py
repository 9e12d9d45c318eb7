"""Where the offline benchmark data lives.

The paper's datasets are kept in `../shared/data/` beside the checkout (see its README);
`JEPA_SHARED_DATA` overrides the location for installs elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The folder holding `llm-jepa/` and `nl-rx/`; a clear error when it is missing."""
    env = os.environ.get("JEPA_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"benchmark data folder {path} not found; set JEPA_SHARED_DATA to the folder that "
            "holds llm-jepa/ and nl-rx/ (shared/data beside the checkout)"
        )
    return path


def llm_jepa_data_file(name: str) -> Path:
    """Path of a chat-format JSONL set by name, e.g. 'synth_train' -> .../llm-jepa/synth_train.jsonl."""
    path = shared_data_dir() / "llm-jepa" / f"{name}.jsonl"
    if not path.is_file():
        have = sorted(p.stem for p in (shared_data_dir() / "llm-jepa").glob("*.jsonl"))
        raise FileNotFoundError(f"no data set {name!r} at {path}; available: {have}")
    return path
