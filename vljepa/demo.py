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

X-encoder (`--x-encoder`): a frozen tiny V-JEPA 2, pretrained by V-JEPA self-supervised feature
prediction (default: the shipped `tiny-vjepa2` of vljepa.pretrained; `--pretrain-recipe` pretrains one
here instead) or random; `--compare-steps N` trains the other arm too. Pretrained is the default
because it beat random on linear-probe, zero-shot and R@1 means over 3 seeds (docs/vljepa.md, "V-JEPA
pretraining of the X-encoder"). Training reads X-encoder features cached once.
The Y-encoder is frozen by default (`--y-lr-multiplier 0`) because its backward pass is ~80% of a
CPU step; the paper's 0.05 is one flag away.

    python -m vljepa.demo --out demo_out/vljepa
"""

from __future__ import annotations

import argparse
import enum
import time
from pathlib import Path

import torch

from eval.retrieval import evaluate_retrieval
from eval.selective_report import plot_analyses
from jepa_common.config import load_config
from jepa_common.io import atomic_write_json, atomic_write_text, run_metadata
from vljepa import demo_selective as ds
from vljepa.builders import load_x_encoder
from vljepa.cache import cache_features
from vljepa.decoder import save_decoder
from vljepa.modeling import VLJepaModel
from vljepa.pretrain import PretrainConfig, install_x_encoder, pretrain, pretraining_record
from vljepa.pretrain_monitors import encoder_tokens, probe_labels, ridge_probe, time_pooled
from vljepa.pretrained import pretrained_names, pretrained_path
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
from vljepa.synthetic import QUERIES, class_names, make_clip_dataset
from vljepa.tasks import text_embeddings, video_embeddings
from vljepa.train import train as train_model

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
    path = pretrained_path(path) or path if path else None  # a shipped short name -> its folder
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"--x-encoder pretrained needs a pretrained X-encoder folder or a shipped name "
                                f"({', '.join(pretrained_names())}), got {path!r}; make one with `vljepa pretrain "
                                "--config recipes/vljepa/pretrain_tiny_cpu.yaml` or pass --pretrain-recipe to "
                                "pretrain inside the demo")
    install_x_encoder(model, load_x_encoder(path))
    return pretraining_record(path)


def train_arm(model, args: argparse.Namespace, out: Path, steps: int) -> dict:
    """Save the initial model, run the frozen X-encoder ONCE over the training clips (vljepa.cache),
    then train predictor + heads from the cached features (vljepa.train, data.source=cache)."""
    init, cache = out / "init", out / "features"
    model.save_pretrained(init)  # tiny X-encoder has no hub source: its weights are saved too
    data = DataConfig(num_frames=args.frames, synthetic_n=args.train_clips, synthetic_size=32,
                      synthetic_seed=args.seed, synthetic_long_videos=args.train_long_videos)
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
    ev = res["clips"]
    lines = [
        "# VL-JEPA offline demo", "",
        f"Wall time {res['wall_s']:.0f} s on CPU ({len(res['seeds'])} seeds of data and training). Tiny VL-JEPA "
        f"({res['params']['trainable']:,} trainable of {res['params']['total']:,} parameters) trained "
        f"{res['train']['step']} steps on {res['setup']['train_clips']} synthetic digit clips per seed.", "",
        x_encoder_line(res),
        "Training runs from its features, cached once. Y-encoder: packaged all-MiniLM-L6-v2, "
        f"learning-rate multiplier {res['setup']['y_lr_multiplier']} (0 = frozen, for CPU speed).", "",
        f"## Held-out clips ({ev['n_clips']}; chance accuracy {100 * ev['chance_accuracy']:.1f}%, "
        f"chance R@1 {100 / ev['n_clips']:.1f}%)", "",
        "| seed | X-encoder | steps | linear probe (action, frozen X-encoder) | zero-shot accuracy | t2v R@1 | R@5 "
        "| R@10 |", "|---|---|---|---|---|---|---|---|",
        *[f"| {r['seed']} | {name} | {a['steps']} | {100 * a['linear_probe']['action']:.1f}% | "
          f"{100 * a['zero_shot_accuracy']:.1f}% | {a['t2v']['R@1']:.1f}% | {a['t2v']['R@5']:.1f}% | "
          f"{a['t2v']['R@10']:.1f}% |" for r in res["seeds"] for name, a in r["arms"].items()],
        "", "Timings (s, all seeds): " + ", ".join(f"{k} {v:.0f}" for k, v in res["timings_s"].items()), "",
        *ds.report_lines(res["selective_decoding"]), "![losses](losses.png)", "",
    ]
    atomic_write_text(out / "report.md", "\n".join(lines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Offline VL-JEPA demo: train, evaluate, selective decoding.")
    p.add_argument("--out", default="demo_out/vljepa")
    p.add_argument("--steps", type=ds.positive_int, default=2500,
                   help="VL-JEPA steps (from cached features; 8192 clips x 2500 steps beat 2048 x 1500 on every "
                        "stream kind's best uniform CIDEr over 3 seeds, docs/selective_decoding.md)")
    p.add_argument("--x-encoder", choices=[k.value for k in XEncoderInit], default="pretrained",
                   help="the demo model's frozen X-encoder: V-JEPA-pretrained (default: the shipped tiny-vjepa2, "
                        "which beat random on probe, zero-shot and R@1 means over 3 seeds), or random")
    p.add_argument("--compare-steps", type=int, default=0,
                   help="also train the other X-encoder arm for this many steps and report both (0: skip)")
    p.add_argument("--pretrained-x-encoder", default="tiny-vjepa2",
                   help="VJEPA2Model folder of the pretrained arm (made by `vljepa pretrain`), or a shipped "
                        "name (vljepa.pretrained; default: tiny-vjepa2)")
    p.add_argument("--pretrain-recipe", default=None,
                   help="pretrain the X-encoder inside the demo with this recipe instead of loading one")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of --pretrain-recipe, e.g. optim.max_steps=100 (repeatable)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-clips", type=ds.positive_int, default=8192,
                   help="synthetic training clips per seed (features cached once; 2048 with --steps 1500 runs "
                        "in ~70 %% of the time and under half the memory, with a weaker model)")
    p.add_argument("--train-long-videos", type=int, default=0,
                   help="also train on the sliding windows of this many long videos (every stream kind; ~120 "
                        "windows each, labelled with their dominant event). Off by default: 10 videos lowered "
                        "event action accuracy on the streams from 26 to 18 %% over 3 seeds (docs/selective_decoding.md)")
    p.add_argument("--test-clips", type=int, default=200)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--y-lr-multiplier", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; tiny models are per-op bound and 1 is fastest on a busy CPU")
    p.add_argument("--seed", type=int, default=0)
    ds.add_arguments(p)
    args = p.parse_args(argv)
    if not 0 <= args.train_long_videos <= 1000:  # checked before any training, not when the data is built
        p.error(f"--train-long-videos must be between 0 and 1000, got {args.train_long_videos}")
    return args


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


def run_seed(args: argparse.Namespace, out: Path) -> dict:
    """One seed of data and training: the X-encoder arm(s), the Y-decoder, selective decoding."""
    out.mkdir(parents=True, exist_ok=True)
    state, arms, timings = run_arms(args, out)
    model, trained = state["model"], state["trained"]
    t1 = time.time()
    streams = ds.seed_streams(model, args)
    timings["long_video_streams_s"] = time.time() - t1
    t1 = time.time()
    dec, stage1, dec_losses = ds.fit_decoder(model, state["train_clips"], ds.decoder_training_windows(streams), args,
                                             pixels(model, state["train_clips"]))
    save_decoder(dec, trained["model_dir"])
    timings["decoder_s"] = time.time() - t1
    plot_losses(trained["history"], dec_losses, state["pretrain"], out / "losses.png")
    t1 = time.time()
    selective = ds.evaluate_seed(model, dec, stage1, streams, args)
    timings["selective_decoding_s"] = time.time() - t1
    return {"seed": args.seed, "state": state, "arms": arms, "timings": timings, "selective": selective, "decoder": dec}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    runs = [run_seed(argparse.Namespace(**{**vars(args), "seed": args.seed + i}),
                     out if i == 0 else out / "seeds" / str(args.seed + i)) for i in range(args.seeds)]
    sd, pooled = ds.aggregate([r["selective"] for r in runs], args)
    plot_analyses(pooled, str(out / "cider_vs_rate.png"), title="VL-JEPA demo: CIDEr vs decode rate, all seeds pooled")
    sd["timeline_video_0"] = ds.timeline(runs[0]["selective"], runs[0]["decoder"], out / "timeline.png")
    first, trained = runs[0], runs[0]["state"]["trained"]
    timings = {k: sum(r["timings"].get(k, 0.0) for r in runs) for k in first["timings"]}
    res = {"setup": vars(args), "train": {"step": trained["step"], "history": trained["history"]},
           "pretrain": pretrain_summary(first["state"]),
           "params": trained_params(first["state"]["model"], args), "clips": first["arms"][f"{args.x_encoder}_x_encoder"],
           "arms": first["arms"], "seeds": [{"seed": r["seed"], "arms": r["arms"], "timings_s": r["timings"]} for r in runs],
           "selective_decoding": sd,
           "decode_reduction_at_equal_cider": {k: v["value"] for k, v in sd["headline"].items()},
           "model_dir": trained["model_dir"], "timings_s": timings, "wall_s": time.time() - t0, **run_metadata()}
    atomic_write_json(out / "demo_results.json", res)
    write_report(res, out)
    summary = ["VL-JEPA demo (synthetic digit clips, tiny model, CPU):"]
    summary += [f"  seed {r['seed']} {name}: zero-shot accuracy {100 * ev['zero_shot_accuracy']:.1f}%, t2v R@1 "
                f"{ev['t2v']['R@1']:.1f}% R@5 {ev['t2v']['R@5']:.1f}% R@10 {ev['t2v']['R@10']:.1f}%"
                for r in runs for name, ev in r["arms"].items()]
    summary += ds.summary_lines(sd)
    summary.append(f"  report {out / 'report.md'}, results {out / 'demo_results.json'}, figures "
                   f"{', '.join(str(out / f) for f in FIGURES)}, model {trained['model_dir']} ({res['wall_s']:.0f} s)")
    atomic_write_text(out / "summary.txt", "\n".join(summary) + "\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
