"""The three-pass reference definition of LLM-JEPA for tests: each view of each record run alone,
no padding, no packing, through the model's own forward (what `jepa_forward` must reproduce).

    from jepa_reference import separate_passes
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llm_jepa.collator import JepaCollator
from llm_jepa.config import JepaMode, LLMJepaConfig
from llm_jepa.losses import jepa_distance


def separate_passes(model, collate: JepaCollator, records: list[dict], cfg: LLMJepaConfig) -> dict:
    """The three-pass definition: each view of each record run alone, no padding, no packing."""
    lm_sum, n_tok, preds, targets = 0.0, 0, [], []
    decoder = model.get_decoder()
    for rec in records:
        enc = collate.encode(rec)
        ids = torch.tensor([enc.full_ids])
        logits = model(ids).logits[0, :-1]  # (T-1, V)
        labels = torch.tensor(enc.labels[1:])
        keep = labels != -100
        lm_sum += F.cross_entropy(logits[keep], labels[keep], reduction="sum")
        n_tok += int(keep.sum())
        if cfg.jepa.mode is JepaMode.REFERENCE:
            preds.append(decoder(torch.tensor([enc.text_ids])).last_hidden_state[0, enc.text_last])
        else:  # conversation up to the end of the user turn, then the predictor tokens
            ctx = enc.full_ids[: enc.text_end + 1] + collate.pred_ids
            preds.append(decoder(torch.tensor([ctx])).last_hidden_state[0, -1])
        targets.append(decoder(torch.tensor([enc.code_ids])).last_hidden_state[0, enc.code_last])
    j = jepa_distance(torch.stack(preds), torch.stack(targets), cfg.jepa.distance, cfg.jepa.temperature)
    return {"lm_loss": lm_sum / n_tok, "jepa_loss": j["jepa_loss"], "cos_sim": j["cos_sim"]}
