"""Atomic file writes, content digests and run metadata for checkpoints and results files.

Every checkpoint, config and results file goes through `atomic_write_*`: the data is
written to a temporary file in the same folder (created with the process umask, like a plain
`open(path, "w")`) and renamed over the target, so a run killed mid-write never leaves a
truncated file behind. `file_digest` identifies a file by its content (whole for small files,
size + sampled blocks for large ones); `run_metadata` records what produced a result: package
versions, git commit, command line, Python, CUDA and the device.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "torch", "transformers", "accelerate", "peft", "datasets", "sentence-transformers",
    "faiss-cpu", "scikit-learn", "numpy", "jepa-lab",
)


def _create_tmp(folder: Path, name: str) -> Path:
    """A new empty file next to the target, created with mode 0666 minus the umask (mkstemp
    would force 0600, so results written for others to read would not be readable)."""
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def atomic_write(path: Path, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` then rename tmp over `path` (same filesystem, so atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_tmp(path.parent, path.name)
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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


FULL_HASH_BYTES = 64 * 2**20  # files up to this size are hashed whole
SAMPLE_BLOCKS, SAMPLE_BYTES = 64, 64 * 2**10  # larger ones: this many evenly spaced blocks + both ends


def file_digest(path: str | Path, full_limit: int = FULL_HASH_BYTES, blocks: int = SAMPLE_BLOCKS) -> str:
    """sha256 of a file's content: all of it up to `full_limit` bytes, else its size, its first and
    last blocks and `blocks` evenly spaced blocks (cheap for multi-GB weights; two trained models
    differ in almost every block, so sampling still tells them apart)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with path.open("rb") as f:
        if size <= full_limit:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return h.hexdigest()
        offsets = [0, size - SAMPLE_BYTES] + [(size - SAMPLE_BYTES) * i // (blocks + 1) for i in range(1, blocks + 1)]
        for off in sorted(set(offsets)):
            f.seek(off)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _device_info() -> dict[str, Any]:
    """Python, CUDA and the accelerator this process would use (torch is imported only if installed)."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return info
    info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["device"] = f"cuda: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    else:
        info["device"] = f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
    return info


def run_metadata() -> dict[str, Any]:
    """What every results.json records besides metrics: versions, code revision, command line and
    the machine (Python, CUDA, device)."""
    return {"packages": package_versions(), "git_commit": git_commit(), "argv": list(sys.argv),
            **_device_info()}
