"""Train-step cost of LLM-JEPA variants on the same NL-RX-SYNTH batches.

Variants (each in its own subprocess, so peak memory is per variant):
  plain      - plain finetuning: the model's own forward + causal-LM loss on the conversation
  tripled    - the reference code's layout: full, Text and Code views as a 3B batch, every row padded
               to max_length 512, logits for all rows, last-layer hidden states for the JEPA term
  reference  - ours: the three views packed into one row per record (llm_jepa.jepa_forward)
  in_context - ours: Enc(Text) read inside the conversation; only k predictors + Code extra
Reports the median step time (forward + backward + AdamW) and peak memory (CUDA: max allocated;
CPU: peak RSS of the process), and the ratios against the targets (reference <= 0.5x tripled,
in_context <= 1.4x plain).

    python benchmarks/llm_jepa_step.py [--hidden 256 --layers 4 --batch 8 --steps 6]
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

VARIANTS = ("plain", "tripled", "reference", "in_context")


def _setup(args):
    from llm_jepa.collator import JepaCollator
    from llm_jepa.config import JepaMode, LLMJepaConfig
    from llm_jepa.data import load_records
    from llm_jepa.modeling import load_model_and_tokenizer

    records = load_records("synth_train", limit=args.batch * (args.steps + 2))
    cfg = LLMJepaConfig()
    cfg.model.tiny_hidden_size, cfg.model.tiny_layers, cfg.jepa.predictors = args.hidden, args.layers, 1
    cfg.model.tiny_vocab_size = args.vocab
    cfg.jepa.mode = JepaMode.IN_CONTEXT if args.variant == "in_context" else JepaMode.REFERENCE
    corpus = [m["content"] for r in records for m in r["messages"]]
    model, tok = load_model_and_tokenizer(cfg, corpus)
    return cfg, model, tok, JepaCollator(tok, cfg), records


def _pad(seqs: list[list[int]], length: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(seqs), length), pad)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    return ids, mask


def _step_fn(args, cfg, model, tok, collate, device):
    from llm_jepa.collator import EncodedRecord
    from llm_jepa.modeling import jepa_forward

    if args.variant in ("reference", "in_context"):
        return lambda recs: jepa_forward(model, {k: v.to(device) for k, v in collate(recs).items()}, cfg)["loss"]

    def encode(recs):  # chat records, or EncodedRecords encoded once beforehand (benchmarks/gpu_check_llm.py)
        return [r if isinstance(r, EncodedRecord) else collate.encode(r) for r in recs]

    def plain(recs):
        encs = encode(recs)
        ids, mask = _pad([e.full_ids for e in encs], max(len(e.full_ids) for e in encs), tok.pad_token_id)
        labels, _ = _pad([e.labels for e in encs], ids.shape[1], -100)
        return model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss

    def tripled(recs):  # reference layout: 3B rows padded to max_length, logits everywhere
        encs = encode(recs)
        B = len(encs)
        length = cfg.data.max_length  # 512 by default, like the reference
        ids, mask = _pad([e.full_ids for e in encs] + [e.text_ids for e in encs] + [e.code_ids for e in encs],
                         length, tok.pad_token_id)
        labels, _ = _pad([e.labels for e in encs], length, -100)
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True)
        lm = F.cross_entropy(out.logits[:B, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(device))
        h = out.hidden_states[-1]
        rows = torch.arange(B, device=device)
        text = h[B + rows, torch.tensor([e.text_last for e in encs], device=device)]
        code = h[2 * B + rows, torch.tensor([e.code_last for e in encs], device=device)]
        return lm + (1 - F.cosine_similarity(text, code, dim=-1)).mean()

    return plain if args.variant == "plain" else tripled


def run_variant(args) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(args.threads)
    cfg, model, tok, collate, records = _setup(args)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    step = _step_fn(args, cfg, model, tok, collate, device)
    times = []
    for i in range(args.steps + 1):  # first step is warm-up
        recs = records[i * args.batch:(i + 1) * args.batch]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(recs).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"variant": args.variant, "step_s": statistics.median(times), "peak_mib": peak, "device": device.type}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS)
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
    res = {}
    for v in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", v] + [f"--{k}={getattr(args, k)}" for k in
                                                            ("hidden", "layers", "vocab", "batch", "steps", "threads")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        res[v] = json.loads(out)
        print(f"{v:>10}: {res[v]['step_s'] * 1000:8.1f} ms/step   peak {res[v]['peak_mib']:8.1f} MiB "
              f"({res[v]['device']})")
    t = {v: res[v]["step_s"] for v in VARIANTS}
    m = {v: res[v]["peak_mib"] for v in VARIANTS}
    print(f"reference packing / tripled-512: time {t['reference'] / t['tripled']:.2f}x (target <= 0.5), "
          f"memory {m['reference'] / m['tripled']:.2f}x")
    print(f"in_context / plain:              time {t['in_context'] / t['plain']:.2f}x (target <= 1.4), "
          f"memory {m['in_context'] / m['plain']:.2f}x")
    print(f"reference packing / plain:       time {t['reference'] / t['plain']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
