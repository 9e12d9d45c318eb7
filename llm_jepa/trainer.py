"""`JepaTrainer`: LLM-JEPA for people who use `transformers.Trainer`.

Data flow: a list/`datasets.Dataset` of chat records -> `JepaCollator` (data_collator) ->
Trainer's gradient-accumulation window (`get_batch_samples`, once per optimizer step: here the
labelled tokens AND view pairs of the window are counted over all ranks, and the JEPA-dropout
coin is drawn from a generator seeded by `args.seed`, the same on every rank) -> `JepaModule`
(so DDP sees the forward) -> loss normalised by the window's counts. `loss_is_scaled_for_ga`
is set, so transformers 5 does not divide by the accumulation steps a second time (DESIGN.md §3).
`save_model` writes the plain Hugging Face causal LM (or PEFT adapter) and the tokenizer.

    trainer = JepaTrainer(model=model, args=TrainingArguments(...), cfg=cfg, processing_class=tok,
                          train_dataset=records)
    trainer.train()
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments

from llm_jepa.collator import JepaCollator, strip_views
from llm_jepa.config import LLMJepaConfig
from llm_jepa.modeling import JepaModule, jepa_pairs
from llm_jepa.stp import add_step_spans, save_predictor


class JepaTrainer(Trainer):
    """A `transformers.Trainer` whose loss is `gamma * L_LM + lam * d(Pred(Enc(Text)), Enc(Code))`."""

    loss_is_scaled_for_ga = True

    def __init__(self, model: nn.Module, args: TrainingArguments, cfg: LLMJepaConfig,
                 processing_class: PreTrainedTokenizerBase, train_dataset=None, eval_dataset=None,
                 callbacks=None) -> None:
        args.remove_unused_columns = False  # records are not model-forward columns
        self.cfg = cfg
        self._jepa_gen = torch.Generator().manual_seed(args.seed + 1)
        self._window: tuple = (None, None, True)
        super().__init__(model=JepaModule(model, cfg), args=args, data_collator=JepaCollator(processing_class, cfg),
                         train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, callbacks=callbacks)
        self.model_accepts_loss_kwargs = True

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device):
        """One call per optimizer step: count tokens and pairs of the window, draw JEPA dropout."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        use = self.cfg.jepa.lam != 0.0 and float(torch.rand((), generator=self._jepa_gen)) >= self.cfg.jepa.dropout
        if not use and self.cfg.jepa.lam != 0.0:
            batches = [strip_views(b) for b in batches]
        batches = add_step_spans(batches, self.cfg.stp, self.args.seed, self.state.global_step,
                                 self.args.process_index)  # STP only
        local = torch.tensor([sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches),
                              sum(jepa_pairs(b) for b in batches) if use else 0],
                             device=device, dtype=torch.float64)
        world = self.accelerator.num_processes
        if world > 1:
            local = self.accelerator.reduce(local, reduction="sum")
        local = local / world  # DDP averages gradients over ranks
        self._window = (local[0].clamp(min=1).float(), local[1].clamp(min=1e-12).float(), use)  # STP: weights
        return batches, self._window[0]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        lm_norm, jepa_norm, use = self._window
        if not model.training or lm_norm is None:  # evaluation: this batch's own means
            lm_norm, jepa_norm, use = None, None, True
        out = model(**inputs, lm_norm=lm_norm, jepa_norm=jepa_norm, use_jepa=use)
        if model.training:
            self.log_terms = {k: float(out[k]) for k in ("lm_loss", "jepa_loss", "cos_sim")}
        return (out["loss"], out) if return_outputs else out["loss"]

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir or self.args.output_dir
        module = self.accelerator.unwrap_model(self.model)
        module.lm.save_pretrained(output_dir)
        save_predictor(module.stp_predictor, output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, f"{output_dir}/training_args.bin")
