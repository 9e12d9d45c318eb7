"""Atomic file writes and run metadata (package versions, git commit) for results files.

Every checkpoint, config and results file goes through `atomic_write_*`: the data is
written to a temporary file in the same folder and renamed over the target, so a run
killed mid-write never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "torch", "transformers", "accelerate", "peft", "datasets", "sentence-transformers",
    "faiss-cpu", "scikit-learn", "numpy", "jepa-lab",
)


def atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` then rename tmp over `path` (same filesystem, so atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(repo_dir: Path | None = None) -> str | None:
    """The current commit (with '-dirty' when the tree has changes), or None outside git."""
    cwd = repo_dir or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def run_metadata() -> dict[str, Any]:
    """What every results.json records besides metrics: versions and code revision."""
    return {"packages": package_versions(), "git_commit": git_commit()}
