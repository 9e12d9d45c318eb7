"""VL-JEPA parts of the GPU check: training steps from pixels, streaming rate, GPU == CPU loss, the loop.

Data flow (`run_vljepa`): the paper's 8-frame shape built from configs with random weights on the
device -> V-JEPA 2 ViT-L/16 256 px X-encoder (frozen; 8 frames -> 1024 visual tokens), the last 8
layers of a Llama-3.2-1B-shaped predictor (bidirectional), the all-MiniLM-L6-v2 Y-encoder rebuilt
from its config (random weights: its 87 MB weights cannot travel to the GPU machine; timings do not
depend on weights), D = 1536 ->
  train_step      - clips (B, 8, 3, 256, 256) of pixels -> model(query, target, pixel_values) in bf16
                    autocast -> InfoNCE -> backward -> clip -> AdamW with the paper's parameter groups
                    (`vljepa.train.param_groups`: Y-encoder at 0.05 x lr): step ms, clips/s, peak memory
  stream_model    - pre-processed windows -> `vljepa.stream.embed_stream` (batches of 8): windows/s,
                    bf16 autocast and fp32
  stream_pipeline - uint8 frames at 30 fps -> `iter_windows` (resize, crop, normalise once per frame)
                    -> `embed_stream`: end-to-end windows/s (the host's preprocessing included)
`vl_parity`: a tiny VL-JEPA, the loss on the device (fp32; bf16 autocast) against the fp32 CPU loss.
`vl_train_loop`: three optimizer steps of `vljepa.train.train` (Accelerate, bf16) from a saved tiny model.

Not run directly; `python benchmarks/gpu_check.py` runs these as sections.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from gpu_check_common import TEXTS, Ctx, Section, rel_diff, strict_fp32, time_calls
from gpu_check_llm import BF16_TOL, FP32_TOL, lm_config
from transformers import AutoConfig, AutoTokenizer

from jepa_common.config import load_config
from jepa_common.tiny import tiny_tokenizer
from vljepa.builders import TINY_CORPUS, paper_vljepa_config, tiny_x_encoder_config
from vljepa.configuration import VLJepaConfig
from vljepa.modeling import VLJepaModel
from vljepa.processing import VideoTransform
from vljepa.recipe import OptimConfig, TrainConfig
from vljepa.stream import StreamConfig, embed_stream, iter_windows

ROOT = Path(__file__).resolve().parents[1]
NUM_FRAMES = 8  # the paper's video stage (recipes/vljepa/paper_stage2_video8.yaml)
TINY_Y = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)  # MiniLM class


def vl_config(tiny: bool, minilm_dir: str) -> VLJepaConfig:
    """Paper shapes (or a tiny model of the same classes) with the MiniLM Y-encoder's config."""
    y = AutoConfig.from_pretrained(minilm_dir).to_dict()
    if tiny:
        y.update(TINY_Y)
        x = tiny_x_encoder_config("vjepa2", crop_size=32, num_frames=NUM_FRAMES).to_dict()
        pred, dim = lm_config("llama-3.2-1b", tiny=True).to_dict(), 64
    else:
        base = paper_vljepa_config()  # V-JEPA 2 ViT-L/16 256 px, Llama-3.2-1B layers 8-15
        x, pred, dim = {**base.x_encoder, "frames_per_clip": NUM_FRAMES}, base.predictor, base.embed_dim
    return VLJepaConfig(x_encoder=x, predictor=pred, y_encoder=y, embed_dim=dim, predictor_layers_from=8,
                        x_encoder_name_or_path=None, y_encoder_name_or_path=None, max_query_length=64,
                        max_target_length=64)


def build_vl(ctx: Ctx, device: torch.device | None = None, tiny: bool | None = None) -> VLJepaModel:
    """Random-weight VL-JEPA on `device` (default: the context's), with both tokenizers attached."""
    device = device or ctx.device
    cfg = vl_config(ctx.tiny if tiny is None else tiny, ctx.minilm_dir)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(ctx.seed)
        model = VLJepaModel(cfg)
    model.to(device)
    model.attach_tokenizers(tiny_tokenizer("llama", TINY_CORPUS + TEXTS),
                            AutoTokenizer.from_pretrained(ctx.minilm_dir))
    return model


