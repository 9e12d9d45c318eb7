"""Pretrain a small Llama with plain next-token prediction on the NL-RX-free corpus (`llm_jepa.corpus`).

Data flow: `build_corpus` (train / held-out documents) -> a byte-level BPE trained on the train
documents (`jepa_common.tiny.tiny_tokenizer`, Llama-3 special tokens and chat template, plus a pad
token distinct from EOS) -> every document rendered with the chat template and tokenized -> one
token stream cut into blocks of `block` tokens -> `LlamaForCausalLM` (random init, `tiny_causal_lm`)
-> AdamW, linear warmup + cosine decay, seeded epoch permutations of the blocks -> `metrics.jsonl`,
an atomic `state.pt` every `save_every` steps (a restarted run resumes from it) -> held-out loss
(fp32 and bf16) -> `final/`: a normal Hugging Face checkpoint in bf16 + tokenizer + README.md.

    python -m llm_jepa.pretrain --out runs/pretrain/mini_llama --set max_steps=1000
    llm-jepa train --config recipes/llm_jepa/repro_nlrx_pretrained.yaml   # finetune from it

The shipped copy is `llm_jepa/pretrained/mini_llama` (model.name_or_path: mini-llama).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from jepa_common.config import load_config, save_config
from jepa_common.io import atomic_write, atomic_write_json, atomic_write_text, run_metadata
from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer
from llm_jepa.corpus import build_corpus
from llm_jepa.data import TEMPLATE_KWARGS, stop_token_ids

PAD_TOKEN = "<|finetune_right_pad_id|>"  # the name Llama-3.x reserves for padding


@dataclass
class PretrainConfig:
    """Model size, data and optimisation of the small pretrained LM (defaults: the shipped model)."""

    out_dir: str = "runs/pretrain/mini_llama"
    vocab_size: int = 2048  # BPE merges + byte alphabet (special tokens come on top)
    hidden_size: int = 192
    layers: int = 4
    heads: int = 6
    kv_heads: int = 2
    intermediate_size: int = 512
    block: int = 256  # tokens per training sequence (documents are packed back to back)
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    max_steps: int = 1000
    seed: int = 0
    heldout_frac: float = 0.02
    max_documents: int | None = None  # smoke tests: keep the first N train (and N // 10 held-out) documents
    save_every: int = 25
    eval_every: int = 200  # quick held-out loss on `eval_quick_blocks` blocks (the full one runs at the end)
    eval_quick_blocks: int = 32
    threads: int = 1
    budget_s: float | None = None  # stop early (and still save) after this much training wall time

    def __post_init__(self) -> None:
        small = {k: getattr(self, k) for k in ("batch_size", "save_every", "eval_every", "eval_quick_blocks",
                                                "threads") if getattr(self, k) < 1}
        if small or self.block < 2 or self.warmup_steps < 0 or self.max_steps < 0:
            bad = {**small, "block": self.block, "warmup_steps": self.warmup_steps, "max_steps": self.max_steps}
            raise ValueError(f"{bad}: batch_size, the intervals and threads must be >= 1, block >= 2, "
                             "warmup_steps and max_steps >= 0")
        floats = {k: getattr(self, k) for k in ("lr", "min_lr_ratio", "weight_decay", "max_grad_norm")}
        if not all(math.isfinite(v) for v in floats.values()) or self.lr <= 0:
            raise ValueError(f"{floats}: these must be finite numbers and lr > 0")


def lr_lambda(cfg: PretrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    return f


def build_tokenizer(cfg: PretrainConfig, train_docs: list[list[dict]]):
    tok = tiny_tokenizer("llama", [m["content"] for d in train_docs for m in d], vocab_size=cfg.vocab_size)
    tok.add_special_tokens({"pad_token": PAD_TOKEN})
    return tok


def to_blocks(tok, docs: list[list[dict]], block: int) -> torch.Tensor:
    """Render every document with the chat template, concatenate, cut into (N, block) token blocks."""
    texts = [tok.apply_chat_template(d, tokenize=False, **TEMPLATE_KWARGS) for d in docs]
    ids = [t for row in tok(texts, add_special_tokens=False)["input_ids"] for t in row]
    n = len(ids) // block
    if n == 0:
        raise ValueError(f"{len(ids)} tokens < one block of {block}; lower block or add documents")
    return torch.tensor(ids[: n * block], dtype=torch.long).view(n, block)  # (N, block)


@torch.no_grad()
def heldout_loss(model, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats per token) over the held-out blocks."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        x = blocks[i:i + batch_size]  # (b, block)
        loss = model(input_ids=x, labels=x).loss  # mean over b * (block - 1) targets
        total += float(loss) * x.shape[0] * (x.shape[1] - 1)
        count += x.shape[0] * (x.shape[1] - 1)
    model.train(was_training)
    return total / count


def batch_indices(n_blocks: int, cfg: PretrainConfig, step: int) -> torch.Tensor:
    """Block indices of optimizer step `step`: seeded permutation per epoch (resume-exact)."""
    per_epoch = n_blocks // cfg.batch_size
    epoch, within = divmod(step, per_epoch)
    perm = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(cfg.seed + epoch))
    return perm[within * cfg.batch_size:(within + 1) * cfg.batch_size]


def _save_state(path: Path, model, opt, sched, step: int, clock: dict) -> None:
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
             "clock": clock}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _setup(cfg: PretrainConfig, out: Path):
    train_docs, held_docs, stats = build_corpus(cfg.heldout_frac, cfg.seed)
    if cfg.max_documents is not None:
        train_docs, held_docs = train_docs[: cfg.max_documents], held_docs[: max(1, cfg.max_documents // 10)]
    tok_dir = out / "tokenizer"
    if tok_dir.is_dir():  # resume: the tokenizer of the interrupted run
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tok = build_tokenizer(cfg, train_docs)
        tok.save_pretrained(tok_dir)
    train_blocks, held_blocks = to_blocks(tok, train_docs, cfg.block), to_blocks(tok, held_docs, cfg.block)
    if len(train_blocks) < cfg.batch_size:
        raise ValueError(f"{len(train_blocks)} training blocks of {cfg.block} tokens < batch_size={cfg.batch_size}; "
                         "lower batch_size or block, or raise max_documents")
    model = tiny_causal_lm("llama", tok, hidden_size=cfg.hidden_size, num_layers=cfg.layers, num_heads=cfg.heads,
                           num_kv_heads=cfg.kv_heads, intermediate_size=cfg.intermediate_size, seed=cfg.seed)
    return tok, model, train_blocks, held_blocks, stats


def pretrain(cfg: PretrainConfig) -> dict:
    """Train (resuming from `out_dir/state.pt` when present), evaluate, write `out_dir/final`."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    tok, model, train_blocks, held_blocks, stats = _setup(cfg, out)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    step, clock = 0, {"wall_s": 0.0, "cpu_s": 0.0}
    if (out / "state.pt").is_file():
        state = torch.load(out / "state.pt", weights_only=True)  # tensors, ints and dicts only
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, clock = state["step"], state["clock"]
        _truncate_log(out / "metrics.jsonl", step)
    step = _loop(cfg, out, model, opt, sched, train_blocks, held_blocks, step, clock)
    return _finish(cfg, out, tok, model, held_blocks, stats, step, clock, int(train_blocks.numel()))


