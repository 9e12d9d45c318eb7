"""Train-step cost of LLM-JEPA variants on the same batches (NL-RX-SYNTH by default), measured in ONE process with
interleaved repeats (each repeat times every variant once, in turn), medians reported.

Variants (all on one tiny Llama, one AdamW step each: collate + forward + backward + step):
  plain      - plain finetuning, fair: the same packed forward with lambda = 0 (conversation rows only,
               LM head at labelled positions only)
  tripled    - the reference code's layout: full, Text and Code views as a 3B batch, every row padded to
               max_length 512, logits at every position of every row, last-layer states for the JEPA term
  reference  - ours: the three views packed into one row per record (`jepa.mode: reference`)
  in_context - ours: Enc(Text) read inside the conversation; only k predictors + Code view extra
  stp        - Semantic Tube Prediction (jepa.objective=stp, lambda 0.02): the plain rows plus the span
               draw (llm_jepa.stp.add_step_spans, timed) and the STP term on the same forward
For each variant: median step time, its time ratio against plain, and its token ratio (non-pad tokens in
its rows / non-pad tokens in plain rows; tripled also lists the padded positions it computes). Targets:
in_context <= 1.25x plain; reference time ratio <= 1.15 x its token ratio; stp <= 1.05x plain. CUDA: peak memory per variant.

    python benchmarks/llm_jepa_step.py [--hidden 256 --layers 4 --batch 8 --repeats 10 --threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

VARIANTS = ("plain", "tripled", "reference", "in_context", "stp")


def _configs(args):
    from llm_jepa.config import JepaMode, LLMJepaConfig, Objective

    out = {}
    for v in VARIANTS:
        cfg = LLMJepaConfig()
        cfg.model.tiny_hidden_size, cfg.model.tiny_layers, cfg.model.tiny_vocab_size = args.hidden, args.layers, args.vocab
        cfg.jepa.predictors, cfg.data.max_length = 1, 4096
        cfg.jepa.lam = 0.0 if v == "plain" else 1.0
        cfg.jepa.mode = JepaMode.IN_CONTEXT if v == "in_context" else JepaMode.REFERENCE
        if v == "stp":
            cfg.jepa.lam, cfg.jepa.objective = 0.02, Objective.STP
        out[v] = cfg
    return out


def _pad(seqs: list[list[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), length), pad)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    return ids, mask


def tripled_loss(model, encs, pad_id: int, device, length: int = 512) -> torch.Tensor:
    """The reference layout: 3B rows padded to `length` (the reference's max_length, 512), full-vocabulary
    logits everywhere."""
    B = len(encs)
    ids, mask = _pad([e.full_ids for e in encs] + [e.text_ids for e in encs] + [e.code_ids for e in encs], length,
                     pad_id)
    labels, _ = _pad([e.labels for e in encs], length, -100)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
    lm = F.cross_entropy(out.logits[:B, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(device))
    h = out.hidden_states[-1]
    rows = torch.arange(B, device=device)
    text = h[B + rows, torch.tensor([e.text_last for e in encs], device=device)]
    code = h[2 * B + rows, torch.tensor([e.code_last for e in encs], device=device)]
    return lm + (1 - F.cosine_similarity(text, code, dim=-1)).mean()


def _step_fn(args, cfg, model, tok, collate, device):
    """The tripled step under the earlier per-variant API (benchmarks/gpu_check_llm.py calls it): records or
    pre-encoded records -> tripled_loss."""
    from llm_jepa.collator import EncodedRecord

    if args.variant != "tripled":
        raise ValueError(f"_step_fn serves the tripled layout only, not {args.variant!r}; use one_step()")
    return lambda recs: tripled_loss(model, [r if isinstance(r, EncodedRecord) else collate.encode(r) for r in recs],
                                     tok.pad_token_id, device, cfg.data.max_length)


def setup(args, device):
    """One model, one collator and the pre-encoded records per variant (tokenization is not timed)."""
    from llm_jepa.collator import JepaCollator
    from llm_jepa.data import load_records
    from llm_jepa.modeling import load_model_and_tokenizer

    records = load_records(args.data, limit=args.batch * args.steps)
    if len(records) < args.batch * args.steps:
        raise SystemExit(f"{args.data} has {len(records)} records; --batch {args.batch} x --steps {args.steps} "
                         "needs more (lower them or pass a larger --data)")
    cfgs = _configs(args)
    model, tok = load_model_and_tokenizer(cfgs["reference"], [m["content"] for r in records for m in r["messages"]])
    model.to(device).train()
    collators = {v: JepaCollator(tok, cfgs[v]) for v in VARIANTS if v != "tripled"}
    collators["tripled"] = collators["reference"]  # the same views, laid out the reference's way
    encoded = {v: [c.encode(r) for r in records] for v, c in collators.items() if v != "tripled"}
    encoded["tripled"] = encoded["reference"]
    return model, tok, cfgs, collators, encoded


def one_step(v: str, model, tok, cfgs, collators, encs, opt, device) -> tuple[float, int, int]:
    """(seconds, non-pad tokens, computed positions) of one optimizer step of variant `v`."""
    from llm_jepa.modeling import jepa_forward
    from llm_jepa.stp import add_step_spans

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    if v == "tripled":
        loss = tripled_loss(model, encs, tok.pad_token_id, device)
        tokens = sum(len(e.full_ids) + len(e.text_ids) + len(e.code_ids) for e in encs)
        positions = 3 * len(encs) * 512
    else:
        batch = add_step_spans([collators[v](encs)], cfgs[v].stp, 0, 0, 0)[0]  # STP: the span draw is timed
        tokens, positions = int((batch["segment_ids"] != 0).sum()), batch["input_ids"].numel()
        loss = jepa_forward(model, {k: t.to(device) for k, t in batch.items()}, cfgs[v])["loss"]
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0, tokens, positions


def run(args) -> dict[str, dict[str, float]]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    model, tok, cfgs, collators, encoded = setup(args, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    variants = [v for v in VARIANTS if not (args.skip_tripled and v == "tripled")]
    times = {v: [] for v in variants}
    tokens, positions, peak = dict.fromkeys(variants, 0), dict.fromkeys(variants, 0), dict.fromkeys(variants, 0.0)
    for rep in range(args.repeats + 1):  # repeat 0 warms every variant up and is not counted
        step = rep % args.steps
        for v in variants:  # interleaved: load changes on a shared machine hit every variant alike
            encs = encoded[v][step * args.batch:(step + 1) * args.batch]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            dt, n, pos = one_step(v, model, tok, cfgs, collators, encs, opt, device)
            if rep:
                times[v].append(dt)
                tokens[v] += n
                positions[v] += pos
            if device.type == "cuda":
                peak[v] = max(peak[v], torch.cuda.max_memory_allocated() / 2**20)
    med = {v: statistics.median(times[v]) for v in variants}
    return {v: {"ms": med[v] * 1000, "time_ratio": med[v] / med["plain"], "token_ratio": tokens[v] / tokens["plain"],
                "position_ratio": positions[v] / positions["plain"], "peak_mib": peak[v],
                "q1_ms": statistics.quantiles(times[v], n=4)[0] * 1000,
                "q3_ms": statistics.quantiles(times[v], n=4)[2] * 1000} for v in variants}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synth_train", help="packaged set (or JSONL) the batches come from")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="distinct batches, cycled through the repeats")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-tripled", action="store_true", help="leave out the (slow) padded reference layout")
    args = p.parse_args()
    if min(args.hidden, args.layers, args.vocab, args.batch, args.steps, args.threads) < 1 or args.repeats < 2:
        p.error("--hidden, --layers, --vocab, --batch, --steps and --threads must be >= 1, --repeats >= 2 "
                "(medians and quartiles of the timed repeats)")
    res = run(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{args.data}, {device}, hidden {args.hidden}, {args.layers} layers, batch {args.batch}, median of {args.repeats} "
          "interleaved repeats")
    for v, r in res.items():
        mem = f"  peak {r['peak_mib']:.0f} MiB" if device == "cuda" else ""
        print(f"{v:>10}: {r['ms']:8.1f} ms/step (IQR {r['q1_ms']:.0f}-{r['q3_ms']:.0f})  time {r['time_ratio']:.2f}x  "
              f"tokens {r['token_ratio']:.2f}x  computed positions {r['position_ratio']:.2f}x{mem}")
    ref, ic = res["reference"], res["in_context"]
    print(f"in_context / plain: time {ic['time_ratio']:.2f}x (target <= 1.25x)")
    print(f"reference: time {ref['time_ratio']:.2f}x / tokens {ref['token_ratio']:.2f}x = "
          f"{ref['time_ratio'] / ref['token_ratio']:.2f} (target <= 1.15)")
    if "stp" in res:
        print(f"stp / plain: time {res['stp']['time_ratio']:.2f}x (target <= 1.05x)")
    if "tripled" in res:
        print(f"reference / tripled-512: time {ref['ms'] / res['tripled']['ms']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
