"""The offline VL-JEPA demo (`make demo-vl`): train, evaluate, and decode selectively, on a CPU.

Data flow:
  synthetic digit clips (vljepa.synthetic; real sklearn digits moving / growing / changing colour)
  -> `vljepa.train.train` a tiny VL-JEPA (frozen tiny V-JEPA 2 X-encoder, tiny Llama predictor,
     packaged all-MiniLM-L6-v2 Y-encoder)
  -> held-out clips: zero-shot action classification (nearest class text) and text-to-video
     Recall@K (eval.retrieval)
  -> Y-decoder (vljepa.decoder) trained on (Y-encoder(caption), caption), then continued on
     (predicted embedding, caption) with a little noise, saved beside the model
  -> long synthetic videos -> sliding-window embedding stream (vljepa.stream) -> selective
     (offline Ward, online trigger) vs uniform decoding swept over rates (eval.selective_decoding)
  -> report.md, demo_results.json, figures (training loss, CIDEr vs decode rate, timeline).

X-encoder (`--x-encoder`): a frozen tiny V-JEPA 2, random (default) or pretrained in the demo by
V-JEPA self-supervised feature prediction (vljepa.pretrain); `--compare-steps N` trains the other
arm too. Random is the default because the short CPU pretraining partly collapsed the features and
lost to it in our runs (docs/selective_decoding.md). Training reads X-encoder features cached once.
The Y-encoder is frozen by default (`--y-lr-multiplier 0`) because its backward pass is ~80% of a
CPU step; the paper's 0.05 is one flag away.

    python -m vljepa.demo --out demo_out/vljepa
"""

from __future__ import annotations

import argparse
import enum
import time
from pathlib import Path

import numpy as np
import torch

from eval.retrieval import evaluate_retrieval
from eval.selective_decoding import (
    Strategy,
    VideoStream,
    decode_reduction,
    headline_reduction,
    plot_sweep,
)
from jepa_common.config import load_config
from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata
from vljepa.builders import load_x_encoder
from vljepa.cache import cache_features
from vljepa.decoder import DecoderTrainConfig, YDecoder, save_decoder, train_decoder
from vljepa.modeling import VLJepaModel
from vljepa.pretrain import PretrainConfig, install_x_encoder, pretrain, pretraining_record
from vljepa.pretrain_monitors import encoder_tokens, probe_labels, ridge_probe, time_pooled
from vljepa.processing import VideoTransform
from vljepa.recipe import (
    DataConfig,
    DataSource,
    ModelConfig,
    ModelSource,
    OptimConfig,
    RunConfig,
    TrainConfig,
    build_dataset,
    build_model,
)
from vljepa.selective_eval import select, sweep
from vljepa.stream import StreamConfig, embed_stream, iter_windows
from vljepa.synthetic import QUERIES, class_names, make_clip_dataset, make_long_video, reference_captions
from vljepa.tasks import text_embeddings, video_embeddings
from vljepa.train import train as train_model

RATES = [2.0, 1.0, 0.5, 0.35, 0.2, 0.1, 0.05, 0.02]
QUERY = QUERIES[0]


def base_model(args: argparse.Namespace):
    """The tiny VL-JEPA before training: random tiny V-JEPA 2 X-encoder, tiny Llama predictor, MiniLM."""
    return build_model(ModelConfig(source=ModelSource.TINY, predictor_layers=2, embed_dim=args.embed_dim,
                                   seed=args.seed))