def _truncate_log(path: Path, step: int) -> None:
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _loop(cfg, out, model, opt, sched, train_blocks, held_blocks, step, clock) -> int:
    model.train()
    t_wall, t_cpu = time.perf_counter() - clock["wall_s"], time.process_time() - clock["cpu_s"]
    while step < cfg.max_steps and (cfg.budget_s is None or clock["wall_s"] < cfg.budget_s):
        x = train_blocks[batch_indices(len(train_blocks), cfg, step)]  # (batch, block)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        clock.update(wall_s=time.perf_counter() - t_wall, cpu_s=time.process_time() - t_cpu)
        row = {"step": step, "loss": float(loss.detach()), "lr": sched.get_last_lr()[0], "grad_norm": float(gnorm),
               "tokens": step * cfg.batch_size * cfg.block, **clock}
        if step % cfg.eval_every == 0:
            row["heldout_loss_quick"] = heldout_loss(model, held_blocks[: cfg.eval_quick_blocks], cfg.batch_size)
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if step % cfg.save_every == 0:
            _save_state(out / "state.pt", model, opt, sched, step, clock)
    _save_state(out / "state.pt", model, opt, sched, step, clock)
    return step


def _finish(cfg, out, tok, model, held_blocks, stats, step, clock, train_tokens: int) -> dict:
    params = sum(p.numel() for p in model.parameters())
    metrics = {"step": step, "tokens_seen": step * cfg.batch_size * cfg.block, "parameters": params,
               "train_tokens": train_tokens, "heldout_tokens": int(held_blocks.numel()),
               "heldout_loss_fp32": heldout_loss(model, held_blocks, cfg.batch_size), **clock,
               "corpus": asdict(stats), "config": asdict(cfg), **run_metadata()}
    model = model.to(torch.bfloat16)
    metrics["heldout_loss_bf16_weights"] = heldout_loss(model.float(), held_blocks, cfg.batch_size)
    model = model.to(torch.bfloat16)
    final, tmp = out / "final", out / ".tmp-final"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.generation_config.eos_token_id = stop_token_ids(tok)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    atomic_write_json(tmp / "pretrain_metrics.json", metrics)
    atomic_write_text(tmp / "README.md", model_card(metrics))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_json(out / "pretrain_metrics.json", metrics)
    return metrics


