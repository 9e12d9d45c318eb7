"""Chat-format records for LLM-JEPA: loading, validation and chat-template rendering with spans.

Data flow: a packaged set name / JSONL file / Hugging Face `datasets` id -> `load_records` ->
validated `{"messages": [system?, user, assistant]}` dicts -> (in `llm_jepa.collator`) token ids
of the three views. Rendering helpers here are the single source of truth for "what the model
saw", so training and generation-based evaluation (`llm_jepa.evaluate`) use the same prompt:

    records = load_records("synth_train")            # packaged: llm_jepa/datasets/synth_train.jsonl.gz
    text = render_prompt(tokenizer, records[0])       # system+user turn + generation prompt
    ids = encode_prompt(tokenizer, records[0])        # the same, tokenized (no second BOS)

Chat templates already contain the BOS token, so every tokenization here uses
`add_special_tokens=False` (the reference code tokenized with it and got a double BOS).
Templates that reject a system role (Gemma) get the system text merged into the user turn.
"""

from __future__ import annotations

import difflib
import enum
import gzip
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from llm_jepa.datasets import packaged_file, packaged_names, read_packaged_lines

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
_PLACEHOLDER = "\ue000"  # private-use character: marks where a view's content lands in the template
# Llama-3 templates stamp today's date into the system turn unless `date_string` is given: fix it,
# so a prompt renders the same in training and evaluation (reference defect 7, DESIGN.md). Qwen3's
# template opens every answer with a thinking block unless `enable_thinking=False`; with it the empty
# block `<think>\n\n</think>\n\n` is part of the generation prompt, so it is never a label and the
# model answers at once at evaluation. Templates ignore variables they do not use.
TEMPLATE_KWARGS = {"date_string": "26 Jul 2024", "enable_thinking": False}
# End-of-turn tokens of the supported chat templates (Llama 3, Gemma, ChatML/Qwen, Phi).
END_OF_TURN = ("<|eot_id|>", "<end_of_turn>", "<|im_end|>", "<|end|>")


class InvalidRecords(enum.Enum):
    """What to do with a malformed record: stop with an error, or skip it (counted and logged)."""

    ERROR = "error"
    SKIP = "skip"


class RecordError(ValueError):
    """A record that is not `{"messages": [system?, user, assistant]}` with non-empty texts."""


def validate_record(record: Any) -> None:
    """Raise RecordError naming the problem unless `record` is a valid chat record."""
    if not isinstance(record, dict) or "messages" not in record:
        raise RecordError("record has no 'messages' list; expected {'messages': [system?, user, assistant]}")
    msgs = record["messages"]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        raise RecordError("'messages' must be a list of {'role', 'content'} dicts")
    roles = [m.get("role") for m in msgs]
    if roles not in (["system", "user", "assistant"], ["user", "assistant"]):
        raise RecordError(f"roles {roles} must be [system, user, assistant] or [user, assistant]")
    for m in msgs:
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            raise RecordError(f"the {m['role']} message has empty or non-string content {content!r}")


def filter_records(records: list[Any], on_invalid: InvalidRecords, source: str) -> list[dict]:
    """Validate `records`; raise on the first bad one, or skip bad ones and log how many."""
    good: list[dict] = []
    reasons: dict[str, int] = {}
    for i, rec in enumerate(records):
        try:
            validate_record(rec)
        except RecordError as e:
            if on_invalid is InvalidRecords.ERROR:
                raise RecordError(f"{source}, record {i}: {e} (set data.on_invalid=skip to skip such "
                                  "records)") from None
            reasons[str(e)] = reasons.get(str(e), 0) + 1
            continue
        good.append(rec)
    if reasons:
        log.warning("%s: skipped %d malformed record(s): %s", source, len(records) - len(good), reasons)
    return good


class DataSourceError(FileNotFoundError):
    """A data source that is neither a packaged set, an existing JSONL file, nor a `datasets` hub id."""


# `org/name` (optionally `org/name:config` is not supported: pass `split` separately).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
DATA_DIR_ENV = "JEPA_DATA_DIR"


class SourceKind(enum.Enum):
    PACKAGED = "packaged"  # a short name of a set shipped in llm_jepa/datasets
    FILE = "file"  # a JSONL file on disk (plain or .gz)
    HUB = "hub"  # a Hugging Face `datasets` id


@dataclass(frozen=True)
class DataSource:
    """Where `load_records` reads from: `kind` plus the short name, file path or hub id."""

    kind: SourceKind
    ref: str

    def __str__(self) -> str:
        return self.ref