def pretrain_arm(model, args: argparse.Namespace, out: Path) -> dict:
    """Install the V-JEPA-pretrained X-encoder, frozen, in `model`: loaded from `--pretrained-x-encoder`
    (a VJEPA2Model folder written by `vljepa pretrain`), or, with `--pretrain-recipe`, pretrained here
    first (vljepa.pretrain; encoder init and sampling seeded by --seed). Returns its pretraining record."""
    path = args.pretrained_x_encoder
    if args.pretrain_recipe:
        overrides = [f"run.output_dir={out / 'pretrain'}", f"encoder.seed={args.seed}", f"run.seed={args.seed}",
                     *args.pretrain_set]
        path = pretrain(load_config(PretrainConfig, args.pretrain_recipe, overrides))["encoder_dir"]
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"--x-encoder pretrained needs a pretrained X-encoder folder, got {path!r}; make one "
                                "with `vljepa pretrain --config recipes/vljepa/pretrain_tiny_cpu.yaml` or pass "
                                "--pretrain-recipe to pretrain inside the demo")
    install_x_encoder(model, load_x_encoder(path))
    return pretraining_record(path)


def train_arm(model, args: argparse.Namespace, out: Path, steps: int) -> dict:
    """Save the initial model, run the frozen X-encoder ONCE over the training clips (vljepa.cache),
    then train predictor + heads from the cached features (vljepa.train, data.source=cache)."""
    init, cache = out / "init", out / "features"
    model.save_pretrained(init)  # tiny X-encoder has no hub source: its weights are saved too
    data = DataConfig(num_frames=args.frames, synthetic_n=args.train_clips, synthetic_size=32,
                      synthetic_seed=args.seed)
    t0 = time.time()
    cache_features(model, build_dataset(data, model), cache, batch_size=64)
    cache_s = time.time() - t0
    cfg = TrainConfig(
        model=ModelConfig(source=ModelSource.CHECKPOINT, checkpoint=str(init)),
        data=DataConfig(source=DataSource.CACHE, cache_dir=str(cache), num_frames=args.frames),
        optim=OptimConfig(lr=2e-3, y_lr_multiplier=args.y_lr_multiplier, weight_decay=0.0, warmup_steps=10,
                          batch_size=args.batch_size, max_steps=steps),
        run=RunConfig(output_dir=str(out / "run"), log_every=10, resume=False, seed=args.seed))
    t0 = time.time()
    result = train_model(cfg)
    return {**result, "cache_s": cache_s, "train_s": time.time() - t0}


def trained_params(model, args: argparse.Namespace) -> dict:
    """Parameter counts, with `trainable` = what the optimizer updated (frozen X-encoder, and the
    Y-encoder backbone when its multiplier is 0, excluded)."""
    counts = model.parameter_counts()
    frozen = counts["x_encoder_total"] + (counts["y_encoder_total"] if args.y_lr_multiplier == 0 else 0)
    return {**counts, "trainable": counts["total"] - frozen}


def pixels(model, clips: list[dict]) -> torch.Tensor:
    transform = VideoTransform.for_encoder(model.config.x_encoder)
    return torch.stack([transform(c["frames"]) for c in clips])  # (B, T, 3, S, S)


@torch.no_grad()
def evaluate_clips(model, clips: list[dict]) -> dict:
    """Zero-shot action accuracy and text-to-video Recall@K on held-out clips."""
    px = pixels(model, clips)
    video = video_embeddings(model, px, query=QUERY)  # (N, D)
    classes = [f"a digit {name}" for name in class_names()]
    pred = (video @ text_embeddings(model, classes).T).argmax(dim=1)
    labels = torch.tensor([c["label"] for c in clips])
    captions = [c["caption"] for c in clips]
    ret = evaluate_retrieval(text_embeddings(model, captions).numpy(), video.numpy(), list(range(len(clips))))
    return {"n_clips": len(clips), "n_classes": len(classes), "zero_shot_accuracy": float((pred == labels).float().mean()),
            "chance_accuracy": 1 / len(classes), "t2v": ret["t2v"], "v2t": ret["v2t"]}


