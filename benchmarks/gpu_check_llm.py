"""LLM-JEPA parts of the GPU check: optimizer-step timings, GPU == CPU loss, the Accelerate loop.

Data flow (`llm_steps`): NL-RX-SYNTH records (packaged) -> a byte-level BPE in the model family's
chat format (`jepa_common.tiny.tiny_tokenizer`) -> random-weight Llama-3.2-1B- and Gemma-2-2B-shaped
models built from configs directly on the device (no download) -> records encoded ONCE
(`JepaCollator.encode`) -> per variant, each timed step packs the batch (`JepaCollator`), runs the
forward in bf16 autocast (fp32 master weights), backward, clip, AdamW:
  plain      - lambda = 0 on the same packed forward (`jepa_forward`): plain finetuning
  reference  - the three views packed into one row per record (the paper's Enc(Text))
  in_context - Enc(Text) read inside the conversation; k predictors + Code view extra
  tripled    - the reference code's layout: 3B rows padded to 512 (`benchmarks/llm_jepa_step.py`)
-> rows: step ms (median of timed steps), the update alone (clip + AdamW) and so fwd+bwd per
micro-batch, tokens/s of both (conversation tokens, the same numerator for every variant of a model),
peak memory, and the cost ratios against the in-run baselines.

`llm_parity`: a tiny Llama and a tiny Gemma 2 (`load_model_and_tokenizer`) on one batch: the loss
terms on the device (fp32, and bf16 autocast) against the fp32 CPU values. `llm_train_loop`: three
optimizer steps of `llm_jepa.train.train` (Accelerate, bf16 mixed precision) on the tiny recipe.

Not run directly; `python benchmarks/gpu_check.py` runs these as sections.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from gpu_check_common import Ctx, Section, rel_diff, strict_fp32, time_calls
from transformers import AutoModelForCausalLM, Gemma2Config, PretrainedConfig

from jepa_common.tiny import tiny_tokenizer
from llm_jepa.collator import JepaCollator
from llm_jepa.config import JepaMode, LLMJepaConfig, MixedPrecision, load_llm_jepa_config
from llm_jepa.data import load_records
from llm_jepa.modeling import add_predictor_tokens, ensure_pad_token, jepa_forward, load_model_and_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"llama-3.2-1b": "llama", "gemma-2-2b": "gemma"}  # shape -> tiny_tokenizer family
VARIANTS = ("plain", "reference", "in_context", "tripled")
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=1024)
TINY_MAX_LENGTH = 160  # the tripled layout's padded length in --tiny runs (512 otherwise)
BF16_TOL = (3e-2, 3e-3)  # (rtol, atol) of a bf16-autocast loss against the fp32 CPU loss
FP32_TOL = (1e-4, 1e-5)


def lm_config(shape: str, tiny: bool) -> PretrainedConfig:
    """Config of the real architecture: Llama-3.2-1B (16 layers of the VL-JEPA predictor's shape,
    `vljepa.builders.paper_vljepa_config`) or Gemma-2-2B; `tiny` keeps the class, shrinks the sizes."""
    if shape == "llama-3.2-1b":
        from vljepa.builders import paper_vljepa_config

        config = paper_vljepa_config().sub_config("predictor")  # Llama-3.2-1B widths, last 8 layers
        config.num_hidden_layers = 16
        config._attn_implementation = "sdpa"
    elif shape == "gemma-2-2b":
        config = Gemma2Config(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                              num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                              final_logit_softcapping=30.0, attn_logit_softcapping=50.0, query_pre_attn_scalar=256,
                              hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)
        config._attn_implementation = "eager"  # soft-capping has no SDPA path in transformers
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
    if tiny:
        for key, value in TINY_SHAPE.items():
            setattr(config, key, value)
        if hasattr(config, "layer_types"):
            config.layer_types = config.layer_types[: config.num_hidden_layers] if config.layer_types else None
    return config


def build_lm(shape: str, tiny: bool, corpus: list[str], device: torch.device, seed: int = 0):
    """Random-weight model of `shape` built on `device`, with a BPE tokenizer of its family, a pad token
    and one predictor token (the public `llm_jepa.modeling` helpers; adapter: `load_model_and_tokenizer`
    only builds tiny or pretrained models, not random real-size ones)."""
    tok = tiny_tokenizer(SHAPES[shape], corpus, vocab_size=512 if tiny else 8192)
    config = lm_config(shape, tiny)
    config.vocab_size = max(config.vocab_size, len(tok) + 8)  # real vocab size: the LM head costs what it costs
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, None
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=config._attn_implementation)
    model.to(device)  # no-op when the device context already placed it
    ensure_pad_token(model, tok)
    add_predictor_tokens(model, tok, 1, seed=seed)
    return model, tok


def variant_config(variant: str, max_length: int = 512) -> LLMJepaConfig:
    cfg = LLMJepaConfig()
    cfg.data.max_length = max_length  # the tripled layout pads every row to it (the reference: 512)
    cfg.jepa.predictors = 1
    cfg.jepa.lam = 0.0 if variant == "plain" else 1.0
    cfg.jepa.mode = JepaMode.IN_CONTEXT if variant == "in_context" else JepaMode.REFERENCE
    return cfg


def _loss_fn(variant: str, model, tok, encs, device: torch.device, max_length: int):
    """Zero-argument loss closure of one variant; every call packs the batch from pre-encoded records."""
    import llm_jepa_step

    cfg = variant_config(variant, max_length)
    collate = JepaCollator(tok, cfg)
    if variant == "tripled":
        step = llm_jepa_step._step_fn(SimpleNamespace(variant="tripled"), cfg, model, tok, collate, device)
        return lambda: step(encs), 3 * len(encs) * cfg.data.max_length

    def packed():
        batch = {k: v.to(device, non_blocking=True) for k, v in collate(encs).items()}
        return jepa_forward(model, batch, cfg)["loss"]

    return packed, int(collate(encs)["input_ids"].numel())


def time_variant(ctx: Ctx, variant: str, model, tok, encs, warmup: int, steps: int) -> dict:
    """One variant: forward (bf16 autocast) + backward + clip + AdamW, timed; then the update alone
    (clip + AdamW), so that fwd+bwd per micro-batch (what gradient accumulation repeats) is known too."""
    loss_fn, row_tokens = _loss_fn(variant, model, tok, encs, ctx.device, TINY_MAX_LENGTH if ctx.tiny else 512)
    model.zero_grad(set_to_none=True)  # a variant that failed mid-step may have left gradients behind
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    last = {}

    def update(keep_grads: bool = False):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=not keep_grads)

    def step():
        with ctx.autocast():
            loss = loss_fn()
        loss.backward()
        last["loss"] = loss.detach()
        update(keep_grads=last.get("keep", False))

    ctx.reset_peak()
    t = time_calls(step, ctx, warmup, steps)
    mem = ctx.peak_memory()
    last["keep"] = True
    step()  # leaves (zeroed) gradients in place, so the timed updates do the full AdamW work
    u = time_calls(lambda: update(keep_grads=True), ctx, 0, steps)
    conv_tokens = sum(len(e.full_ids) for e in encs)
    fwd_bwd_ms = max(t["median_ms"] - u["median_ms"], 1e-6)
    out = {"step_ms": t["median_ms"], "step_ms_min": t["min_ms"], "step_ms_max": t["max_ms"], "steps_timed": t["n"],
           "update_ms": u["median_ms"], "fwd_bwd_ms": fwd_bwd_ms, "conv_tokens": conv_tokens,
           "computed_tokens": row_tokens, "tokens_per_s": conv_tokens / (t["median_ms"] / 1000),
           "tokens_per_s_fwd_bwd": conv_tokens / (fwd_bwd_ms / 1000), "loss": float(last["loss"]), **mem}
    model.zero_grad(set_to_none=True)
    opt.state.clear()  # free the AdamW moments before the next variant
    return out


def _ratios(rows: list[dict], shape: str) -> dict:
    by = {r["variant"]: r for r in rows if r.get("model") == shape and "step_ms" in r}
    out = {}
    for num, den in (("reference", "tripled"), ("in_context", "plain"), ("reference", "plain"), ("tripled", "plain")):
        if num in by and den in by:
            out[f"{num}/{den}"] = {"time": by[num]["step_ms"] / by[den]["step_ms"],
                                   "fwd_bwd_time": by[num]["fwd_bwd_ms"] / by[den]["fwd_bwd_ms"],
                                   "memory": by[num]["peak_mem_gib"] / by[den]["peak_mem_gib"]}
    return out


def run_llm_steps(ctx: Ctx, batch: int | None = None) -> Section:
    """Step time, tokens/s and peak memory of every variant on both model shapes."""
    sec = Section()
    batch = batch or (4 if ctx.tiny else 8)
    warmup, steps = (1, 2) if ctx.tiny else (2, 5)
    records = load_records("synth_train", limit=max(batch, 256))
    sec.notes.append(f"batch {batch} NL-RX-SYNTH records, bf16 autocast, AdamW, clip 1.0; {warmup} warm-up + "
                     f"{steps} timed steps (same batch); tokens/s counts conversation tokens")
    for shape in SHAPES:
        if ctx.left() <= 0:
            sec.add({"model": shape, "skipped": "time box reached before this model"})
            continue
        _run_shape(ctx, sec, shape, records, batch, (warmup, steps))
        sec.derived[shape] = _ratios(sec.rows, shape)
        ctx.reset_peak()  # the model of this shape is gone: the next one starts from an empty device
    for r in sec.rows:
        if "loss" in r:
            sec.checks[f"{r['model']}/{r['variant']}: loss finite"] = bool(torch.isfinite(torch.tensor(r["loss"])))
    return sec


def _run_shape(ctx: Ctx, sec: Section, shape: str, records: list[dict], batch: int, schedule: tuple) -> None:
    built: dict = {}
    corpus = [m["content"] for r in records for m in r["messages"]]
    sec.arm({"model": shape, "variant": "build"}, lambda: _build_row(ctx, shape, corpus, built))
    if "model" not in built:
        return
    model, tok = built["model"], built["tok"]
    max_length = TINY_MAX_LENGTH if ctx.tiny else 512
    encs = [JepaCollator(tok, variant_config("reference", max_length)).encode(r) for r in records[:batch]]
    for variant in VARIANTS:
        sec.arm({"model": shape, "variant": variant},
                lambda v=variant: time_variant(ctx, v, model, tok, encs, *schedule), ctx)


def _build_row(ctx: Ctx, shape: str, corpus: list[str], built: dict) -> dict:
    t0 = time.perf_counter()
    model, tok = build_lm(shape, ctx.tiny, corpus, ctx.device, ctx.seed)
    model.train()
    built.update(model=model, tok=tok)
    return {"build_s": time.perf_counter() - t0, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "vocab": model.config.vocab_size, "layers": model.config.num_hidden_layers,
            "hidden": model.config.hidden_size, "attn": model.config._attn_implementation}


def llm_parity(ctx: Ctx, sec: Section) -> None:
    """Tiny Llama and Gemma 2: loss terms on the device (fp32; bf16 autocast) == fp32 CPU, within tolerance."""
    for family in ("llama", "gemma"):
        cfg = LLMJepaConfig()
        cfg.model.tiny_family, cfg.model.tiny_layers = family, 2
        records = load_records("synth_train", limit=4)
        model, tok = load_model_and_tokenizer(cfg, [m["content"] for r in records for m in r["messages"]])
        batch = JepaCollator(tok, cfg)(records)
        with torch.no_grad():
            ref = jepa_forward(model.eval(), batch, cfg)
        dev_model = copy.deepcopy(model).to(ctx.device)
        dev_batch = {k: v.to(ctx.device) for k, v in batch.items()}
        for arm, bf16 in (("fp32", False), ("bf16_autocast", True)):
            with torch.no_grad(), strict_fp32(), ctx.autocast(bf16):
                out = jepa_forward(dev_model, dev_batch, cfg)
            rtol, atol = BF16_TOL if bf16 else FP32_TOL
            for key in ("loss", "lm_loss", "jepa_loss"):
                a, b = float(ref[key]), float(out[key])
                ok = abs(a - b) <= rtol * abs(a) + atol
                sec.add({"model": f"llm_jepa tiny {family}", "arm": arm, "term": key, "cpu_fp32": a,
                                 "device": b, "rel_diff": rel_diff(a, b), "rtol": rtol, "atol": atol, "pass": ok})
                sec.checks[f"llm_jepa {family} {arm} {key}"] = ok


def llm_train_loop(ctx: Ctx) -> dict:
    """Three optimizer steps of `llm_jepa.train.train` (Accelerate; bf16 mixed precision) on the tiny recipe."""
    from llm_jepa.train import train

    out = ctx.work_dir / "llm_jepa_loop"
    cfg = load_llm_jepa_config(ROOT / "recipes/llm_jepa/tiny_cpu.yaml", [
        "data.limit=64", "train.max_steps=3", "train.batch_size=4", "train.grad_accum=2", "train.save_every=null",
        f"train.output_dir={out}", "train.resume=false"])
    cfg.train.mixed_precision = MixedPrecision.BF16
    t0 = time.perf_counter()
    metrics = train(cfg)
    ok = (out / "final").is_dir() and metrics["step"] == 3
    return {"seconds": time.perf_counter() - t0, "steps": metrics["step"], "mixed_precision": "bf16",
            "lm_loss": metrics["lm_loss"], "jepa_loss": metrics["jepa_loss"], "saved_final": ok}
