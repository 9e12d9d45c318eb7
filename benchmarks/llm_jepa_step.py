"""Train-step cost of LLM-JEPA variants on the same NL-RX-SYNTH batches.

Variants (each in its own subprocess, so peak memory is per variant):
  plain      - plain finetuning: the model's own forward + causal-LM loss on the conversation
  tripled    - the reference code's layout: full, Text and Code views as a 3B batch, every row padded
               to max_length 512, logits for all rows, last-layer hidden states for the JEPA term
  reference  - ours: the three views packed into one row per record (llm_jepa.jepa_forward)
  in_context - ours: Enc(Text) read inside the conversation; only k predictors + Code extra
  plain_ours - our plain finetuning path: jepa_forward with lambda = 0 (logits at labelled tokens only)
  stp        - Semantic Tube Prediction (jepa.objective=stp, lambda 0.02): the plain_ours pass plus the
               span draw (llm_jepa.stp.add_spans, included in the step time) and the STP term
Reports the median step time (forward + backward + AdamW) and peak memory (CUDA: max allocated;
CPU: peak RSS of the process), and the ratios against the targets (reference <= 0.5x tripled,
in_context <= 1.4x plain, stp <= 1.05x plain finetuning). `--repeats R` runs the chosen variants
R times in turn (interleaved, so load drifts hit every variant alike) and reports, per variant, the
median over the repeats of each run's median step time.

    python benchmarks/llm_jepa_step.py [--hidden 256 --layers 4 --batch 8 --steps 6]
    python benchmarks/llm_jepa_step.py --variants plain plain_ours stp --in-process --steps 40   # STP cost target
`--in-process` times the variants step by step in ONE process on ONE model (the order rotated every
step) and also prints the median of per-step ratios: the least noisy comparison on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

VARIANTS = ("plain", "tripled", "reference", "in_context", "plain_ours", "stp")


def _variant_cfg(args, variant: str):
    from llm_jepa.config import JepaMode, LLMJepaConfig, Objective

    cfg = LLMJepaConfig()
    cfg.model.tiny_hidden_size, cfg.model.tiny_layers, cfg.jepa.predictors = args.hidden, args.layers, 1
    cfg.model.tiny_vocab_size = args.vocab
    cfg.jepa.mode = JepaMode.IN_CONTEXT if variant == "in_context" else JepaMode.REFERENCE
    if variant in ("plain_ours", "stp"):
        cfg.jepa.lam = 0.0 if variant == "plain_ours" else 0.02
        cfg.jepa.objective = Objective.STP
    return cfg


def _setup(args, variant: str):
    from llm_jepa.collator import JepaCollator
    from llm_jepa.data import load_records
    from llm_jepa.modeling import load_model_and_tokenizer

    records = load_records("synth_train", limit=args.batch * (args.steps + 2))
    cfg = _variant_cfg(args, variant)
    corpus = [m["content"] for r in records for m in r["messages"]]
    model, tok = load_model_and_tokenizer(cfg, corpus)  # the same model and tokenizer for every variant
    return cfg, model, tok, JepaCollator(tok, cfg), records


def _pad(seqs: list[list[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), length), pad)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    return ids, mask


def _step_fn(variant: str, cfg, model, tok, collate, device):
    from llm_jepa.modeling import jepa_forward
    from llm_jepa.stp import add_step_spans

    if variant in ("reference", "in_context", "plain_ours", "stp"):
        def packed(recs):
            batch = add_step_spans([collate(recs)], cfg.stp, 0, 0, 0)[0]  # STP: the span draw is timed too
            return jepa_forward(model, {k: v.to(device) for k, v in batch.items()}, cfg)["loss"]
        return packed

    def plain(recs):
        encs = [collate.encode(r) for r in recs]
        ids, mask = _pad([e.full_ids for e in encs], max(len(e.full_ids) for e in encs), tok.pad_token_id)
        labels, _ = _pad([e.labels for e in encs], ids.shape[1], -100)
        return model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss

    def tripled(recs):  # reference layout: 3B rows padded to max_length, logits everywhere
        encs = [collate.encode(r) for r in recs]
        B = len(encs)
        ids, mask = _pad([e.full_ids for e in encs] + [e.text_ids for e in encs] + [e.code_ids for e in encs],
                         512, tok.pad_token_id)
        labels, _ = _pad([e.labels for e in encs], 512, -100)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        lm = F.cross_entropy(out.logits[:B, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(device))
        h = out.hidden_states[-1]
        rows = torch.arange(B, device=device)
        text = h[B + rows, torch.tensor([e.text_last for e in encs], device=device)]
        code = h[2 * B + rows, torch.tensor([e.code_last for e in encs], device=device)]
        return lm + (1 - F.cosine_similarity(text, code, dim=-1)).mean()

    return plain if variant == "plain" else tripled


def _timed_step(step, opt, recs, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step(recs).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_variant(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    cfg, model, tok, collate, records = _setup(args, args.variant)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    step = _step_fn(args.variant, cfg, model, tok, collate, device)
    times = []
    for i in range(args.steps + 1):  # first step is warm-up
        t = _timed_step(step, opt, records[i * args.batch:(i + 1) * args.batch], device)
        if i:
            times.append(t)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"variant": args.variant, "step_s": statistics.median(times), "peak_mib": peak, "device": device.type}


def run_in_process(args) -> dict[str, list[float]]:
    """One process, one model: every step runs each variant once on the same records, the order rotated
    step by step, so load drifts hit all variants alike (no memory numbers: the process is shared)."""
    from llm_jepa.collator import JepaCollator

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    _, model, tok, _, records = _setup(args, "stp")
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    steps = {}
    for v in args.variants:
        cfg = _variant_cfg(args, v)
        steps[v] = _step_fn(v, cfg, model, tok, JepaCollator(tok, cfg), device)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for i in range(args.steps + 1):  # step 0 warms every variant up
        recs = records[i * args.batch:(i + 1) * args.batch]
        k = i % len(args.variants)
        for v in args.variants[k:] + args.variants[:k]:
            t = _timed_step(steps[v], opt, recs, device)
            if i:
                times[v].append(t)
    return times


def _report_in_process(times: dict[str, list[float]]) -> None:
    for v, ts in times.items():
        print(f"{v:>10}: {statistics.median(ts) * 1000:8.1f} ms/step (median of {len(ts)} interleaved steps)")
    for a, b, target in (("stp", "plain_ours", " (target <= 1.05)"), ("stp", "plain", " (target <= 1.05)"),
                         ("plain_ours", "plain", "")):
        if a in times and b in times:
            per_step = statistics.median(x / y for x, y in zip(times[a], times[b]))
            print(f"{a} / {b}: median of per-step ratios {per_step:.3f}x, ratio of medians "
                  f"{statistics.median(times[a]) / statistics.median(times[b]):.3f}x{target}")


def _run_once(args, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--variant", variant] + [f"--{k}={getattr(args, k)}" for k in
                                                              ("hidden", "layers", "vocab", "batch", "steps", "threads")]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])


def _ratio(t: dict, m: dict, a: str, b: str, label: str, target: str = "") -> None:
    if a in t and b in t:
        print(f"{label:<33}time {t[a] / t[b]:.2f}x{target}, memory {m[a] / m[b]:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS[:4]),
                   help="variants to compare (default: the four LLM-JEPA layouts)")
    p.add_argument("--repeats", type=int, default=1, help="interleaved runs of every variant")
    p.add_argument("--in-process", action="store_true",
                   help="time the variants step by step in one process on one model (the STP cost target)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0
    if args.in_process:
        _report_in_process(run_in_process(args))
        return 0
    runs: dict[str, list[dict]] = {v: [] for v in args.variants}
    for r in range(args.repeats):
        for v in args.variants:
            runs[v].append(_run_once(args, v))
            print(f"[repeat {r}] {v:>10}: {runs[v][-1]['step_s'] * 1000:8.1f} ms/step", flush=True)
    t = {v: statistics.median(x["step_s"] for x in rs) for v, rs in runs.items()}
    m = {v: statistics.median(x["peak_mib"] for x in rs) for v, rs in runs.items()}
    for v in args.variants:
        print(f"{v:>10}: {t[v] * 1000:8.1f} ms/step (median of {args.repeats})   peak {m[v]:8.1f} MiB "
              f"({runs[v][0]['device']})")
    _ratio(t, m, "reference", "tripled", "reference packing / tripled-512:", " (target <= 0.5)")
    _ratio(t, m, "in_context", "plain", "in_context / plain:", " (target <= 1.4)")
    _ratio(t, m, "reference", "plain", "reference packing / plain:")
    _ratio(t, m, "stp", "plain", "stp / plain (HF forward):", " (target <= 1.05)")
    _ratio(t, m, "stp", "plain_ours", "stp / plain_ours (same path):", " (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