def fit_decoder(model, clips: list[dict], args: argparse.Namespace) -> tuple[YDecoder, list[float]]:
    """Stage 1 on Y-encoder embeddings of all paraphrases; stage 2 on predicted embeddings + noise."""
    captions = [c["caption"] for c in clips]
    texts = sorted({t for c in clips for t in c["captions"]})
    dec = YDecoder.build(embed_dim=args.embed_dim, corpus=texts, hidden_size=128, num_layers=2, seed=args.seed)
    with torch.no_grad():
        canon = {c["caption"] for c in clips}
        y = text_embeddings(model, sorted(canon))
        pred = video_embeddings(model, pixels(model, clips), query=QUERY)
    # The decoder should say the canonical caption: train it on canonical captions only.
    losses = train_decoder(dec, y, sorted(canon), DecoderTrainConfig(steps=args.decoder_steps, lr=3e-3,
                                                                     noise_std=0.02, seed=args.seed))
    losses += train_decoder(dec, pred, captions, DecoderTrainConfig(steps=args.decoder_steps // 2, lr=1e-3,
                                                                    noise_std=0.02, seed=args.seed + 1))
    return dec, losses


def long_video_streams(model, seeds: list[int], args: argparse.Namespace) -> list[VideoStream]:
    cfg = StreamConfig(window_s=2.0, stride_s=0.5, frames_per_window=args.frames, query=QUERY, batch_size=32)
    transform = VideoTransform.for_encoder(model.config.x_encoder)
    streams = []
    for seed in seeds:
        frames, truth = make_long_video(seed, args.events, fps=4, size=32)
        stream = ((i / 4, f) for i, f in enumerate(frames))
        pairs = list(embed_stream(model, iter_windows(stream, cfg, transform), cfg))
        streams.append(VideoStream(times=np.array([t for t, _ in pairs]), embeddings=np.stack([e for _, e in pairs]),
                                   truth=[(s, e, reference_captions(c)) for s, e, c in truth]))
    return streams


