"""Scorers of the LLM-JEPA tasks, chosen by task NAME (never by a data file's name).

Data flow: (generated assistant text, chat record with the gold assistant turn) ->
`TaskSpec.score` -> per-example dict of metrics (bools, or None when not computable) ->
`aggregate` -> accuracy per metric + counts. `llm_jepa.evaluate` drives it:

    spec = get_task("synth")
    per_example = [spec.score(gen, rec, ctx) for gen, rec in zip(generations, records)]
    summary = aggregate(per_example, spec)

Where the reference code's scoring is wrong we do better, and say so (DESIGN.md defect 6):
Spider execution counts an erroring query as a failure (the reference compares the two
empty stdouts and calls them equal); NQ-Open checks that a gold answer is contained in the
normalised generation (the reference checks the reverse, so an empty answer is "correct").

Spider execution runs model-generated SQL, so each query runs on a read-only connection under
an authorizer that allows reading only (SELECT, reads, functions, recursive CTEs; ATTACH, which
could create files through a `file:...?mode=rwc` URI, PRAGMA, writes and transactions are
denied: status "denied") and a per-query time limit (progress handler: status "timeout").

Accuracies from `aggregate` are percentages in [0, 100], the unit of every rate in `eval/`.
"""

from __future__ import annotations

import enum
import re
import sqlite3
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from eval.regex_equiv import BoundaryMode, EquivLimits, Verdict, regex_equivalent


class Task(enum.Enum):
    SYNTH = "synth"  # NL-RX-SYNTH
    TURK = "turk"  # NL-RX-TURK
    GSM8K = "gsm8k"
    SPIDER = "spider"
    ROTTEN_TOMATOES = "rotten_tomatoes"
    YELP = "yelp"
    HELLASWAG = "hellaswag"
    NQ_OPEN = "nq_open"


@dataclass
class ScoreContext:
    """What some scorers need besides the texts."""

    spider_db_dir: Path | None = None  # <dir>/<db_id>/<db_id>.sqlite; None: no execution match
    regex_boundary: BoundaryMode = BoundaryMode.SYMBOL
    regex_limits: EquivLimits = field(default_factory=EquivLimits)
    sql_timeout_s: float = 10.0


Scorer = Callable[[str, dict, ScoreContext], dict[str, Any]]


@dataclass(frozen=True)
class TaskSpec:
    task: Task
    score: Scorer
    primary: str  # the metric reported as the task's accuracy
    max_new_tokens: int  # enough for the longest gold answers of the set


def gold_answer(record: dict) -> str:
    """The assistant turn of a chat record (the Code view)."""
    for m in record["messages"]:
        if m["role"] == "assistant":
            return m["content"]
    raise ValueError("record has no assistant message; expected {'messages': [system?, user, assistant]}")


def user_text(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


# ---- NL-RX ------------------------------------------------------------------------------------
def score_nlrx(pred: str, record: dict, ctx: ScoreContext) -> dict[str, Any]:
    gold = gold_answer(record).strip()
    res = regex_equivalent(gold, pred.strip(), ctx.regex_boundary, ctx.regex_limits)
    return {"exact_match": pred.strip() == gold, "equivalent": res.equivalent, "regex_verdict": res.verdict.value}


# ---- GSM8K ------------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _to_decimal(text: str) -> Decimal | None:
    cleaned = text.replace(",", "").replace("$", "").rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def extract_gsm8k_answer(text: str) -> Decimal | None:
    """The number after the last `####`, else the last number in the text; None if there is none."""
    if "####" in text:
        found = _NUMBER.findall(text.rsplit("####", 1)[1])
        if found:
            return _to_decimal(found[0])
    found = _NUMBER.findall(text)
    return _to_decimal(found[-1]) if found else None


def score_gsm8k(pred: str, record: dict, ctx: ScoreContext) -> dict[str, Any]:
    gold = extract_gsm8k_answer(gold_answer(record))
    got = extract_gsm8k_answer(pred)
    return {"answer_match": gold is not None and got is not None and got == gold,
            "extracted": None if got is None else str(got)}


# ---- Spider -----------------------------------------------------------------------------------
_DB_ID = re.compile(r"For db_id:\[([^\]]+)\]")


def spider_db_id(user: str) -> str:
    """Database id from the user turn ('For db_id:[concert_singer] ...')."""
    m = _DB_ID.search(user)
    if not m:
        raise ValueError(f"no 'For db_id:[...]' in the Spider question {user[:60]!r}; is this Spider data?")
    return m.group(1)


def normalize_sql(sql: str) -> str:
    """Canonical text of a query: sqlglot round trip (SQLite dialect, identifiers lower-cased,
    keyword case and spacing unified, no trailing ';'); plain whitespace/case folding if unparsable."""
    import sqlglot  # lazy: only Spider pays for it
    from sqlglot.errors import SqlglotError

    text = sql.strip().rstrip(";").strip()
    try:
        tree = sqlglot.parse_one(text, read="sqlite")
        return tree.sql(dialect="sqlite", normalize=True, pretty=False)
    except (SqlglotError, ValueError):
        return " ".join(text.lower().split())


@dataclass
class ExecResult:
    match: bool
    status: str  # ok | pred_error | gold_error | missing_db | timeout | denied


# What a scored query may do: read. Everything else (ATTACH, PRAGMA, writes, transactions,
# schema changes) is denied before it runs.
_READ_ONLY_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                      getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def _authorize(action: int, *_args) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ONLY_ACTIONS else sqlite3.SQLITE_DENY


def _run_query(db: Path, sql: str, timeout_s: float) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.set_authorizer(_authorize)
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)  # nonzero aborts
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def execution_match(pred: str, gold: str, db: Path, timeout_s: float = 10.0) -> ExecResult:
    """Same result rows on the database (as a multiset, or in order when gold has ORDER BY).
    A prediction that errors or runs out of time is a failure, whatever gold returns."""
    if not Path(db).is_file():
        return ExecResult(False, "missing_db")
    try:
        gold_rows = _run_query(db, gold, timeout_s)
    except sqlite3.Error:
        return ExecResult(False, "gold_error")
    try:
        pred_rows = _run_query(db, pred, timeout_s)
    except sqlite3.DatabaseError as e:
        status = "timeout" if "interrupt" in str(e) else "denied" if "not authorized" in str(e) else "pred_error"
        return ExecResult(False, status)
    except (sqlite3.Error, sqlite3.Warning, ValueError):  # Warning: several statements; ValueError: NUL
        return ExecResult(False, "pred_error")
    if "order by" in " ".join(gold.lower().split()):
        return ExecResult(pred_rows == gold_rows, "ok")
    return ExecResult(Counter(pred_rows) == Counter(gold_rows), "ok")