def model_card(metrics: dict) -> str:
    """README.md of a pretrained model folder: what it is, how it was made (exact command), its numbers."""
    c, corpus = metrics["config"], metrics["corpus"]
    sources = ", ".join(f"{k} {v}" for k, v in corpus["documents"].items())
    defaults = asdict(PretrainConfig())
    over = " ".join(f"--set {k}={v}" for k, v in c.items() if k != "out_dir" and v != defaults.get(k))
    return f"""# mini-llama: a small Llama pretrained on an NL-RX-free corpus

A {metrics['parameters'] / 1e6:.2f}M-parameter `LlamaForCausalLM` (hidden {c['hidden_size']}, {c['layers']} layers, \
{c['heads']} heads / {c['kv_heads']} KV heads, MLP {c['intermediate_size']}, tied embeddings, weights in bf16) with \
its own byte-level BPE ({c['vocab_size']} entries + Llama-3 special tokens, pad `{PAD_TOKEN}`) and the \
Llama-3 chat template, pretrained with plain next-token prediction by `llm_jepa.pretrain`. It is the starting \
point of the pretrained-then-finetuned NL-RX test in docs/llm_jepa_reproduction.md. Load it with \
`model.name_or_path: mini-llama` or `AutoModelForCausalLM.from_pretrained(llm_jepa.pretrained.pretrained_path("mini-llama"))`.

## Data (`llm_jepa.corpus`)

One document per record of the packaged sets ({sources}), rendered with the chat template and packed
into blocks of {c['block']} tokens. NL-RX contributes only the *training* descriptions (system + user
turn, never the regex). Excluded: every NL-RX test record, every NL-RX regex (train and test assistant
turns), {corpus['dropped_test_description']} training descriptions equal to a test description,
{corpus['dropped_test_regex']} whose regex is also a test regex, and {corpus['dropped_leaking_documents']} documents
containing an NL-RX regex of 8+ characters verbatim. Held out: {corpus['heldout_documents']} random
documents ({metrics['heldout_tokens']} tokens); trained on: {corpus['train_documents']} documents
({metrics['train_tokens']} tokens).

## Reproduce

    python -m llm_jepa.pretrain --out runs/pretrain/mini_llama {over}

(seed {c['seed']}; AdamW lr {c['lr']}, betas (0.9, 0.95), weight decay {c['weight_decay']}, {c['warmup_steps']} \
warmup steps then cosine to {c['min_lr_ratio']} x lr, batch {c['batch_size']} x {c['block']} tokens, clip \
{c['max_grad_norm']}; a killed run resumes from `state.pt`.) Then copy `runs/pretrain/mini_llama/final/*` here.

## Budget and result (measured)

| | |
|---|---|
| optimizer steps | {metrics['step']} |
| tokens seen | {metrics['tokens_seen']} ({metrics['tokens_seen'] / metrics['train_tokens']:.2f} epochs) |
| training wall time | {metrics['wall_s'] / 60:.1f} min on the shared 2-core CPU ({c['threads']} torch thread(s)) |
| training CPU time | {metrics['cpu_s'] / 60:.1f} min |
| held-out loss (fp32 weights) | {metrics['heldout_loss_fp32']:.3f} nats/token (perplexity {math.exp(metrics['heldout_loss_fp32']):.1f}) |
| held-out loss (the shipped bf16 weights) | {metrics['heldout_loss_bf16_weights']:.3f} nats/token (perplexity {math.exp(metrics['heldout_loss_bf16_weights']):.1f}) |

`pretrain_metrics.json` holds every number, the resolved config and the package versions.
Data licences: see llm_jepa/datasets/README.md (the sets as published with the LLM-JEPA code, Apache-2.0;
NL-RX MIT; GSM8K MIT).
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="output folder (same as --set out_dir=...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="a=b",
                   help="override a PretrainConfig field, e.g. max_steps=1000")
    p.add_argument("--card", metavar="FINAL_DIR", help="only (re)write FINAL_DIR/README.md from its metrics")
    args = p.parse_args(argv)
    if args.card:
        metrics = json.loads((Path(args.card) / "pretrain_metrics.json").read_text())
        atomic_write_text(Path(args.card) / "README.md", model_card(metrics))
        return 0
    overrides = ([f"out_dir={args.out}"] if args.out else []) + args.overrides
    m = pretrain(load_config(PretrainConfig, None, overrides))
    print(json.dumps({k: v for k, v in m.items() if k not in ("config", "corpus", "packages")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
