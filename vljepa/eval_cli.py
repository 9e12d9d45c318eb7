"""`vljepa eval retrieval | classify | compare`: evaluation runs that write versioned results.

This is the model side of evaluation: it turns a VL-JEPA model (or saved embeddings) and media
into arrays, then scores them with the model-agnostic metrics of `eval/`.

Data flow: typed config (defaults <- `--config recipe.yaml` <- `--set a.b=c`; `--help` lists
every key) -> a model directory (`VLJepaModel.from_pretrained`, moved to the GPU when there is
one) or a folder of saved embeddings -> clips from the synthetic digit set, a class-per-folder
tree or a CSV/JSONL manifest, decoded one batch at a time (progress bar) at the frame count and
query the model was trained with -> embeddings (`vljepa.tasks`) -> `eval.retrieval` /
`eval.classify` -> `eval.results.write_results` (results.json + results.md, plus the embeddings
and a confusion plot) in `out` (default `runs/vljepa_eval/<task>`). Bad configs, manifests and
media end with a one-line error.

Saved-embedding folders (`--set embeddings=DIR`, no model needed):
- retrieval: `video.npy` (V, D), `text.npy` (T, D), `text_to_video.npy` (T,) int;
- classify: `video.npy` (N, D), `labels.npy` (N,), `classes.npy` (C, D), `class_names.txt`.
A model run writes exactly these files into `out`, so a baseline can be scored the same way.

    vljepa eval retrieval --set model=runs/tiny --set data.source=synthetic --set out=runs/eval_ret
    vljepa eval classify --set model=runs/tiny --set data.source=data/ucf101 --set data.labels=ucf101
    vljepa eval compare runs/a/results.json runs/b/results.json
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eval.classify import load_label_list, plot_confusion, zero_shot_from_embeddings
from eval.results import (
    compare_table,
    fingerprint_arrays,
    fingerprint_items,
    load_results,
    media_signature,
    model_identity,
    write_results,
)
from eval.retrieval import IndexConfig, evaluate_retrieval
from jepa_common.config import ConfigError, config_help, load_config, to_dict
from vljepa.data import ManifestError
from vljepa.video import MediaError


@dataclass
class EvalData:
    source: str = "synthetic"  # "synthetic", a class-per-folder tree, or a CSV/JSONL manifest
    n: int = 100  # synthetic clips
    seed: int = 1  # synthetic seed (the demo trains on seed 0)
    size: int = 32  # synthetic frame size
    num_frames: int = 0  # 0 = the frame count the model was trained with (else the X-encoder's)
    labels: str = ""  # classify: bundled list (ucf101, kinetics400, ssv2), a .txt file, or "" (folder names)


@dataclass
class EvalConfig:
    model: str = ""  # saved VL-JEPA directory
    embeddings: str = ""  # or a folder of saved embeddings (see module docstring)
    data: EvalData = field(default_factory=EvalData)
    query: str = ""  # query for the clip predictions ("" = the model's training query, default_query)
    templates: list[str] = field(default_factory=lambda: ["{}"])  # classify: prompt templates
    ks: list[int] = field(default_factory=list)  # [] = (1, 5, 10) for retrieval, (1, 5) for classify
    index: IndexConfig = field(default_factory=IndexConfig)
    rank_depth: int = 0  # retrieval: 0 = rank the whole gallery (exact ranks); else search this deep
    batch_size: int = 16
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:1 ...
    out: str = ""  # "" = runs/vljepa_eval/<task> (llm-jepa eval writes under runs/llm_jepa_eval/)


def _check(cfg: EvalConfig) -> None:
    if bool(cfg.model) == bool(cfg.embeddings):
        raise ConfigError("set exactly one of model=DIR (a saved VL-JEPA) or embeddings=DIR (saved .npy files)")
    if cfg.data.n < 1 or cfg.batch_size < 1 or cfg.data.num_frames < 0:
        raise ConfigError(f"data.n={cfg.data.n} and batch_size={cfg.batch_size} must be >= 1, "
                          f"data.num_frames={cfg.data.num_frames} >= 0 (0 = the model's own)")


def _load_model(path: str, device: str):
    from vljepa.modeling import VLJepaModel

    target = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        model = VLJepaModel.from_pretrained(path)
    except OSError as e:  # a mistyped folder otherwise ends in the hub's "Repo id must be in the form ..."
        if Path(path).exists():
            raise
        raise FileNotFoundError(f"model={path!r} is not a saved VL-JEPA directory (nor a loadable hub id: "
                                f"{' '.join(str(e).split())[:160]})") from e
    return model.eval().to(target)


def _num_frames(model, cfg: EvalData) -> int:
    return model.config.inference_num_frames(cfg.num_frames or None)


def _query(model, cfg: EvalConfig) -> str:
    return model.config.inference_query(cfg.query or None)


def _synthetic(cfg: EvalData, num_frames: int) -> list[dict]:
    from vljepa.synthetic import make_clip_dataset

    return make_clip_dataset(cfg.n, n_frames=num_frames, size=cfg.size, seed=cfg.seed)


def _pixel_batches(model, clips: list, batch_size: int, load=None):
    """Preprocessed batches (B, T, 3, S, S), decoded one batch at a time (`load(item)` -> uint8
    frames; in-memory frames when None): memory holds one batch, never the whole set."""
    from tqdm.auto import tqdm

    from vljepa.processing import VideoTransform

    transform = VideoTransform.for_encoder(model.config.x_encoder)
    for s in tqdm(range(0, len(clips), batch_size), desc="decode + embed clips", unit="batch"):
        yield torch.stack([transform(load(c) if load else c) for c in clips[s:s + batch_size]])


def _clip_embeddings(model, batches, query: str) -> np.ndarray:
    from vljepa.tasks import video_embeddings

    return torch.cat([video_embeddings(model, pixel_values=pv, query=query) for pv in batches]).numpy()


def _manifest_videos(cfg: EvalConfig) -> tuple[list[tuple], list[list[str]]]:
    """(unique (path, start, end) clips, their captions) from a retrieval manifest."""
    from vljepa.data import load_manifest

    by_video: dict[tuple, list[str]] = {}
    for r in load_manifest(cfg.data.source):  # several captions of one clip -> one video, several positives
        by_video.setdefault((r.path, r.start, r.end), []).append(r.target)
    return list(by_video), list(by_video.values())


def _retrieval_inputs(cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, list[str], list[str]]:
    """(video (V, D), text (T, D), text_to_video (T,), dataset name, texts, media signatures)."""
    if cfg.embeddings:
        d = Path(cfg.embeddings)
        return (np.load(d / "video.npy"), np.load(d / "text.npy"), np.load(d / "text_to_video.npy"), str(d),
                [], [])
    from vljepa.tasks import text_embeddings
    from vljepa.video import load_clip

    model = _load_model(cfg.model, cfg.device)
    n = _num_frames(model, cfg.data)
    if cfg.data.source == "synthetic":
        clips = _synthetic(cfg.data, n)
        batches, media = _pixel_batches(model, [c["frames"] for c in clips], cfg.batch_size), []
        captions = [c["captions"] for c in clips]
    else:
        items, captions = _manifest_videos(cfg)
        batches = _pixel_batches(model, items, cfg.batch_size, lambda it: load_clip(it[0], n, it[1], it[2]))
        media = [f"{media_signature(p)}:{s}:{e}" for p, s, e in items]
    texts = [t for caps in captions for t in caps]
    t2v = np.array([v for v, caps in enumerate(captions) for _ in caps], dtype=np.int64)
    video = _clip_embeddings(model, batches, _query(model, cfg))
    return video, text_embeddings(model, texts).numpy(), t2v, cfg.data.source, texts, media


def run_retrieval(cfg: EvalConfig) -> dict:
    video, text, t2v, name, texts, media = _retrieval_inputs(cfg)
    # default ks: 1, 5, 10 as far as the smaller gallery allows (an explicit deeper k is an error)
    ks = tuple(cfg.ks or [k for k in (1, 5, 10) if k <= min(len(video), len(text))] or [1])
    metrics = evaluate_retrieval(text, video, t2v, ks, cfg.index, rank_depth=cfg.rank_depth or None)
    out = _out_dir(cfg, "retrieval")
    for fname, arr in (("video.npy", video), ("text.npy", text), ("text_to_video.npy", t2v)):
        np.save(out / fname, arr)
    # saved embeddings are identified by their bytes; a model run by the clips' media and annotations
    fingerprint = fingerprint_arrays(video, text, t2v) if cfg.embeddings else \
        fingerprint_items([name, *media, *texts, *map(str, t2v.tolist())])
    dataset = {"name": name, "n": int(len(video)), "n_texts": int(len(text)), "fingerprint": fingerprint}
    write_results(out, "retrieval", metrics, to_dict(cfg), model_identity(cfg.model), dataset)
    return metrics


def _out_dir(cfg: EvalConfig, task: str) -> Path:
    out = Path(cfg.out or f"runs/vljepa_eval/{task}")
    out.mkdir(parents=True, exist_ok=True)
    cfg.out = str(out)
    return out


def _class_names(cfg: EvalData, found: list[str] | None) -> list[str] | None:
    if not cfg.labels:
        return found
    if Path(cfg.labels).is_file():
        return [line for line in Path(cfg.labels).read_text().splitlines() if line.strip()]
    return load_label_list(cfg.labels)


def _classify_inputs(cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], str, list[str]]:
    """(video (N, D), labels (N,), classes (C, D), class names, dataset name, media signatures)."""
    if cfg.embeddings:
        d = Path(cfg.embeddings)
        names = (d / "class_names.txt").read_text().splitlines()
        return np.load(d / "video.npy"), np.load(d / "labels.npy"), np.load(d / "classes.npy"), names, str(d), []
    from vljepa.tasks import class_embeddings

    model = _load_model(cfg.model, cfg.device)
    n, media = _num_frames(model, cfg.data), []
    if cfg.data.source == "synthetic":
        from vljepa.synthetic import class_names

        clips = _synthetic(cfg.data, n)
        names, labels = class_names(), np.array([c["label"] for c in clips])
        batches = _pixel_batches(model, [c["frames"] for c in clips], cfg.batch_size)
    else:
        from vljepa.eval_data import load_labelled
        from vljepa.processing import VideoTransform

        data = load_labelled(cfg.data.source, _class_names(cfg.data, None))
        names, labels, media = data.class_names, np.array(data.labels), [media_signature(p) for p in data.paths]
        transform = VideoTransform.for_encoder(model.config.x_encoder)
        batches = (pv for pv, _ in data.clips(transform, n, cfg.batch_size))
    video = _clip_embeddings(model, batches, _query(model, cfg))
    classes = class_embeddings(model, names, tuple(cfg.templates)).numpy()
    return video, labels, classes, names, cfg.data.source, media


def run_classify(cfg: EvalConfig) -> dict:
    video, labels, classes, names, name, media = _classify_inputs(cfg)
    metrics = zero_shot_from_embeddings(torch.from_numpy(video), torch.from_numpy(classes), labels,
                                        names, tuple(cfg.ks or (1, 5)))
    out = _out_dir(cfg, "classify")
    for fname, arr in (("video.npy", video), ("labels.npy", labels), ("classes.npy", classes)):
        np.save(out / fname, arr)
    (out / "class_names.txt").write_text("\n".join(names) + "\n")
    plot_confusion(metrics["confusion"], names, out / "confusion.png")
    fingerprint = fingerprint_arrays(video, labels, classes) if cfg.embeddings else \
        fingerprint_items([name, *media, *names, *map(str, labels.tolist())])
    dataset = {"name": name, "n": int(len(labels)), "n_classes": len(names), "fingerprint": fingerprint}
    write_results(out, "classify/zero_shot", metrics, to_dict(cfg), model_identity(cfg.model), dataset)
    return metrics


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vljepa eval", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("retrieval", "classify"):
        s = sub.add_parser(name, epilog=config_help(EvalConfig), formatter_class=argparse.RawDescriptionHelpFormatter,
                           help=f"zero-shot {name} of a saved model or saved embeddings")
        s.add_argument("--config", help="YAML recipe with EvalConfig fields")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. out=runs/x")
    c = sub.add_parser("compare", help="side-by-side table of two results.json files")
    c.add_argument("a")
    c.add_argument("b")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "compare":
        print(compare_table(load_results(args.a), load_results(args.b), Path(args.a).parent.name or "a",
                            Path(args.b).parent.name or "b"), end="")
        return 0
    run = run_retrieval if args.command == "retrieval" else run_classify
    try:
        cfg = load_config(EvalConfig, args.config, args.set)
        _check(cfg)
        run(cfg)
    except (ConfigError, ManifestError, MediaError, FileNotFoundError) as e:
        raise SystemExit(f"vljepa eval {args.command}: error: {e}") from None
    print((Path(cfg.out) / "results.md").read_text(), end="")
    print(f"results written to {Path(cfg.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
