"""Final outputs of a run: a Hugging Face checkpoint (or PEFT adapter) + tokenizer, written atomically.

Data flow: trained `JepaModule` -> unwrap (DDP/FSDP) -> `final/` (full model, LoRA merged when
`lora.merge`, loadable by `transformers.pipeline("text-generation", model=final)`) or `adapter/`
(LoRA adapter only) -> the tokenizer with the predictor tokens, pad token and chat template is
saved beside it, and `generation_config.eos_token_id` lists the end-of-turn token so generation stops.
STP's linear predictor (when `stp.predictor`) is not part of the LM: it goes to `stp_predictor.pt` beside it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_jepa.config import LLMJepaConfig
from llm_jepa.stp import save_predictor


def _end_of_turn_ids(tok: PreTrainedTokenizerBase) -> list[int]:
    ids = {tok.eos_token_id}
    for name in ("<|eot_id|>", "<end_of_turn>", "<|im_end|>"):
        tid = tok.convert_tokens_to_ids(name)
        if tid is not None and tid != tok.unk_token_id and name in tok.get_vocab():
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


def save_output(acc: Accelerator, module: nn.Module, tok: PreTrainedTokenizerBase, cfg: LLMJepaConfig,
                out_dir: Path) -> Path | None:
    """Write `final/` (or `adapter/`) on the main process; returns its path (None on other ranks)."""
    acc.wait_for_everyone()
    lm = acc.unwrap_model(module).lm
    state_dict = acc.get_state_dict(module)  # gathers FSDP shards; keys prefixed with "lm."
    if not acc.is_main_process:
        return None
    state_dict = {k.removeprefix("lm."): v for k, v in state_dict.items() if k.startswith("lm.")}
    adapter_only = cfg.lora.enabled and not cfg.lora.merge
    if cfg.lora.enabled and cfg.lora.merge:
        lm = lm.merge_and_unload()
        state_dict = None
    target = out_dir / ("adapter" if adapter_only else "final")
    tmp = out_dir / f".tmp-{target.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    base = lm.get_base_model() if adapter_only else lm
    base.generation_config.eos_token_id = _end_of_turn_ids(tok)
    base.generation_config.pad_token_id = tok.pad_token_id
    lm.save_pretrained(tmp, state_dict=state_dict if not cfg.lora.enabled else None)
    if adapter_only:
        base.generation_config.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    save_predictor(acc.unwrap_model(module).stp_predictor, tmp)  # STP's linear predictor, when trained
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
