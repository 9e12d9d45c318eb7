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
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vljepa.processing import VideoTransform
from vljepa.video import MediaError, load_media

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


def _opt_float(value) -> float | None:
    return None if value in (None, "") else float(value)


def _record_from_row(row: dict, where: str, root: Path) -> Record:
    missing = [c for c in REQUIRED_COLUMNS if row.get(c) in (None, "")]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; every row needs {list(REQUIRED_COLUMNS)} "
                         "and may have query, start, end")
    path = Path(row["path"])
    return Record(target=str(row["target"]), query=str(row["query"]) if row.get("query") else "",
                  path=str(path if path.is_absolute() else root / path),
                  start=_opt_float(row.get("start")), end=_opt_float(row.get("end")))


def load_manifest(path: str | Path) -> list[Record]:
    """Records from a .jsonl (one JSON object per line) or .csv manifest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i + 1}: not valid JSON ({e})") from None
    else:
        raise ValueError(f"manifest {path}: use a .jsonl or .csv file")
    return [_record_from_row(r, f"{path}:{i + 1}", path.parent) for i, r in enumerate(rows)]


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
    return [Record(target=str(row[target_column]), query=str(row[query_column]) if query_column else "",
                   path=str(row[path_column]), start=_opt_float(row[start_column]) if start_column else None,
                   end=_opt_float(row[end_column]) if end_column else None) for row in ds]


def synthetic_records(n: int, num_frames: int = 8, size: int = 32, seed: int = 0) -> list[Record]:
    """In-memory records of synthetic digit clips (target = canonical caption, query = its question)."""
    from vljepa.synthetic import make_clip_dataset

    return [Record(target=c["caption"], query=c["query"], frames=c["frames"])
            for c in make_clip_dataset(n, n_frames=num_frames, size=size, seed=seed)]


class VideoTextDataset(Dataset):
    """Decodes and preprocesses one record per item -> dict(pixel_values (T, 3, S, S), query, target, index)."""

    def __init__(self, records: list[Record], transform: VideoTransform, num_frames: int,
                 skip_bad_media: bool = False):
        self.records, self.transform, self.num_frames = records, transform, num_frames
        self.skip_bad_media = skip_bad_media
        self.n_skipped = 0  # per process / worker; batches also carry their own count

    def __len__(self) -> int:
        return len(self.records)

    def frames(self, i: int) -> torch.Tensor:
        """Raw uint8 frames (T, 3, H, W) of record i; 1-frame images are repeated to num_frames."""
        r = self.records[i]
        frames = r.frames if r.frames is not None else load_media(r.path, self.num_frames, r.start, r.end)
        if frames.shape[0] == 1 and self.num_frames > 1:
            frames = frames.expand(self.num_frames, -1, -1, -1)
        return frames

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
