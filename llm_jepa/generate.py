"""Greedy, batched generation of the assistant turn for a saved checkpoint or PEFT adapter.

Data flow: checkpoint dir (full Hugging Face model, or a PEFT adapter dir holding
`adapter_config.json`) -> `load_for_generation` -> (model, tokenizer) -> chat records ->
prompts rendered exactly as in training (`llm_jepa.data.render_prompt`: system + user turn +
generation prompt, the template's own BOS, no second one) -> sorted by length, batches LEFT-
padded (a decoder continues from the right edge) -> `model.generate(do_sample=False)` until an
end-of-turn/EOS token -> decoded new tokens, in the records' order.

    model, tok = load_for_generation("runs/llm_jepa/tiny_cpu/final")
    texts = generate_answers(model, tok, records, batch_size=16, max_new_tokens=64)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from llm_jepa.data import render_prompt, stop_token_ids
from llm_jepa.modeling import embedding_rows

# A reasoning template's (empty or not) thinking block before the answer: never part of the answer scored.
_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.S)


def strip_thinking(text: str) -> str:
    """Drop a leading `<think>...</think>` block (Qwen3 and other reasoning templates)."""
    return _THINK.sub("", text)


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_for_generation(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"
                        ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model + tokenizer from a checkpoint dir or a PEFT adapter dir (base model from its config)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is not a folder; pass the run's final/ or adapter/ folder")
    if is_adapter_dir(path):
        from peft import AutoPeftModelForCausalLM

        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:  # a saved file, not a user config: an absent key is reported, not defaulted
            raise ValueError(f"{path}/adapter_config.json names no base model (base_model_name_or_path); "
                             "write the base checkpoint's folder or hub id there, or evaluate a merged final/")
        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok_src = path if (path / "tokenizer_config.json").is_file() else base
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok_src = path
    tok = AutoTokenizer.from_pretrained(tok_src)
    rows = embedding_rows(model)
    if rows < len(tok):
        raise ValueError(f"tokenizer at {tok_src} has {len(tok)} tokens but the model only {rows} embedding rows; "
                         "save the tokenizer with the model")
    return model.to(device).eval(), tok


def _batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def generate_answers(model: PreTrainedModel, tok: PreTrainedTokenizerBase, records: list[dict],
                     batch_size: int = 16, max_new_tokens: int = 128, progress: bool = True) -> list[str]:
    """Greedy continuation of each record's prompt (the assistant turn), one string per record."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use 1 or more")
    prompts = [tok(render_prompt(tok, r), add_special_tokens=False)["input_ids"] for r in records]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stops = stop_token_ids(tok)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding per batch
    out: list[str] = [""] * len(prompts)
    for idx in tqdm(_batches(order, batch_size), desc="generate", disable=not progress):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)  # (B, T) left padded
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                             max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad_id)
        for row, i in enumerate(idx):
            out[i] = strip_thinking(tok.decode(gen[row, width:], skip_special_tokens=True)).strip()
    return out
