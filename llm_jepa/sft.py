"""`JepaSFTTrainer`: the LLM-JEPA loss inside TRL's `SFTTrainer` (install with `pip install jepa-lab[trl]`).

Data flow: a conversational dataset (`messages` column: [system?, user, assistant]; a `datasets.Dataset`
or a list of dicts) -> TRL's own preparation is skipped (`skip_prepare_dataset`): the records are
encoded once by `JepaCollator` (over-long / malformed ones follow `jepa.data.on_invalid`) -> TRL's
`SFTTrainer` (its model loading from a hub id, `peft_config`, `SFTConfig`, callbacks, model card) ->
`JepaTrainerMixin` (from `llm_jepa.trainer`: packed views, accumulation-exact normalisation, JEPA
dropout, per-term logging `lm_loss` / `jepa_loss` / `cos_sim` in train and eval) -> `save_model`
writes a plain causal LM (or adapter) + tokenizer that `pipeline("text-generation")` loads.

    from trl import SFTConfig
    from llm_jepa.config import LLMJepaConfig
    from llm_jepa.sft import JepaSFTTrainer

    jepa = LLMJepaConfig()                      # jepa.lam, jepa.predictors, jepa.mode, data.max_length ...
    trainer = JepaSFTTrainer(model="meta-llama/Llama-3.2-1B-Instruct", args=SFTConfig(output_dir="out"),
                             jepa=jepa, train_dataset=load_dataset("json", data_files="train.jsonl")["train"])
    trainer.train()

`SFTConfig.max_length`, `packing`, `assistant_only_loss` and `completion_only_loss` do not apply: the
labels are always the assistant turn plus its end-of-turn token, and `jepa.data.max_length` bounds the
packed row.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from llm_jepa.collator import JepaCollator, predictor_token_names
from llm_jepa.config import LLMJepaConfig
from llm_jepa.modeling import JepaModule, add_predictor_tokens, ensure_pad_token
from llm_jepa.trainer import JepaTrainerMixin


def _with_predictor_rows(peft_config, tok: PreTrainedTokenizerBase, jepa: LLMJepaConfig):
    """A LoRA config that also trains the predictor-token rows (unless set, or paper_compat)."""
    if peft_config is None or jepa.jepa.paper_compat or not jepa.jepa.predictors:
        return peft_config
    if getattr(peft_config, "trainable_token_indices", None) is None:
        ids = tok.convert_tokens_to_ids(predictor_token_names(tok, jepa.jepa.predictors))
        peft_config.trainable_token_indices = {"embed_tokens": ids}
    return peft_config


class JepaSFTTrainer(JepaTrainerMixin, SFTTrainer):
    """TRL `SFTTrainer` whose loss is `gamma * L_LM + lam * d(Pred(Enc(Text)), Enc(Code))`."""

    def __init__(self, model: Any, args: SFTConfig, jepa: LLMJepaConfig, train_dataset=None, eval_dataset=None,
                 processing_class: PreTrainedTokenizerBase | None = None, peft_config=None, callbacks=None,
                 **sft_kwargs) -> None:
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model, **(args.model_init_kwargs or {}))
        tok = processing_class or AutoTokenizer.from_pretrained(model.name_or_path)
        ensure_pad_token(model, tok, reference=jepa.jepa.paper_compat)
        add_predictor_tokens(model, tok, jepa.jepa.predictors, distinct=not jepa.jepa.paper_compat, seed=args.seed)
        args.remove_unused_columns = False  # records are not model-forward columns
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        self._jepa_setup(jepa, args)
        collate = JepaCollator(tok, jepa)
        super().__init__(model=model, args=args, data_collator=collate, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=tok, callbacks=callbacks,
                         peft_config=_with_predictor_rows(peft_config, tok, jepa), **sft_kwargs)
        self.train_dataset = self._encode(collate, train_dataset)
        self.eval_dataset = self._encode(collate, eval_dataset)
        self.model = self.model_wrapped = JepaModule(self.model, jepa)  # after TRL applied peft_config
        self.model_accepts_loss_kwargs = True
