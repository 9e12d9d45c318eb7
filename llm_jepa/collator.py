"""`JepaCollator`: chat records -> one packed row per record with the LLM-JEPA views.

Data flow: record -> `encode()` -> `EncodedRecord` (full conversation ids + labels, Text view,
Code view, each with the tracked index of its last content token) -> `__call__` packs each
record into ONE row and pads the batch to its longest row (left or right):

    reference:  [ full conversation | Text view + k predictors | Code view ]
    in_context: [ full conversation | k predictors            | Code view ]

With `jepa.objective: stp` no view is packed: the row is the conversation alone, and the batch
carries `content_spans` (B, 4) = [user-content start, end, assistant-content start, end) token
indices of the row, which `llm_jepa.stp` samples its spans from.

Each segment attends only to itself (block-diagonal causal mask, a 4-D bool tensor) and its
position ids restart at 0, so every segment computes exactly what it would alone (the
three-pass reference definition, DESIGN.md "Where we can be better" (1)). In `in_context` the
predictor tokens attend to the conversation up to the end of the user turn and continue its
positions, so Enc(Text) costs only k extra tokens. Labels cover the assistant turn and its
end-of-turn token only (or, with `paper_compat`, every token but the pad token, like the reference).
`data.max_length` bounds the packed row (conversation + Text view + Code view), the tokens a step pays.

    collate = JepaCollator(tokenizer, cfg)
    batch = collate(records)   # input_ids, position_ids, attention_mask (B,1,T,T), labels, ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from llm_jepa.config import JepaMode, LLMJepaConfig, Objective, Padding
from llm_jepa.data import (
    TEMPLATE_KWARGS,
    InvalidRecords,
    RecordError,
    encode_with_span,
    family_of,
    prompt_messages,
    render_prompt,
    split_record,
    stop_token_ids,
    validate_record,
    view_contents,
)

log = logging.getLogger(__name__)

# The reference's per-family offset from the end of an unpadded view to its "last token".
FAMILY_OFFSETS = {"llama": -2, "gemma": -2, "qwen": -3, "olmo": -1, "openelm": -4}
SEG_PAD, SEG_FULL, SEG_TEXT, SEG_CODE = 0, 1, 2, 3


def predictor_tokens(k: int) -> list[str]:
    """Names of the k predictor tokens added to the tokenizer (the reference's spelling)."""
    return [f"<|predictor_{i + 1}|>" for i in range(k)]


# Unused special tokens real vocabularies reserve (Llama 3.x, Gemma 2/3): predictor tokens taken from these
# need no new embedding row, so the base checkpoint keeps its shape and a LoRA adapter stays small.
RESERVED_PATTERNS = ("<|reserved_special_token_{}|>", "<unused{}>")


def predictor_token_names(tok: PreTrainedTokenizerBase, k: int) -> list[str]:
    """The k predictor tokens of `tok`: ours (`<|predictor_i|>`) when present, else the first k reserved
    tokens of the vocabulary, else ours (to be added). Deterministic in the vocabulary, so training,
    saving and evaluation resolve the same tokens."""
    ours = predictor_tokens(k)
    vocab = tok.get_vocab()
    if not k or all(n in vocab for n in ours):
        return ours
    for pattern in RESERVED_PATTERNS:
        names = [pattern.format(i) for i in range(k)]
        if all(n in vocab for n in names):
            return names
    return ours


def code_view_role(tokenizer: PreTrainedTokenizerBase) -> str:
    """Gemma templates allow no assistant-first turn, so the reference sends the Code view as 'user'."""
    if family_of(tokenizer) == "gemma":
        return "user"
    try:
        tokenizer.apply_chat_template([{"role": "assistant", "content": "x"}], tokenize=False, **TEMPLATE_KWARGS)
    except Exception:  # template raised on an assistant-first conversation
        return "user"
    return "assistant"


@dataclass
class EncodedRecord:
    full_ids: list[int]
    labels: list[int]  # -100 where no LM loss
    text_end: int  # index in full_ids of the last user-content token (in_context Enc(Text))
    text_ids: list[int] | None = None  # reference Text view incl. predictor tokens
    text_last: int = -1
    code_ids: list[int] | None = None
    code_last: int = -1
    content_spans: tuple[int, int, int, int] | None = None  # STP: [user start, end, assistant start, end)


class JepaCollator:
    """Encode and pack chat records (or pre-encoded `EncodedRecord`s) into a training batch."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: LLMJepaConfig) -> None:
        self.tok, self.cfg = tokenizer, cfg
        self.k = cfg.jepa.predictors
        self.pred_names = predictor_token_names(tokenizer, self.k)
        self.pred_ids = tokenizer.convert_tokens_to_ids(self.pred_names)
        if any(i is None or i == tokenizer.unk_token_id for i in self.pred_ids):
            raise ValueError("the tokenizer lacks the predictor tokens; call llm_jepa.modeling.add_predictor_tokens"
                             f"(model, tokenizer, {self.k}) first")
        self.views = cfg.jepa.lam != 0.0 and cfg.jepa.objective is Objective.VIEWS
        self.stp = cfg.jepa.lam != 0.0 and cfg.jepa.objective is Objective.STP
        self.code_role = code_view_role(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stops = set(stop_token_ids(tokenizer))
        self.offset = cfg.jepa.last_token_offset
        if self.offset is None and cfg.jepa.paper_compat:
            self.offset = FAMILY_OFFSETS.get(family_of(tokenizer) or "")

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, record: dict) -> EncodedRecord:
        """Token ids of the views of one record; RecordError if malformed or its packed row is too long."""
        validate_record(record)
        text, code = view_contents(record)
        _, user, assistant = split_record(record)
        msgs = prompt_messages(record, self.tok)
        content = msgs[-1]["content"]  # the user text (Gemma: the system text merged in front of it)
        prompt = encode_with_span(self.tok, msgs, len(msgs) - 1, content, add_generation_prompt=True,
                                  from_char=len(content) - len(user))  # .first: STP's user content start
        full_text = self.tok.apply_chat_template(msgs + [{"role": "assistant", "content": assistant}],
                                                 tokenize=False, **TEMPLATE_KWARGS)
        prompt_text = render_prompt(self.tok, record)
        if not full_text.startswith(prompt_text):
            raise RecordError("the chat template's generation prompt is not a prefix of the rendered "
                              "conversation; this template is not supported")
        completion_text = full_text[len(prompt_text):]
        comp = self.tok(completion_text, add_special_tokens=False, return_offsets_mapping=self.stp)
        completion = comp["input_ids"]
        labels = self._labels(prompt.ids, completion)
        keep = max(i for i, t in enumerate(labels) if t != -100) + 1  # nothing after the last label is read
        enc = EncodedRecord((prompt.ids + completion)[:keep], labels[:keep], prompt.last)
        if self.views:
            self._encode_views(enc, text, code)
        if self.stp:
            first, last = _char_span_tokens(comp["offset_mapping"], completion_text, assistant)
            n = len(prompt.ids)
            enc.content_spans = (prompt.first, prompt.last + 1, n + first, n + last + 1)
        self._check_length(enc)
        return enc

    def _labels(self, prompt: list[int], completion: list[int]) -> list[int]:
        """The assistant turn up to and including its end-of-turn token; nothing after it (Gemma and
        ChatML templates add a newline) and nothing before it. paper_compat: the reference's labels,
        every token except its pad token (pad = EOS there, so EOS is never trained)."""
        if self.cfg.jepa.paper_compat:
            return [-100 if t == self.tok.pad_token_id else t for t in prompt + completion]
        ends = [i for i, t in enumerate(completion) if t in self.stops]
        cut = ends[0] + 1 if ends else len(completion)
        return [-100] * len(prompt) + completion[:cut] + [-100] * (len(completion) - cut)

    def _encode_views(self, enc: EncodedRecord, user: str, assistant: str) -> None:
        """Text view (user content + k predictors, alone) and Code view (assistant content, alone), each cut
        after the token its embedding is read at: later tokens cannot change it (causal) and have no label,
        so they would only cost compute (the template's end-of-turn token, Gemma's newline)."""
        if self.cfg.jepa.mode is JepaMode.REFERENCE:
            content = user + "".join(self.pred_names)
            text = encode_with_span(self.tok, [{"role": "user", "content": content}], 0, content)
            enc.text_last = self._last(text.ids, text.last)
            enc.text_ids = text.ids[:enc.text_last + 1]
        code = encode_with_span(self.tok, [{"role": self.code_role, "content": assistant}], 0, assistant)
        enc.code_last = self._last(code.ids, code.last)
        enc.code_ids = code.ids[:enc.code_last + 1]

    def _last(self, ids: list[int], tracked: int) -> int:
        """Tracked span end, or the reference's offset from the end when one is configured."""
        return tracked if self.offset is None else len(ids) + self.offset

    def row_length(self, enc: EncodedRecord) -> int:
        """Tokens of the record's packed row (what a step really computes)."""
        if not self.views:
            return len(enc.full_ids)
        text = len(enc.text_ids) if self.cfg.jepa.mode is JepaMode.REFERENCE else self.k
        return len(enc.full_ids) + text + len(enc.code_ids)

    def _check_length(self, enc: EncodedRecord) -> None:
        n = self.row_length(enc)
        if n > self.cfg.data.max_length:
            parts = f"conversation {len(enc.full_ids)}"
            if self.views:
                parts += f" + Text view {n - len(enc.full_ids) - len(enc.code_ids)} + Code view {len(enc.code_ids)}"
            raise RecordError(f"record's packed row has {n} tokens ({parts}) > data.max_length="
                              f"{self.cfg.data.max_length}; raise data.max_length, or let data.on_invalid=skip "
                              "drop such records before training")

    # ---- packing --------------------------------------------------------------------------
    def _row(self, enc: EncodedRecord) -> dict:
        ids, pos, segs = list(enc.full_ids), list(range(len(enc.full_ids))), [SEG_FULL] * len(enc.full_ids)
        blocks = [(0, len(ids), None)]  # (start, end, extra visible prefix end) causal blocks
        out = {"text_index": None, "code_index": None}
        if self.views:
            off = len(ids)
            if self.cfg.jepa.mode is JepaMode.REFERENCE:
                ids += enc.text_ids
                pos += list(range(len(enc.text_ids)))
                out["text_index"] = off + enc.text_last
                blocks.append((off, len(ids), None))
            else:  # predictors continue the conversation right after the user turn
                ids += self.pred_ids
                pos += [enc.text_end + 1 + i for i in range(self.k)]
                out["text_index"] = off + self.k - 1 if self.k else enc.text_end
                blocks.append((off, len(ids), enc.text_end + 1))
            segs += [SEG_TEXT] * (len(ids) - off)
            off = len(ids)
            ids += enc.code_ids
            pos += list(range(len(enc.code_ids)))
            segs += [SEG_CODE] * len(enc.code_ids)
            out["code_index"] = off + enc.code_last
            blocks.append((off, len(ids), None))
        labels = enc.labels + [-100] * (len(ids) - len(enc.full_ids))
        return {**out, "ids": ids, "pos": pos, "segs": segs, "labels": labels, "blocks": blocks}

    def __call__(self, features: list) -> dict[str, torch.Tensor]:
        encs = [f if isinstance(f, EncodedRecord) else self.encode(f) for f in features]
        rows = [self._row(e) for e in encs]
        B, T = len(rows), max(len(r["ids"]) for r in rows)
        input_ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        position_ids = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), -100, dtype=torch.long)
        segment_ids = torch.zeros((B, T), dtype=torch.long)
        mask = torch.eye(T, dtype=torch.bool).repeat(B, 1, 1)  # pads see themselves: no empty softmax row
        left = self.cfg.data.padding_side is Padding.LEFT
        shifts = []
        for b, r in enumerate(rows):
            n = len(r["ids"])
            s = T - n if left else 0
            shifts.append(s)
            input_ids[b, s:s + n] = torch.tensor(r["ids"])
            position_ids[b, s:s + n] = torch.tensor(r["pos"])
            labels[b, s:s + n] = torch.tensor(r["labels"])
            segment_ids[b, s:s + n] = torch.tensor(r["segs"])
            for start, end, prefix in r["blocks"]:
                size = end - start
                mask[b, s + start:s + end, s + start:s + end] = torch.ones(size, size, dtype=torch.bool).tril()
                if prefix is not None:
                    mask[b, s + start:s + end, s:s + prefix] = True
        batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask[:, None],
                 "labels": labels, "segment_ids": segment_ids}
        if self.views:
            sh = torch.tensor(shifts)
            batch["text_index"] = torch.tensor([r["text_index"] for r in rows]) + sh
            batch["code_index"] = torch.tensor([r["code_index"] for r in rows]) + sh
        if self.stp:
            batch["content_spans"] = torch.tensor([e.content_spans for e in encs]) + torch.tensor(shifts)[:, None]
        return batch


