"""`JepaTrainer`: LLM-JEPA for people who use `transformers.Trainer` (and the shared `JepaTrainerMixin`).

Data flow: a list/`datasets.Dataset` of chat records -> encoded once up front (`encode_records`:
malformed or over-long records follow `cfg.data.on_invalid`, so nothing crashes mid-run) ->
`JepaCollator` (data_collator) -> Trainer's gradient-accumulation window (`get_batch_samples`, once
per optimizer step: here the labelled tokens AND view pairs of the window are counted over all ranks
(`step_norms`), and the JEPA-dropout coin is drawn from a generator seeded by `args.seed`, the same on
every rank) -> `JepaModule` (so DDP/FSDP see the forward) -> loss normalised by the window's counts.
`loss_is_scaled_for_ga` is set, so transformers 5 does not divide by the accumulation steps a second
time (DESIGN.md §3). Each term (`lm_loss`, `jepa_loss`, `cos_sim`) is logged in train and eval.
`save_model` / checkpoints write the plain Hugging Face causal LM (or PEFT adapter), the tokenizer and
`training_args.json`; `resume_from_checkpoint` loads them back.

    trainer = JepaTrainer(model=model, args=TrainingArguments(...), cfg=cfg, processing_class=tok,
                          train_dataset=records)
    trainer.train()

`llm_jepa.sft.JepaSFTTrainer` puts the same mixin on TRL's `SFTTrainer`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from llm_jepa.collator import JepaCollator, encode_records, strip_views
from llm_jepa.config import LLMJepaConfig
from llm_jepa.losses import infonce_scope_warning
from llm_jepa.modeling import JepaModule, step_norms
from llm_jepa.stp import PREDICTOR_FILE, add_step_spans, load_predictor, save_predictor

log = logging.getLogger(__name__)

TERMS = ("lm_sum", "n_tokens", "jepa_sum", "n_pairs", "cos_sum")


class JepaTrainerMixin:
    """The LLM-JEPA parts of a `transformers.Trainer` subclass; `self.model` must be a `JepaModule`."""

    loss_is_scaled_for_ga = True
    cfg: LLMJepaConfig

    def _jepa_setup(self, cfg: LLMJepaConfig, args) -> None:
        self.cfg, seed = cfg, args.seed
        note = infonce_scope_warning(cfg.jepa.distance, args.gradient_accumulation_steps, args.world_size)
        if note:
            log.warning(note)
        self._jepa_gen = torch.Generator().manual_seed(seed + 1)
        self._window: tuple = (None, None, True)
        self._terms = {"train": dict.fromkeys(TERMS, 0.0), "eval": dict.fromkeys(TERMS, 0.0)}

    def _encode(self, collate: JepaCollator, dataset):
        """Records -> EncodedRecords (skip or raise per `data.on_invalid`); None stays None."""
        if dataset is None:
            return None
        if isinstance(dataset, dict):
            return {k: self._encode(collate, v) for k, v in dataset.items()}
        return encode_records(collate, [dict(r) for r in dataset], self.cfg.data.on_invalid)

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """One call per optimizer step: count tokens and pairs of the window, draw JEPA dropout."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        use = self.cfg.jepa.lam != 0.0 and float(torch.rand((), generator=self._jepa_gen)) >= self.cfg.jepa.dropout
        if not use and self.cfg.jepa.lam != 0.0:
            batches = [strip_views(b) for b in batches]
        batches = add_step_spans(batches, self.cfg.stp, self.args.seed, self.state.global_step,
                                 self.args.process_index)  # STP only
        lm_norm, jepa_norm = step_norms(batches, use, self.cfg, lambda t: self.accelerator.reduce(t, reduction="sum"),
                                        self.accelerator.num_processes, device)
        self._window = (lm_norm, jepa_norm, use)
        return batches, lm_norm

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        lm_norm, jepa_norm, use = self._window
        if not model.training:  # evaluation: this batch's own means
            lm_norm, jepa_norm, use = None, None, True
        out = model(**inputs, lm_norm=lm_norm, jepa_norm=jepa_norm, use_jepa=use)
        terms = self._terms["train" if model.training else "eval"]
        for key in TERMS[:-1]:
            terms[key] += float(out[key].detach())
        terms["cos_sum"] += float(out["cos_sim"]) * float(out["n_pairs"])
        return (out["loss"], out) if return_outputs else out["loss"]

    def _term_means(self, mode: str, reduce: bool) -> dict[str, float]:
        """Token-/pair-weighted means of the terms since the last call (summed over ranks when `reduce`)."""
        s = self._terms[mode]
        values = torch.tensor([s[k] for k in TERMS], dtype=torch.float64, device=self.accelerator.device)
        if reduce and self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="sum")
        self._terms[mode] = dict.fromkeys(TERMS, 0.0)
        v = dict(zip(TERMS, values.tolist()))
        if v["n_tokens"] == 0 and v["n_pairs"] == 0:
            return {}
        pairs = max(v["n_pairs"], 1)
        return {"lm_loss": v["lm_sum"] / max(v["n_tokens"], 1), "jepa_loss": v["jepa_sum"] / pairs,
                "cos_sim": v["cos_sum"] / pairs}

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Training logs get the terms of this process's micro-batches since the previous log."""
        if "loss" in logs and "eval_loss" not in logs:
            logs.update(self._term_means("train", reduce=False))
        super().log(logs, *args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        """The combined eval loss plus each term, summed over all ranks (`eval_lm_loss`, ...)."""
        self._terms["eval"] = dict.fromkeys(TERMS, 0.0)
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", args[3] if len(args) > 3 else "eval")
        output.metrics.update({f"{prefix}_{k}": v for k, v in self._term_means("eval", reduce=True).items()})
        return output

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """The plain causal LM (or adapter) + tokenizer + training_args.json; `state_dict` (FSDP/DeepSpeed
        gather it) is used when given. JSON instead of transformers' pickled training_args.bin."""
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        module = self.accelerator.unwrap_model(self.model)
        if state_dict is not None:  # the LM's entries only; STP's predictor is saved on its own below
            state_dict = {k.removeprefix("lm."): v for k, v in state_dict.items() if k.startswith("lm.")}
        module.lm.save_pretrained(output_dir, state_dict=state_dict)
        save_predictor(module.stp_predictor, output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        with open(os.path.join(output_dir, "training_args.json"), "w") as f:
            f.write(self.args.to_json_string())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Checkpoints hold the inner LM (what `_save` wrote): load into it, not into the JepaModule; STP's
        linear predictor, when there is one, comes back from its own file."""
        inner = self.accelerator.unwrap_model(model if model is not None else self.model)
        super()._load_from_checkpoint(resume_from_checkpoint, model=getattr(inner, "lm", inner))
        predictor = getattr(inner, "stp_predictor", None)
        if predictor is not None and (Path(resume_from_checkpoint) / PREDICTOR_FILE).is_file():
            with torch.no_grad():
                predictor.weight.copy_(load_predictor(resume_from_checkpoint).weight)


class JepaTrainer(JepaTrainerMixin, Trainer):
    """A `transformers.Trainer` whose loss is `gamma * L_LM + lam * d(Pred(Enc(Text)), Enc(Code))`."""

    def __init__(self, model: nn.Module, args: TrainingArguments, cfg: LLMJepaConfig,
                 processing_class: PreTrainedTokenizerBase, train_dataset=None, eval_dataset=None,
                 callbacks=None) -> None:
        args.remove_unused_columns = False  # records are not model-forward columns
        self._jepa_setup(cfg, args)
        collate = JepaCollator(processing_class, cfg)
        super().__init__(model=JepaModule(model, cfg), args=args, data_collator=collate,
                         train_dataset=self._encode(collate, train_dataset),
                         eval_dataset=self._encode(collate, eval_dataset),
                         processing_class=processing_class, callbacks=callbacks)
        self.model_accepts_loss_kwargs = True