def plot_losses(history: list[dict], dec_losses: list[float], pretrain: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (p, a, b) = plt.subplots(1, 3, figsize=(13, 3.5))
    p.plot([h["step"] for h in pretrain], [h["loss"] for h in pretrain])
    p.set(title="X-encoder V-JEPA pretraining (L1)", xlabel="step", ylabel="loss")
    a.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o")
    a.set(title="VL-JEPA InfoNCE (train)", xlabel="step", ylabel="loss")
    b.plot(dec_losses)
    b.set(title="Y-decoder next-token loss", xlabel="step", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timeline(stream: VideoStream, decoded: dict[str, list[tuple[float, str]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.9 * (1 + len(decoded))))
    for i, (s, e, refs) in enumerate(stream.truth):
        ax.barh(0, e - s, left=s, color=f"C{i % 10}", alpha=0.5, edgecolor="k")
        ax.text((s + e) / 2, 0, refs[0], ha="center", va="center", fontsize=6, rotation=20)
    for row, (_name, caps) in enumerate(decoded.items(), start=1):
        for t, cap in caps:
            ax.plot([t], [row], "kv")
            ax.text(t, row + 0.25, cap, fontsize=6, rotation=20)
    ax.set_yticks(range(len(decoded) + 1), ["ground truth", *decoded])
    ax.set_xlabel("seconds")
    ax.set_ylim(-0.6, len(decoded) + 0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def selective_decoding(model, dec: YDecoder, args: argparse.Namespace, out: Path) -> dict:
    """Sweep offline / online / uniform over RATES on the long videos; plots and reductions."""
    test = long_video_streams(model, [2000 + i for i in range(args.long_videos)], args)
    calib = long_video_streams(model, [3000 + i for i in range(args.calib_videos)], args)
    calls = {"decoder_calls": 0, "decodes": 0}

    def decode(embs: np.ndarray) -> list[str]:
        calls["decoder_calls"] += 1
        calls["decodes"] += len(embs)
        return dec.generate(torch.as_tensor(embs, dtype=torch.float32))

    rows = sweep(test, decode, RATES, calibration=calib)
    plot_sweep(rows, str(out / "cider_vs_rate.png"), title="VL-JEPA demo: CIDEr vs decode rate (long videos)")
    tables = {s.value: decode_reduction(rows, s.value) for s in (Strategy.OFFLINE, Strategy.ONLINE)}
    first = test[0]
    timeline = {}
    for strategy in (Strategy.OFFLINE, Strategy.UNIFORM):
        pts = select(first, strategy, 0.2)
        timeline[f"{strategy.value} 0.2 Hz"] = list(zip([p.t for p in pts], decode(np.stack([p.embedding for p in pts]))))
    plot_timeline(first, timeline, out / "timeline.png")
    return {"rows": rows, "reduction": tables, "headline": {k: headline_reduction(v) for k, v in tables.items()},
            "seconds_of_video": sum(s.duration for s in test), "n_videos": len(test), **calls,
            "timeline_video_0": {k: [[round(t, 2), c] for t, c in v] for k, v in timeline.items()}}


FIGURES = ("cider_vs_rate.png", "timeline.png", "losses.png")


def pretrain_summary(state: dict) -> dict:
    """The demo results' `pretrain` entry: where the pretrained X-encoder came from and how it trained."""
    record = state["pretrain_record"]
    return {"path": record.get("path"), "steps": record.get("steps", 0), "train_s": record.get("train_s"),
            "history": state["pretrain"][::10], "monitors": record.get("monitors", [])}


def x_encoder_line(res: dict) -> str:
    if res["setup"]["x_encoder"] == XEncoderInit.RANDOM.value:
        return "X-encoder: a tiny V-JEPA 2 with random weights, frozen. "
    pre = res["pretrain"]
    trained = f"{pre['steps']} steps in {pre['train_s']:.0f} s" if pre["train_s"] else "loaded"
    return ("X-encoder: a tiny V-JEPA 2 pretrained by V-JEPA self-supervised feature prediction (multi-block "
            f"masks, EMA target, L1 on layer-normalised targets; {trained}) on unlabeled synthetic clips and "
            f"real video windows, then frozen (`{pre['path']}`). ")


def write_report(res: dict, out: Path) -> None:
    ev, sd = res["clips"], res["selective_decoding"]
    lines = [
        "# VL-JEPA offline demo", "",
        f"Wall time {res['wall_s']:.0f} s on CPU. Tiny VL-JEPA ({res['params']['trainable']:,} trainable of "
        f"{res['params']['total']:,} parameters) trained {res['train']['step']} steps on "
        f"{res['setup']['train_clips']} synthetic digit clips.", "",
        x_encoder_line(res),
        "Training runs from its features, cached once. Y-encoder: packaged all-MiniLM-L6-v2, "
        f"learning-rate multiplier {res['setup']['y_lr_multiplier']} (0 = frozen, for CPU speed).", "",
        f"## Held-out clips ({ev['n_clips']}; chance accuracy {ev['chance_accuracy']:.3f}, "
        f"chance R@1 {100 / ev['n_clips']:.1f}%)", "",
        "| X-encoder | steps | zero-shot accuracy | t2v R@1 | R@5 | R@10 |", "|---|---|---|---|---|---|",
        *[f"| {name} | {a['steps']} | {a['zero_shot_accuracy']:.3f} | {a['t2v']['R@1']:.1f}% | "
          f"{a['t2v']['R@5']:.1f}% | {a['t2v']['R@10']:.1f}% |" for name, a in res["arms"].items()], "",
        "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in res["timings_s"].items()), "",
        f"## Selective decoding ({sd['n_videos']} long videos, {sd['seconds_of_video']:.0f} s)", "",
        "![CIDEr vs rate](cider_vs_rate.png)", "",
        "| strategy | target Hz | decodes/s | CIDEr |", "|---|---|---|---|",
        *[f"| {r['strategy']} | {r['target_hz']} | {r['decodes_per_s']:.3f} | {r['cider']:.3f} |" for r in sd["rows"]],
        "", "Decode reduction at equal CIDEr (uniform rate needed / selective rate):", "",
    ]
    for k, h in sd["headline"].items():
        lines.append(f"- {k}: {h['decodes_per_s']:.3f} Hz -> CIDEr {h['cider']:.3f}; uniform needs "
                     f"{h['uniform_equal_cider_hz']:.3f} Hz: **{h['reduction']:.2f}x** ({h['bound']})")
    lines += ["", "All points (`lower`: uniform never reaches that CIDEr within the sweep, so the ratio is a "
              "lower bound):", "", "| strategy | decodes/s | CIDEr | uniform Hz at equal CIDEr | reduction |",
              "|---|---|---|---|---|"]
    lines += [f"| {k} | {r['decodes_per_s']:.3f} | {r['cider']:.3f} | {r['uniform_equal_cider_hz']:.3f} | "
              f"{r['reduction']:.2f}x ({r['bound']}) |" for k, table in sd["reduction"].items() for r in table]
    lines += ["", "![timeline](timeline.png)", "", "![losses](losses.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Offline VL-JEPA demo: train, evaluate, selective decoding.")
    p.add_argument("--out", default="demo_out/vljepa")
    p.add_argument("--steps", type=int, default=600, help="VL-JEPA steps (cached features: cheap)")
    p.add_argument("--x-encoder", choices=[k.value for k in XEncoderInit], default="random",
                   help="the demo model's frozen X-encoder: random, or V-JEPA-pretrained (vljepa.pretrain)")
    p.add_argument("--compare-steps", type=int, default=0,
                   help="also train the other X-encoder arm for this many steps and report both (0: skip)")
    p.add_argument("--pretrained-x-encoder", default=None,
                   help="VJEPA2Model folder of the pretrained arm (made by `vljepa pretrain`)")
    p.add_argument("--pretrain-recipe", default=None,
                   help="pretrain the X-encoder inside the demo with this recipe instead of loading one")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of --pretrain-recipe, e.g. optim.max_steps=100 (repeatable)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-clips", type=int, default=512)
    p.add_argument("--test-clips", type=int, default=200)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--y-lr-multiplier", type=float, default=0.0)
    p.add_argument("--decoder-steps", type=int, default=400)
    p.add_argument("--long-videos", type=int, default=4)
    p.add_argument("--calib-videos", type=int, default=2)
    p.add_argument("--events", type=int, default=15)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; tiny models are per-op bound and 1 is fastest on a busy CPU")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class XEncoderInit(str, enum.Enum):
    """How the demo's frozen X-encoder starts: random weights, or V-JEPA-pretrained (vljepa.pretrain)."""

    RANDOM = "random"
    PRETRAINED = "pretrained"


def x_encoder_probe(model, train_clips: list[dict], test_clips: list[dict]) -> dict[str, float]:
    """Linear probes (ridge, vljepa.pretrain_monitors) on the frozen X-encoder's features, averaged over
    space per time step: fit on the training clips, scored on the held-out clips, per label."""
    steps = model.x_encoder.config.frames_per_clip // model.x_encoder.config.tubelet_size
    feats = [time_pooled(encoder_tokens(model.x_encoder, pixels(model, c)), steps) for c in (train_clips, test_clips)]
    return {name: ridge_probe(feats[0], probe_labels(train_clips, name), feats[1], probe_labels(test_clips, name))
            for name in ("action", "colour", "digit")}


def run_arm(kind: XEncoderInit, args: argparse.Namespace, out: Path, train_clips: list[dict],
            test_clips: list[dict], steps: int) -> tuple[dict, dict, dict]:
    """Build the X-encoder (random, or the V-JEPA-pretrained one), probe it, train VL-JEPA from cached
    features, evaluate on the held-out clips."""
    model, record, timings = base_model(args), {}, {}
    if kind is XEncoderInit.PRETRAINED:
        t0 = time.time()
        record = pretrain_arm(model, args, out / f"{kind.value}_x")
        timings["pretrain_s"] = time.time() - t0
    probe = x_encoder_probe(model, train_clips, test_clips)
    trained = train_arm(model, args, out / f"{kind.value}_x", steps)
    timings |= {"cache_s": trained["cache_s"], "train_s": trained["train_s"]}
    model = VLJepaModel.from_pretrained(trained["model_dir"]).eval()
    ev = {**evaluate_clips(model, test_clips), "linear_probe": probe, "steps": trained["step"],
          "pretrain_steps": record.get("steps", 0)}
    state = {"model": model, "trained": trained, "pretrain": record.get("history", []), "pretrain_record": record}
    return state, ev, timings


def run_arms(args: argparse.Namespace, out: Path) -> tuple[dict, dict, dict]:
    """The demo model's arm (`--x-encoder`) and, with `--compare-steps N`, the other X-encoder arm."""
    test_clips = make_clip_dataset(args.test_clips, n_frames=args.frames, seed=args.seed + 777)
    train_clips = make_clip_dataset(args.train_clips, n_frames=args.frames, seed=args.seed)
    kind = XEncoderInit(args.x_encoder)
    state, ev, timings = run_arm(kind, args, out, train_clips, test_clips, args.steps)
    arms = {f"{kind.value}_x_encoder": ev}
    if args.compare_steps > 0:
        other = XEncoderInit.RANDOM if kind is XEncoderInit.PRETRAINED else XEncoderInit.PRETRAINED
        t0 = time.time()
        _, arms[f"{other.value}_x_encoder"], _ = run_arm(other, args, out, train_clips, test_clips,
                                                          args.compare_steps)
        timings[f"{other.value}_x_encoder_s"] = time.time() - t0
    return {**state, "train_clips": train_clips}, arms, timings


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state, arms, timings = run_arms(args, out)
    model, trained, clips = state["model"], state["trained"], arms[f"{args.x_encoder}_x_encoder"]
    t1 = time.time()
    dec, dec_losses = fit_decoder(model, state["train_clips"], args)
    save_decoder(dec, trained["model_dir"])
    timings["decoder_s"] = time.time() - t1
    plot_losses(trained["history"], dec_losses, state["pretrain"], out / "losses.png")
    t1 = time.time()
    sd = selective_decoding(model, dec, args, out)
    timings["selective_decoding_s"] = time.time() - t1
    res = {"setup": vars(args), "train": {"step": trained["step"], "history": trained["history"]},
           "pretrain": pretrain_summary(state),
           "params": trained_params(model, args), "clips": clips, "arms": arms, "selective_decoding": sd,
           "decode_reduction_at_equal_cider": {k: v["reduction"] for k, v in sd["headline"].items()},
           "model_dir": trained["model_dir"], "timings_s": timings, "wall_s": time.time() - t0, **run_metadata()}
    atomic_write_json(out / "demo_results.json", res)
    write_report(res, out)
    summary = ["VL-JEPA demo (synthetic digit clips, tiny model, CPU):"]
    summary += [f"  {name}: zero-shot accuracy {ev['zero_shot_accuracy']:.3f}, t2v R@1 {ev['t2v']['R@1']:.1f}% "
                f"R@5 {ev['t2v']['R@5']:.1f}% R@10 {ev['t2v']['R@10']:.1f}%" for name, ev in arms.items()]
    summary.append("  decode reduction at equal CIDEr: "
                   + ", ".join(f"{k} {v:.2f}x" for k, v in res["decode_reduction_at_equal_cider"].items()))
    summary.append(f"  report {out / 'report.md'}, results {out / 'demo_results.json'}, figures "
                   f"{', '.join(str(out / f) for f in FIGURES)}, model {trained['model_dir']} ({res['wall_s']:.0f} s)")
    atomic_write_text(out / "summary.txt", "\n".join(summary) + "\n")
    print("\n".join(summary))

if __name__ == "__main__":
    main()
