"""Feature cache: run the frozen X-encoder once over a dataset and train from disk.

The X-encoder is frozen (DESIGN.md section 1), so its output for a clip never changes during
training; computing it once is what makes training affordable. Data flow:

    VideoTextDataset -> model.encode_video (no grad) -> visual tokens (n, N, Dx) [or pooled (n, 1, Dx)]
    -> shards `features-00000.safetensors` (key "visual") + `cache.json` (query, target, record
       index, X-encoder identity, dtype), every file written atomically
    -> CachedFeatureDataset -> collate -> {"visual": (B, N, Dx), ...} -> model(visual=...)

Training refuses a cache made by a different X-encoder (compared by config and source).

    vljepa cache-features --config recipes/vljepa/tiny_cpu.yaml --out runs/tiny_cache
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from jepa_common.io import atomic_write, atomic_write_json, run_metadata
from vljepa.data import collate

INDEX_FILE = "cache.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def x_encoder_identity(model) -> dict:
    """What makes two X-encoders interchangeable for a cache: config and weight source (or a
    weight checksum for encoders with no source)."""
    cfg = dict(model.config.x_encoder)
    for volatile in ("transformers_version", "dtype", "torch_dtype", "_name_or_path", "architectures"):
        cfg.pop(volatile, None)
    out = {"config": cfg, "name_or_path": model.config.x_encoder_name_or_path}
    if out["name_or_path"] is None:  # random (tiny) encoders: only the weights tell them apart
        digest = hashlib.sha256()
        for tensor in model.x_encoder.state_dict().values():
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
        out["weights_sha256"] = digest.hexdigest()
    return out


def _save_shard(path: Path, visual: list[torch.Tensor]) -> None:
    tensors = {"visual": torch.cat(visual).contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


@torch.no_grad()
def cache_features(model, dataset: Dataset, out_dir: str | Path, batch_size: int = 8, shard_size: int = 1024,
                   pooled: bool = False, dtype: str = "float32", num_workers: int = 0) -> Path:
    """Encode every clip of `dataset` with the frozen X-encoder; returns the cache folder."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    shards, pending, meta = [], [], {"query": [], "target": [], "index": []}
    n_skipped, device = 0, next(model.parameters()).device
    model.eval()
    for batch in tqdm(loader, desc="cache-features"):
        n_skipped += batch["n_skipped"]
        if not batch["query"]:
            continue
        visual = model.encode_video(batch["pixel_values"].to(device))  # (B, N, Dx)
        if pooled:
            visual = visual.mean(dim=1, keepdim=True)  # (B, 1, Dx)
        pending.extend(visual.to(DTYPES[dtype]).cpu().split(1))
        for key in meta:
            meta[key].extend(batch[key].tolist() if key == "index" else batch[key])
        while len(pending) >= shard_size:
            name = f"features-{len(shards):05d}.safetensors"
            _save_shard(out_dir / name, pending[:shard_size])
            shards.append({"file": name, "count": shard_size})
            pending = pending[shard_size:]
    if pending:
        name = f"features-{len(shards):05d}.safetensors"
        _save_shard(out_dir / name, pending)
        shards.append({"file": name, "count": len(pending)})
    atomic_write_json(out_dir / INDEX_FILE, {
        "n": len(meta["index"]), "n_skipped": n_skipped, "pooled": pooled, "dtype": dtype, "shards": shards,
        "num_frames": getattr(dataset, "num_frames", None),  # recorded into models trained on this cache
        "x_encoder": x_encoder_identity(model), **meta, "metadata": run_metadata()})
    return out_dir


class CachedFeatureDataset(Dataset):
    """Items `{"visual": (N, Dx), query, target, index}` read lazily (memory-mapped) from a cache."""

    def __init__(self, cache_dir: str | Path, model=None):
        self.dir = Path(cache_dir)
        if not (self.dir / INDEX_FILE).is_file():
            raise FileNotFoundError(f"no {INDEX_FILE} in {self.dir}; create the cache with "
                                    "`vljepa cache-features --config <recipe> --out <dir>`")
        self.info = json.loads((self.dir / INDEX_FILE).read_text())
        # compare through JSON, as stored (int dict keys become strings, tuples lists)
        if model is not None and json.loads(json.dumps(x_encoder_identity(model), default=str)) != self.info["x_encoder"]:
            raise ValueError(f"cache {self.dir} was made by a different X-encoder than this model's "
                             f"({self.info['x_encoder']['name_or_path']} vs {model.config.x_encoder_name_or_path}); "
                             "re-run vljepa cache-features with this model")
        self._where = [(s, j) for s, shard in enumerate(self.info["shards"]) for j in range(shard["count"])]
        self._handles: dict[int, object] = {}

    def __len__(self) -> int:
        return self.info["n"]

    def _shard(self, s: int):
        if s not in self._handles:  # opened lazily, so DataLoader workers each get their own handle
            self._handles[s] = safe_open(str(self.dir / self.info["shards"][s]["file"]), framework="pt")
        return self._handles[s]

    def __getitem__(self, i: int) -> dict:
        s, j = self._where[i]
        visual = self._shard(s).get_slice("visual")[j:j + 1][0]  # (N, Dx)
        return {"visual": visual.float(), "query": self.info["query"][i], "target": self.info["target"][i],
                "index": self.info["index"][i]}
