"""Dataset adapters for labelled video evaluation sets in the layouts people have on disk.

Data flow: a layout -> `LabelledVideos` (paths, integer labels, class names) -> `clips(...)`
decodes each file with `vljepa.video.load_clip` (PyAV; stills repeated to a clip), preprocesses it with the model's
`VideoTransform`, and yields batches `(pixel_values (B, T, 3, S, S), labels (B,))`.

Layouts:
- a folder per class (UCF-101, Kinetics, HMDB): `root/<class name>/<video>`; class names are
  the sorted folder names unless a label list (e.g. `eval.classify.load_label_list("ucf101")`)
  fixes the order;
- a CSV or JSONL manifest with columns `path,label` (label = class name or integer id; relative
  paths resolve against the manifest's folder).

    data = from_folder("data/ucf101/test")
    for pixel_values, labels in data.clips(transform, num_frames=8, batch_size=16): ...
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vljepa.data import ManifestError, read_manifest_rows
from vljepa.video import IMAGE_SUFFIXES, load_clip

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg"}


@dataclass
class LabelledVideos:
    """Media paths with integer labels into `class_names`."""

    paths: list[str]
    labels: list[int]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def clips(self, transform, num_frames: int, batch_size: int = 16) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Decoded, preprocessed batches: (pixel_values (B, T, 3, S, S), labels (B,))."""
        for s in tqdm(range(0, len(self), batch_size), desc="decode + embed clips", unit="batch"):
            frames = [transform(load_clip(p, num_frames)) for p in self.paths[s:s + batch_size]]  # stills repeated
            yield torch.stack(frames), torch.tensor(self.labels[s:s + batch_size])


def _resolve_classes(found: list[str], class_names: list[str] | None, where: str) -> list[str]:
    if class_names is None:
        return sorted(found)
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise ValueError(f"{where}: classes {unknown[:5]} are not in the given label list; "
                         "check the folder names / labels or pass the matching list")
    return list(class_names)


def from_folder(root: str | Path, class_names: list[str] | None = None) -> LabelledVideos:
    """`root/<class>/<file>` -> LabelledVideos (videos and images, sorted for determinism)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected root/<class name>/<video files>")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    classes = _resolve_classes([p.name for p in folders], class_names, str(root))
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = [], []
    for folder in folders:
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
                paths.append(str(f))
                labels.append(index[folder.name])
    if not paths:
        raise ValueError(f"no video or image files under {root}/<class>/; supported: "
                         f"{sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES)}")
    return LabelledVideos(paths, labels, classes)


def _label_of(row, where: str) -> str | int:
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected an object with keys 'path' and 'label', got {type(row).__name__}")
    missing = [k for k in ("path", "label") if k not in row]
    if missing:
        raise ManifestError(f"{where}: needs columns 'path' and 'label', missing {missing}")
    label, path = row["label"], row["path"]
    if not isinstance(path, str) or not path.strip():
        raise ManifestError(f"{where}: path={path!r} must be a non-empty string")
    if isinstance(label, bool) or not isinstance(label, int | str) or (isinstance(label, str) and not label.strip()):
        raise ManifestError(f"{where}: label={label!r} must be a class name or an integer class id")
    return label


def from_manifest(path: str | Path, class_names: list[str] | None = None) -> LabelledVideos:
    """CSV/JSONL with `path,label` columns -> LabelledVideos; integer labels need `class_names`."""
    path = Path(path)
    rows = read_manifest_rows(path, columns="path, label")
    raw = [str(_label_of(row, where)).strip() for where, row in rows]
    if all(re.fullmatch(r"-?[0-9]+", label) for label in raw):  # ASCII digits only: int("²") fails
        if class_names is None:
            raise ManifestError(f"{path}: integer labels need a class-name list (e.g. --set data.labels=ucf101)")
        labels = [int(label) for label in raw]
        bad = [(where, label) for (where, _), label in zip(rows, labels) if not 0 <= label < len(class_names)]
        if bad:
            raise ManifestError(f"{bad[0][0]}: label id {bad[0][1]} outside [0, {len(class_names)}) "
                                f"({len(bad)} such rows)")
        classes = list(class_names)
    else:
        try:
            classes = _resolve_classes(raw, class_names, str(path))
        except ValueError as e:
            raise ManifestError(str(e)) from None
        labels = [classes.index(label) for label in raw]
    paths = [str(p if Path(p).is_absolute() else path.parent / p) for p in (r["path"] for _, r in rows)]
    return LabelledVideos(paths, labels, classes)


def load_labelled(source: str | Path, class_names: list[str] | None = None) -> LabelledVideos:
    """A class-per-folder directory or a CSV/JSONL manifest."""
    return from_folder(source, class_names) if Path(source).is_dir() else from_manifest(source, class_names)