def _clips(model: VLJepaModel, n: int, device: torch.device | str, seed: int = 0) -> torch.Tensor:
    crop = int(model.config.x_encoder["crop_size"])
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, NUM_FRAMES, 3, crop, crop, generator=g).to(device)  # (B, T, C, H, W) normalised pixels


def train_step_row(ctx: Ctx, model: VLJepaModel, batch: int, warmup: int, steps: int) -> dict:
    from vljepa.train import param_groups

    opt = torch.optim.AdamW(param_groups(model, OptimConfig()), lr=1e-4, betas=(0.9, 0.95))
    model.train()
    params = [p for g in opt.param_groups for p in g["params"]]
    pixels = _clips(model, batch, ctx.device)
    query, target = [TEXTS[0]] * batch, [TEXTS[2 + i % (len(TEXTS) - 2)] + f" #{i}" for i in range(batch)]
    last = {}

    def step():
        with ctx.autocast():
            loss = model(query=query, target=target, pixel_values=pixels)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        last["loss"] = loss.detach()

    ctx.reset_peak()
    t = time_calls(step, ctx, warmup, steps)
    counts = model.parameter_counts()
    opt.state.clear()  # free the AdamW moments before the streaming arms
    return {"step_ms": t["median_ms"], "step_ms_min": t["min_ms"], "step_ms_max": t["max_ms"], "steps_timed": t["n"],
            "clips_per_s": batch / (t["median_ms"] / 1000), "loss": float(last["loss"]),
            "visual_tokens": int(model.encode_video(pixels[:1]).shape[1]),
            "trainable_m": counts["trainable"] / 1e6, "total_m": counts["total"] / 1e6, **ctx.peak_memory()}


def stream_model_row(ctx: Ctx, model: VLJepaModel, n_windows: int, batch: int, bf16: bool) -> dict:
    """windows/s of `embed_stream` over pre-processed windows (host -> device copy included)."""
    model.eval()
    clips = _clips(model, n_windows, "cpu", seed=1)
    windows = [(0.5 * i, clips[i]) for i in range(n_windows)]
    cfg = StreamConfig(frames_per_window=NUM_FRAMES, batch_size=batch, query=TEXTS[0])

    def run():
        with ctx.autocast(bf16):
            n = sum(1 for _ in embed_stream(model, windows, cfg))
        assert n == n_windows, f"{n} embeddings for {n_windows} windows"

    t = time_calls(run, ctx, warmup=1, repeats=3)
    return {"windows": n_windows, "batch": batch, "ms_per_pass": t["median_ms"],
            "windows_per_s": n_windows / (t["median_ms"] / 1000)}


def synthetic_frames(seconds: float, fps: float = 30.0, h: int = 240, w: int = 320) -> Iterator[tuple]:
    """(t, uint8 (3, H, W)) frames of a moving random texture."""
    base = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for i in range(int(seconds * fps)):
        yield i / fps, base.roll(4 * i, dims=2)


def stream_pipeline_row(ctx: Ctx, model: VLJepaModel, seconds: float, batch: int) -> dict:
    """End to end: 30 fps uint8 frames -> sliding 2 s windows every 0.5 s -> embeddings (bf16 autocast)."""
    model.eval()
    cfg = StreamConfig(frames_per_window=NUM_FRAMES, batch_size=batch, query=TEXTS[0])
    transform = VideoTransform.for_encoder(model.config.x_encoder)

    def run(secs: float) -> int:
        with ctx.autocast():
            return sum(1 for _ in embed_stream(model, iter_windows(synthetic_frames(secs), cfg, transform), cfg))

    run(cfg.window_s + cfg.stride_s * batch)  # warm-up
    ctx.sync()
    t0 = time.perf_counter()
    n = run(seconds)
    ctx.sync()
    dt = time.perf_counter() - t0
    return {"video_s": seconds, "frames": int(seconds * 30), "windows": n, "windows_per_s": n / dt,
            "frames_per_s": int(seconds * 30) / dt, "x_realtime": seconds / dt}


