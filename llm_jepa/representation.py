"""Representation diagnostics of LLM-JEPA: how Enc(Text) relates to Enc(Code) on a test set.

Data flow: chat records -> `encode(records, View.TEXT)` and `encode(records, View.CODE)` ->
T, C (N, D) -> `eval.representation.representation_metrics` (paired cosine, linear fit,
singular values, Text->Code retrieval) -> dict + `representation.png` + `representation.json`.

`encode` is any callable `(records, view) -> (N, D) array`, so saved embeddings and test
doubles run the same way; `hf_view_encoder(model, tok)` is the one matching training
(`llm_jepa.collator`): each view rendered ALONE with the chat template (Text = user turn,
optionally + k predictor tokens; Code = assistant turn, sent as 'user' for Gemma), last-layer
hidden state at the view's last content (or predictor) token, located by span tracking.

    report = representation_report(hf_view_encoder(model, tok), records, "runs/eval/repr")
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from eval.representation import representation_metrics
from llm_jepa.collator import code_view_role, predictor_token_names
from llm_jepa.data import encode_with_span, view_contents


class View(enum.Enum):
    TEXT = "text"  # the user turn (Text view)
    CODE = "code"  # the assistant turn (Code view)


Encoder = Callable[[list[dict], View], np.ndarray]


def hf_view_encoder(model: torch.nn.Module, tok, predictors: int = 0, batch_size: int = 32) -> Encoder:
    """Enc() of training for a causal LM (or PEFT model): last hidden state at the view's last token."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, code_role = base.get_decoder(), code_view_role(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    marks = "".join(predictor_token_names(tok, predictors))

    def view_ids(record: dict, view: View) -> tuple[list[int], int]:
        user, assistant = view_contents(record)
        role, content = ("user", user + marks) if view is View.TEXT else (code_role, assistant)
        enc = encode_with_span(tok, [{"role": role, "content": content}], 0, content)
        return enc.ids, enc.last

    @torch.no_grad()
    def encode(records: list[dict], view: View) -> np.ndarray:
        device, out = next(decoder.parameters()).device, []
        encoded = [view_ids(r, view) for r in records]
        for s in tqdm(range(0, len(encoded), batch_size), desc=f"encode {view.value}", leave=False):
            chunk = encoded[s:s + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T) right padded
            mask = torch.zeros_like(ids)
            for row, (x, _) in enumerate(chunk):
                ids[row, :len(x)], mask[row, :len(x)] = torch.tensor(x), 1
            hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B,T,D)
            last = torch.tensor([li for _, li in chunk], device=device)
            out.append(hidden[torch.arange(len(chunk), device=device), last].float().cpu().numpy())  # (B, D)
        return np.concatenate(out)

    return encode


def representation_report(encode: Encoder, records: list[dict], out_dir: str | Path | None = None
                          ) -> dict[str, Any]:
    """All diagnostics for `records`; with `out_dir`, also representation.json and .png there."""
    text, code = encode(records, View.TEXT), encode(records, View.CODE)  # (N, D) each
    return representation_metrics(text, code, out_dir)