def _char_span_tokens(offsets: list[tuple[int, int]], text: str, content: str) -> tuple[int, int]:
    """First and last token (indices into `offsets`) overlapping the first occurrence of `content` in `text`."""
    start = text.find(content)
    if start < 0:
        raise RecordError("the assistant content does not appear verbatim in the rendered completion; this "
                          "chat template rewrites it, so STP cannot locate the assistant span")
    inside = [i for i, (s, e) in enumerate(offsets) if s < start + len(content) and e > start]
    return inside[0], inside[-1]


def strip_views(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only the full-conversation segments (a step whose JEPA term is dropped costs plain FT)."""
    keep = batch["segment_ids"] == SEG_FULL  # (B, T)
    B, T = keep.shape[0], int(keep.sum(1).max())
    out = {"input_ids": torch.zeros(B, T, dtype=torch.long), "position_ids": torch.zeros(B, T, dtype=torch.long),
           "labels": torch.full((B, T), -100, dtype=torch.long), "segment_ids": torch.zeros(B, T, dtype=torch.long),
           "attention_mask": torch.eye(T, dtype=torch.bool).repeat(B, 1, 1, 1)}
    for b in range(B):
        idx = keep[b].nonzero().squeeze(1)
        n = idx.numel()
        for key in ("input_ids", "position_ids", "labels", "segment_ids"):
            out[key][b, :n] = batch[key][b, idx]
        out["attention_mask"][b, 0, :n, :n] = batch["attention_mask"][b, 0][idx][:, idx]
    return {k: v.to(batch["input_ids"].device) for k, v in out.items()}


def encode_records(collate: JepaCollator, records: list[dict], on_invalid: InvalidRecords) -> list[EncodedRecord]:
    """Tokenize every record once; over-long ones raise or are skipped (counted, logged)."""
    out, skipped = [], 0
    for i, rec in enumerate(records):
        try:
            out.append(collate.encode(rec))
        except RecordError as e:
            if on_invalid is InvalidRecords.ERROR:
                raise RecordError(f"record {i}: {e}") from None
            skipped += 1
    if skipped:
        log.warning("skipped %d record(s) longer than data.max_length or malformed", skipped)
    if not out:
        raise RecordError("no usable training records left; check data.train and data.max_length")
    return out