def run_vljepa(ctx: Ctx, batch: int | None = None) -> Section:
    """Training step from pixels and the streaming embedding rate at the paper's 8-frame shape."""
    sec = Section()
    batch = batch or (2 if ctx.tiny else 8)
    warmup, steps = (1, 2) if ctx.tiny else (2, 5)
    built = {}

    def build() -> dict:
        t0 = time.perf_counter()
        built["model"] = build_vl(ctx)
        return {"build_s": time.perf_counter() - t0}

    shape = "tiny" if ctx.tiny else "paper 8-frame (ViT-L 256px, Llama-1B last 8, MiniLM, D=1536)"
    sec.arm({"arm": "build", "shape": shape}, build)
    if "model" not in built:
        return sec
    model = built["model"]
    sec.notes.append("Y-encoder: all-MiniLM-L6-v2 config + tokenizer, random weights (timings do not depend on "
                     "weights; the 87 MB weights do not fit the GPU machine's 64 MiB transfer)")
    sec.arm({"arm": "train_step", "batch": batch}, lambda: train_step_row(ctx, model, batch, warmup, steps), ctx)
    n_windows = 4 * batch if ctx.tiny else 8 * batch
    for bf16 in (True, False):
        sec.arm({"arm": "stream_model", "precision": "bf16_autocast" if bf16 else "fp32"},
                lambda b=bf16: stream_model_row(ctx, model, n_windows, batch, b), ctx)
    seconds = 4.0 if ctx.tiny else 20.0
    sec.arm({"arm": "stream_pipeline", "precision": "bf16_autocast"},
            lambda: stream_pipeline_row(ctx, model, seconds, batch), ctx)
    for r in sec.rows:
        if "loss" in r:
            sec.checks["train_step loss finite"] = bool(torch.isfinite(torch.tensor(r["loss"])))
    return sec


def vl_parity(ctx: Ctx, sec: Section) -> None:
    """Tiny VL-JEPA: InfoNCE loss on the device (fp32; bf16 autocast) == fp32 CPU loss within tolerance."""
    model = build_vl(ctx, device=torch.device("cpu"), tiny=True).eval()
    pixels = _clips(model, 4, "cpu", seed=2)
    query, target = [TEXTS[0]] * 4, TEXTS[2:6]
    with torch.no_grad():
        ref = float(model(query=query, target=target, pixel_values=pixels)["loss"])
    dev = copy.deepcopy(model).to(ctx.device)
    dev.attach_tokenizers(model.predictor_tokenizer, model.y_tokenizer)
    for arm, bf16 in (("fp32", False), ("bf16_autocast", True)):
        with torch.no_grad(), strict_fp32(), ctx.autocast(bf16):
            got = float(dev(query=query, target=target, pixel_values=pixels.to(ctx.device))["loss"])
        rtol, atol = BF16_TOL if bf16 else FP32_TOL
        ok = abs(ref - got) <= rtol * abs(ref) + atol
        sec.add({"model": "vljepa tiny", "arm": arm, "term": "loss", "cpu_fp32": ref, "device": got,
                         "rel_diff": rel_diff(ref, got), "rtol": rtol, "atol": atol, "pass": ok})
        sec.checks[f"vljepa {arm} loss"] = ok


def vl_train_loop(ctx: Ctx) -> dict:
    """Three optimizer steps of `vljepa.train.train` (Accelerate, bf16) from a saved tiny model."""
    from vljepa.train import train

    src = ctx.work_dir / "vl_tiny_model"
    build_vl(ctx, device=torch.device("cpu"), tiny=True).save_pretrained(src)
    out = ctx.work_dir / "vljepa_loop"
    cfg = load_config(TrainConfig, ROOT / "recipes/vljepa/tiny_cpu.yaml", [
        "model.source=checkpoint", f"model.checkpoint={src}", "data.synthetic_n=8", "optim.batch_size=4",
        "optim.max_steps=3", "optim.warmup_steps=0", f"run.output_dir={out}", "run.mixed_precision=bf16",
        "run.progress=false", "run.log_every=1", "run.resume=false"])
    t0 = time.perf_counter()
    res = train(cfg)
    return {"seconds": time.perf_counter() - t0, "steps": res["step"], "mixed_precision": "bf16",
            "loss": res["last"].get("loss"), "saved_final": (out / "model" / "config.json").is_file()}
