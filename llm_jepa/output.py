"""Final outputs of a run: a Hugging Face checkpoint (or PEFT adapter) + tokenizer, written atomically.

Data flow: trained `JepaModule` -> unwrap (DDP/FSDP) -> `final/` (full model, LoRA merged when
`lora.merge` (the default), loadable by `transformers.pipeline("text-generation", model=final)`) or
`adapter/` (`lora.merge: false`: LoRA weights + the trained predictor-token rows only, no embedding
matrix when the tokenizer fits the base checkpoint; `pipeline` and `AutoPeftModelForCausalLM` load it) -> the tokenizer with the predictor tokens, pad token and chat template is
saved beside it, and `generation_config.eos_token_id` lists the end-of-turn token so generation stops.
STP's linear predictor (when `stp.predictor`) is not part of the LM: it goes to `stp_predictor.pt` beside it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_jepa.config import LLMJepaConfig
from llm_jepa.data import stop_token_ids
from llm_jepa.modeling import embedding_rows
from llm_jepa.stp import save_predictor

log = logging.getLogger(__name__)


def _vocab_grew(lm: nn.Module) -> bool:
    """True when the embedding matrix has more rows than the base checkpoint the adapter names: then the
    adapter must carry the embedding matrices (PEFT's save_embedding_layers) and only
    AutoPeftModelForCausalLM (which resizes from the saved tokenizer) loads it, not `pipeline`."""
    base = lm.get_base_model()
    grew = embedding_rows(lm) > getattr(base, "_jepa_base_rows", embedding_rows(lm))
    if grew:
        log.warning("the tokenizer outgrew %s's embedding matrix (no reserved tokens or spare rows to reuse): the "
                    "adapter stores the full embedding matrices and transformers.pipeline cannot load it; "
                    "AutoPeftModelForCausalLM can, or set lora.merge=true", base.name_or_path)
    return grew


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
    base.generation_config.eos_token_id = stop_token_ids(tok)
    base.generation_config.pad_token_id = tok.pad_token_id
    if adapter_only:
        lm.save_pretrained(tmp, save_embedding_layers=_vocab_grew(lm))
        base.generation_config.save_pretrained(tmp)
    else:
        lm.save_pretrained(tmp, state_dict=state_dict if not cfg.lora.enabled else None)
    tok.save_pretrained(tmp)
    save_predictor(acc.unwrap_model(module).stp_predictor, tmp)  # STP's linear predictor, when trained
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
