"""Video-text / image-text data for VL-JEPA: records, manifests, datasets, collation.

Data flow: a source -> `Record`s (path or in-memory frames, optional start/end seconds, query,
target text) -> `VideoTextDataset` decodes (vljepa.video) and preprocesses
(vljepa.processing.VideoTransform) one clip per item -> `collate` stacks a batch
`{"pixel_values": (B, T, 3, S, S), "query": [...], "target": [...], "index": (B,)}`.
Cached X-encoder features (vljepa.cache) give `{"visual": (B, N, Dx), ...}` instead.

Sources:
- JSONL / CSV manifests with columns `path, target` and optional `query, start, end`
  (other columns are ignored; relative paths are resolved against the manifest's folder);
- Hugging Face `datasets` (`load_hf_records`), columns named by the caller;
- synthetic digit clips (`synthetic_records`, from vljepa.synthetic) for tests and the demo.

Unreadable media raise `vljepa.video.MediaError` naming the file, or with
`skip_bad_media=True` the item is dropped by `collate` and counted (`dataset.n_skipped`,
`batch["n_skipped"]`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vljepa.processing import VideoTransform
from vljepa.video import MediaError, check_num_frames, load_clip

REQUIRED_COLUMNS = ("path", "target")


@dataclass
class Record:
    """One training example; exactly one of `path` / `frames` (uint8 (T, 3, H, W)) is set."""

    target: str
    query: str = ""
    path: str | None = None
    start: float | None = None
    end: float | None = None
    frames: torch.Tensor | None = None


class ManifestError(ValueError):
    """A manifest that cannot be read into records; the message names the file, line and field."""


def _opt_seconds(row: dict, key: str, where: str) -> float | None:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ManifestError(f"{where}: {key}={value!r} must be a number of seconds")
    try:
        out = float(value)
    except ValueError:
        raise ManifestError(f"{where}: {key}={value!r} is not a number of seconds") from None
    if not math.isfinite(out) or out < 0:
        raise ManifestError(f"{where}: {key}={value!r} must be a finite number of seconds >= 0")
    return out


def _text_field(row: dict, key: str, where: str, required: bool) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ManifestError(f"{where}: missing or blank {key!r}; every row needs {list(REQUIRED_COLUMNS)} "
                                "and may have query, start, end")
        return ""
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {key}={value!r} must be a string ({type(value).__name__} given)")
    return value


def _record_from_row(row, where: str, root: Path) -> Record:
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected an object with keys {list(REQUIRED_COLUMNS)}, got "
                            f"{type(row).__name__} {str(row)[:60]}")
    target, path_text = _text_field(row, "target", where, True), _text_field(row, "path", where, True)
    start, end = _opt_seconds(row, "start", where), _opt_seconds(row, "end", where)
    if start is not None and end is not None and end <= start:
        raise ManifestError(f"{where}: end={end} must be after start={start}")
    path = Path(path_text)
    return Record(target=target, query=_text_field(row, "query", where, False),
                  path=str(path if path.is_absolute() else root / path), start=start, end=end)


def _json_rows(path: Path, text: str) -> list[tuple[str, object]]:
    rows = []
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                rows.append((f"{path}:{i + 1}", json.loads(line)))
            except (json.JSONDecodeError, RecursionError) as e:
                raise ManifestError(f"{path}:{i + 1}: not valid JSON ({e})") from None
    return rows


def read_manifest_rows(path: str | Path, columns: str = "path, target") -> list[tuple[str, object]]:
    """(`file:line`, row) of every row of a .jsonl (one JSON value a line) or .csv manifest; a
    ManifestError for a missing, unreadable, malformed or empty file (`columns`: what a row needs, for
    the message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    if path.suffix not in (".csv", ".jsonl", ".json"):
        raise ManifestError(f"manifest {path}: use a .jsonl or .csv file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix == ".csv":
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = [(f"{path}:{reader.line_num}", row) for row in reader]
        except csv.Error as e:
            raise ManifestError(f"manifest {path}: not valid CSV ({e})") from None
    else:
        rows = _json_rows(path, text)
    if not rows:
        raise ManifestError(f"manifest {path} has no rows; add one row per clip (columns {columns}, ...)")
    return rows


def load_manifest(path: str | Path) -> list[Record]:
    """Records from a .jsonl (one JSON object per line) or .csv manifest; ManifestError names the bad row."""
    path = Path(path)
    return [_record_from_row(row, where, path.parent) for where, row in read_manifest_rows(path)]


def write_manifest(records: list[Record], path: str | Path) -> Path:
    """Write path-based records as JSONL (atomically); inverse of load_manifest for absolute paths."""
    from jepa_common.io import atomic_write_text

    lines = [json.dumps({"path": r.path, "query": r.query, "target": r.target, "start": r.start, "end": r.end})
             for r in records]
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def load_hf_records(name: str, split: str, path_column: str, target_column: str,
                    query_column: str | None = None, start_column: str | None = None,
                    end_column: str | None = None) -> list[Record]:
    """Records from a Hugging Face dataset (hub id or local folder) whose `path_column` holds file paths."""
    import datasets

    ds = datasets.load_dataset(name, split=split)
    for col in [c for c in (path_column, target_column, query_column, start_column, end_column) if c]:
        if col not in ds.column_names:
            raise ValueError(f"dataset {name}[{split}] has no column {col!r}; columns: {ds.column_names}")
    columns = {"path": path_column, "target": target_column, "query": query_column, "start": start_column,
               "end": end_column}
    def fields(row: dict) -> dict:  # hub columns may hold ints (ids, labels): texts are their str()
        return {k: str(row[c]) if k in ("path", "target", "query") and row[c] is not None else row[c]
                for k, c in columns.items() if c}

    return [_record_from_row(fields(row), f"{name}[{split}] row {i}", Path(".")) for i, row in enumerate(ds)]


def synthetic_records(n: int, num_frames: int = 8, size: int = 32, seed: int = 0, long_videos: int = 0) -> list[Record]:
    """In-memory records of `n` synthetic digit clips, then the sliding windows of `long_videos` long
    synthetic videos (target = canonical caption of the clip / the window's dominant event, query = its question)."""
    from vljepa.synthetic import make_clip_dataset, make_window_dataset

    items = make_clip_dataset(n, n_frames=num_frames, size=size, seed=seed) if n else []
    items += make_window_dataset(long_videos, n_frames=num_frames, size=size, seed=seed)
    return [Record(target=c["caption"], query=c["query"], frames=c["frames"]) for c in items]


class VideoTextDataset(Dataset):
    """Decodes and preprocesses one record per item -> dict(pixel_values (T, 3, S, S), query, target, index)."""

    def __init__(self, records: list[Record], transform: VideoTransform, num_frames: int,
                 skip_bad_media: bool = False):
        if not records:
            raise ValueError("no records: the data source is empty; check the manifest / dataset / synthetic_n")
        self.records, self.transform, self.num_frames = records, transform, check_num_frames(num_frames)
        self.skip_bad_media = skip_bad_media
        self.n_skipped = 0  # per process / worker; batches also carry their own count

    def __len__(self) -> int:
        return len(self.records)

    def frames(self, i: int) -> torch.Tensor:
        """Raw uint8 frames (T, 3, H, W) of record i; 1-frame images are repeated to num_frames."""
        r = self.records[i]
        if r.frames is None:
            return load_clip(r.path, self.num_frames, r.start, r.end)
        return r.frames.expand(self.num_frames, -1, -1, -1) if r.frames.shape[0] == 1 else r.frames

    def __getitem__(self, i: int) -> dict | None:
        try:
            frames = self.frames(i)
        except MediaError:
            if not self.skip_bad_media:
                raise
            self.n_skipped += 1
            return None
        r = self.records[i]
        return {"pixel_values": self.transform(frames), "query": r.query, "target": r.target, "index": i}


def collate(items: list[dict | None]) -> dict:
    """Stack dataset items; None items (skipped media) are dropped and counted in `n_skipped`."""
    kept = [it for it in items if it is not None]
    if not kept:
        return {"n_skipped": len(items), "index": torch.zeros(0, dtype=torch.long), "query": [], "target": []}
    key = "pixel_values" if "pixel_values" in kept[0] else "visual"
    return {key: torch.stack([it[key] for it in kept]), "query": [it["query"] for it in kept],
            "target": [it["target"] for it in kept], "index": torch.tensor([it["index"] for it in kept]),
            "n_skipped": len(items) - len(kept)}