def score_spider(pred: str, record: dict, ctx: ScoreContext) -> dict[str, Any]:
    gold = gold_answer(record)
    out: dict[str, Any] = {"exact_match": normalize_sql(pred) == normalize_sql(gold)}
    if ctx.spider_db_dir is not None:
        db = Path(ctx.spider_db_dir) / (db_id := spider_db_id(user_text(record))) / f"{db_id}.sqlite"
        res = execution_match(pred, gold, db, ctx.sql_timeout_s)
        out["execution_match"], out["execution_status"] = res.match, res.status
    return out


# ---- classification ---------------------------------------------------------------------------
def score_label_prefix(pred: str, record: dict, ctx: ScoreContext) -> dict[str, Any]:
    """The generation starts with the gold label as a whole word ('Good' is not 'Very Good')."""
    gold, text = gold_answer(record).strip(), pred.strip()
    ok = text.startswith(gold) and (len(text) == len(gold) or not text[len(gold)].isalnum())
    return {"label_match": ok}


_CHOICE = re.compile(r"^\W*([A-D])(?![A-Za-z0-9])")


def score_choice(pred: str, record: dict, ctx: ScoreContext) -> dict[str, Any]:
    """HellaSwag: the first token of the generation is the gold letter (A-D, maybe 'A)' or '(B')."""
    m = _CHOICE.match(pred.strip())
    choice = m.group(1) if m else None
    return {"choice_match": choice == gold_answer(record).strip(), "choice": choice}


# ---- NQ-Open ----------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def score_nq_open(pred: str, record: dict, ctx: ScoreContext) -> dict[str, Any]:
    """Some gold answer (golds are joined by '; ') occurs, as whole words, in the normalised generation."""
    gen = normalize_answer(pred)
    golds = [g for g in (normalize_answer(a) for a in gold_answer(record).split(";")) if g]
    hit = bool(gen) and any(f" {g} " in f" {gen} " for g in golds)
    return {"contains_gold": hit}


TASKS: dict[Task, TaskSpec] = {
    Task.SYNTH: TaskSpec(Task.SYNTH, score_nlrx, "equivalent", 64),
    Task.TURK: TaskSpec(Task.TURK, score_nlrx, "equivalent", 64),
    Task.GSM8K: TaskSpec(Task.GSM8K, score_gsm8k, "answer_match", 320),
    Task.SPIDER: TaskSpec(Task.SPIDER, score_spider, "exact_match", 192),
    Task.ROTTEN_TOMATOES: TaskSpec(Task.ROTTEN_TOMATOES, score_label_prefix, "label_match", 4),
    Task.YELP: TaskSpec(Task.YELP, score_label_prefix, "label_match", 4),
    Task.HELLASWAG: TaskSpec(Task.HELLASWAG, score_choice, "choice_match", 4),
    Task.NQ_OPEN: TaskSpec(Task.NQ_OPEN, score_nq_open, "contains_gold", 32),
}


def get_task(name: str | Task) -> TaskSpec:
    """TaskSpec by name ('synth', 'gsm8k', ...); a clear error listing the valid names."""
    try:
        return TASKS[Task(name)]
    except ValueError:
        raise ValueError(f"unknown task {name!r}; choose one of {[t.value for t in Task]}") from None


def aggregate(per_example: list[dict[str, Any]], spec: TaskSpec) -> dict[str, Any]:
    """Accuracy (%) of every boolean metric (over examples where it is not None) + value counts."""
    out: dict[str, Any] = {"task": spec.task.value, "n": len(per_example), "primary_metric": spec.primary}
    keys = dict.fromkeys(k for ex in per_example for k in ex)
    for key in keys:
        values = [ex.get(key) for ex in per_example]
        bools = [v for v in values if isinstance(v, bool)]
        if bools and len(bools) == sum(v is not None for v in values):
            out[key] = 100 * sum(bools) / len(bools)
            if len(bools) != len(values):
                out[f"{key}_n"] = len(bools)
        elif key.endswith(("_verdict", "_status")):
            counts: dict[str, int] = {}
            for v in values:
                counts[str(v)] = counts.get(str(v), 0) + 1
            out[f"{key}_counts"] = counts
    out["accuracy"] = out.get(spec.primary, 0.0)
    if spec.task in (Task.SYNTH, Task.TURK):
        out["regex_undecided"] = out.get("regex_verdict_counts", {}).get(Verdict.UNDECIDED.value, 0)
    return out