def _extra_dirs() -> list[Path]:
    """Folders named by $JEPA_DATA_DIR (os.pathsep-separated): optional extra `<name>.jsonl[.gz]` sets."""
    return [Path(p) for p in os.environ.get(DATA_DIR_ENV, "").split(os.pathsep) if p]


def available_names() -> list[str]:
    """Short names `load_records` accepts: the packaged sets plus those in $JEPA_DATA_DIR."""
    extra = {f.name.split(".")[0] for d in _extra_dirs() if d.is_dir() for f in d.iterdir()
             if f.name.endswith(_JSONL_SUFFIXES)}
    return sorted(set(packaged_names()) | extra)


def _unknown(source: str, why: str) -> DataSourceError:
    names = available_names()
    close = difflib.get_close_matches(source, names, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return DataSourceError(
        f"data source {source!r} {why}.{hint} Pass a packaged set name ({', '.join(names)}), the path of a "
        f".jsonl file, or a Hugging Face datasets id 'org/name'; ${DATA_DIR_ENV} may add a folder of extra sets.")


def resolve_source(source: str | Path) -> DataSource:
    """Resolve a data source without surprises (no network for anything but an explicit `org/name`).

    packaged short name -> the packaged file; a name in $JEPA_DATA_DIR -> that file; an existing
    file -> that file; `org/name` -> the datasets hub; anything else (a typo, a directory, a
    missing .jsonl path) -> DataSourceError listing the packaged names.
    """
    text = str(source)
    if not text.strip():
        raise _unknown(text, "is empty")
    if packaged_file(text) is not None:
        return DataSource(SourceKind.PACKAGED, text)
    for folder in _extra_dirs():
        for suffix in (".jsonl", ".jsonl.gz"):
            if "/" not in text and (folder / f"{text}{suffix}").is_file():
                return DataSource(SourceKind.FILE, str(folder / f"{text}{suffix}"))
    path = Path(source)
    if path.is_file():
        return DataSource(SourceKind.FILE, str(path))
    if path.is_dir():
        raise _unknown(text, "is a directory; pass one .jsonl file inside it")
    if text.endswith(_JSONL_SUFFIXES):
        raise DataSourceError(f"data file {text} does not exist")
    if _HUB_ID.match(text):
        return DataSource(SourceKind.HUB, text)
    raise _unknown(text, "is not a packaged set, a file, or an 'org/name' hub id")


def _parse_jsonl(lines: list[str], where: str) -> list[Any]:
    out: list[Any] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly deep nesting
            raise RecordError(f"{where}:{lineno}: not valid JSON ({getattr(e, 'msg', e)})") from None
    return out


def _read_lines(src: DataSource) -> list[str]:
    if src.kind is SourceKind.PACKAGED:
        return read_packaged_lines(src.ref)
    opener = gzip.open if src.ref.endswith(".gz") else open
    try:
        with opener(src.ref, "rt", encoding="utf-8") as f:
            return f.read().splitlines()
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise RecordError(f"{src.ref}: not UTF-8 JSONL text ({e})") from None


def _load_hub(hub_id: str, split: str | None) -> list[Any]:
    import datasets  # lazy: only hub users pay for the import

    ds = datasets.load_dataset(hub_id, split=split or "train")
    if "messages" not in ds.column_names:
        raise RecordError(f"dataset {hub_id!r} has columns {ds.column_names}; it needs a 'messages' "
                          "column of chat turns")
    return [{"messages": m} for m in ds["messages"]]


def load_records(source: str | Path, split: str | None = None, *,
                 on_invalid: InvalidRecords = InvalidRecords.ERROR, limit: int | None = None) -> list[dict]:
    """Load chat records from a packaged set name, a JSONL path (plain or .gz), or a `datasets` hub id.

    `split` applies to hub ids only; `limit` keeps the first `limit` records (None = all).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit} must be >= 0 (or None for every record)")
    src = resolve_source(source)
    raw = _load_hub(src.ref, split) if src.kind is SourceKind.HUB else _parse_jsonl(_read_lines(src), src.ref)
    if not raw:
        raise RecordError(f"{src.ref}: holds no records")
    if limit is not None:
        raw = raw[:limit]
    return filter_records(raw, on_invalid, src.ref)


def split_record(record: dict) -> tuple[str | None, str, str]:
    """(system or None, user, assistant) texts, stripped (templates `trim` them anyway)."""
    by_role = {m["role"]: m["content"].strip() for m in record["messages"]}
    return by_role.get("system"), by_role["user"], by_role["assistant"]


def view_contents(record: dict) -> tuple[str, str]:
    """(Text, Code) contents of the JEPA views. Records may name them explicitly in `text` / `code`
    (one-message lists, as HellaSwag does: the context without the options, and the ending itself
    rather than its letter); otherwise Text = the user turn and Code = the assistant turn."""
    _, user, assistant = split_record(record)
    out = []
    for key, default in (("text", user), ("code", assistant)):
        view = record.get(key)
        if view is None:
            out.append(default)
            continue
        if (not isinstance(view, list) or len(view) != 1 or not isinstance(view[0], dict)
                or not isinstance(view[0].get("content"), str) or not view[0]["content"].strip()):
            raise RecordError(f"record field {key!r} must be a list of one message with non-empty content, "
                              f"got {str(view)[:80]!r}")
        out.append(view[0]["content"].strip())
    return out[0], out[1]


def stop_token_ids(tok: PreTrainedTokenizerBase) -> list[int]:
    """EOS plus the chat template's end-of-turn token (generation stops at either; labels end there)."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    vocab = tok.get_vocab()
    ids.update(vocab[name] for name in END_OF_TURN if name in vocab)
    if not ids:
        raise ValueError("tokenizer has neither an EOS nor an end-of-turn token; generation would never stop")
    return sorted(ids)


def family_of(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """Model family guessed from the chat template's markers (None when unknown)."""
    tpl = tokenizer.chat_template or ""
    if isinstance(tpl, dict):
        tpl = tpl.get("default", "")
    markers = (("<|start_header_id|>", "llama"), ("<start_of_turn>", "gemma"),
               ("<|im_start|>", "qwen"), ("<|user|>", "olmo"))
    for marker, family in markers:
        if marker in tpl:
            return family
    return None


def supports_system_role(tokenizer: PreTrainedTokenizerBase) -> bool:
    """False for templates that raise on a system turn (Gemma)."""
    try:
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                                      tokenize=False, **TEMPLATE_KWARGS)
    except Exception:  # jinja raise_exception -> TemplateError; the type differs across versions
        return False
    return True


def prompt_messages(record: dict, tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """The system+user turns as trained on; system merged into the user turn where unsupported."""
    system, user, _ = split_record(record)
    if system is None:
        return [{"role": "user", "content": user}]
    if supports_system_role(tokenizer):
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return [{"role": "user", "content": f"{system}\n\n{user}"}]


def render_prompt(tokenizer: PreTrainedTokenizerBase, record: dict) -> str:
    """Prompt text (with the generation prompt) exactly as the model saw it in training."""
    return tokenizer.apply_chat_template(prompt_messages(record, tokenizer), tokenize=False,
                                         add_generation_prompt=True, **TEMPLATE_KWARGS)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, record: dict) -> list[int]:
    """Token ids of `render_prompt` (the template holds BOS, so no special tokens are added)."""
    return tokenizer(render_prompt(tokenizer, record), add_special_tokens=False)["input_ids"]


@dataclass
class SpanEncoding:
    """Token ids of a rendered template and the index of the last token of the tracked content."""

    ids: list[int]
    last: int  # index into ids of the last token of the content (or of the last predictor token)
    first: int = -1  # index into ids of the first token of the tracked content


def encode_with_span(tokenizer: PreTrainedTokenizerBase, messages: list[dict], index: int, content: str,
                     add_generation_prompt: bool = False, from_char: int = 0) -> SpanEncoding:
    """Render `messages` with `content` put into message `index`, tokenize, and locate its first and last
    token (the tracked content starts `from_char` characters into `content`: 0 = all of it).

    The content's character span is known exactly (a placeholder is rendered first), and the
    tokenizer's offset mapping turns it into a token index: no per-family magic offset.
    """
    msgs = [dict(m) for m in messages]
    msgs[index]["content"] = _PLACEHOLDER
    rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             **TEMPLATE_KWARGS)
    parts = rendered.split(_PLACEHOLDER)
    if len(parts) != 2:
        raise ValueError(f"chat template rendered the content {len(parts) - 1} times; expected once")
    start, end = len(parts[0]) + from_char, len(parts[0]) + len(content)
    enc = tokenizer(parts[0] + content + parts[1], add_special_tokens=False, return_offsets_mapping=True)
    inside = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
    if not inside:
        raise ValueError(f"no token covers the content {content[:40]!r}; is the tokenizer a fast one?")
    return SpanEncoding(list(enc["input_ids"]), inside[-1], inside[0])
