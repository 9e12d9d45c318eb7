"""Hand-made pass/fail cases for every LLM-JEPA task scorer (eval.llm_tasks, eval.regex_equiv)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest

from eval.llm_tasks import (
    ScoreContext,
    aggregate,
    execution_match,
    extract_gsm8k_answer,
    get_task,
    normalize_sql,
)
from eval.regex_equiv import (
    BoundaryMode,
    EquivLimits,
    Verdict,
    from_nlrx_tokens,
    is_empty_language,
    regex_equivalent,
)


def rec(assistant: str, user: str = "q", system: str = "s") -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


@pytest.mark.parametrize("gold, pred", [
    ("(dog)|([0-9])", "([0-9])|(dog)"),  # union commutes
    ("(([A-Za-z])+)&((.*)(dog))", "((.*)dog)&([A-Za-z]+)"),  # intersection commutes, redundant parens
    ("([0-9]){3,}", "[0-9][0-9][0-9]([0-9])*"),  # counted repeat
    ("~((dog)|(truck))", "(~(dog))&(~(truck))"),  # De Morgan
    ("\\b(dog)\\b", "\\bdog\\b"),
    (".*(.*)(([AEIOUaeiou])*).*", ".*"),  # the data's own redundancy: all lines
    ("([a-z])&([0-9])", "~(.*)"),  # both empty languages
])
def test_regex_equivalent_pairs(gold, pred):
    res = regex_equivalent(gold, pred)
    assert res.verdict is Verdict.EQUIVALENT, res
    assert gold != pred  # really semantic, not string comparison


@pytest.mark.parametrize("gold, pred", [
    ("(dog)|([0-9])", "(dog)&([0-9])"),
    ("([0-9]){3,}", "([0-9]){2,}"),
    ("~(dog)", "dog"),
    ("\\b(dog)\\b", "bdogb"),  # \b is a boundary symbol, not the letter b
    ("[a-z]", "[A-Z]"),
    ("dog.*", "dog.+"),
])
def test_regex_different_pairs(gold, pred):
    assert regex_equivalent(gold, pred).verdict is Verdict.DIFFERENT


def test_regex_brics_precedence_and_letter_b_mode():
    # brics: '&' binds looser than concatenation, so \b(X)&(Y)\b is (\bX)&(Y\b): empty here
    assert is_empty_language("\\b([0-9])&(.)\\b")
    assert regex_equivalent("\\b(a)\\b", "bab", boundary=BoundaryMode.LETTER_B).equivalent
    assert not regex_equivalent("\\b(a)\\b", "bab").equivalent


def test_regex_errors_and_limits_are_counted_not_equal():
    assert regex_equivalent("(dog", "(dog").verdict is Verdict.EQUIVALENT  # identical text short-cut
    assert regex_equivalent("dog", "(dog").verdict is Verdict.PARSE_ERROR
    assert regex_equivalent("dog", "").verdict is Verdict.PARSE_ERROR
    assert regex_equivalent("dog", "[z-a]").verdict is Verdict.PARSE_ERROR
    tight = EquivLimits(max_states=20)
    res = regex_equivalent("(dog.*[0-9].*){9,}", "(dog.*[0-9].*){10,}", limits=tight)
    assert res.verdict is Verdict.UNDECIDED and not res.equivalent
    long = "a" * 500
    assert regex_equivalent("a", long).verdict is Verdict.UNDECIDED


def test_nlrx_token_dialect_matches_chat_data():
    assert from_nlrx_tokens("\\ b ( <M0> ) & ( [ <NUM> ] ) \\ b") == "\\b(dog)&([0-9])\\b"


def test_nlrx_scorer_exact_and_equivalence():
    spec = get_task("synth")
    gold = rec("(dog)|([0-9])")
    assert spec.score("(dog)|([0-9])", gold, ScoreContext()) == {
        "exact_match": True, "equivalent": True, "regex_verdict": "equivalent"}
    out = spec.score("([0-9])|(dog)", gold, ScoreContext())
    assert out["exact_match"] is False and out["equivalent"] is True
    out = spec.score("dog", gold, ScoreContext())
    assert out["exact_match"] is False and out["equivalent"] is False
    summary = aggregate([spec.score(p, gold, ScoreContext()) for p in ["([0-9])|(dog)", "dog", "(("]], spec)
    assert summary["equivalent"] == pytest.approx(100 / 3) and summary["exact_match"] == 0.0  # percent
    assert summary["regex_verdict_counts"] == {"equivalent": 1, "different": 1, "parse_error": 1}


def test_gsm8k():
    assert extract_gsm8k_answer("so 3 + 4 = 7\n#### 7") == Decimal(7)
    assert extract_gsm8k_answer("she pays $1,250.00 in total") == Decimal(1250)
    assert extract_gsm8k_answer("no number here") is None
    spec, gold = get_task("gsm8k"), rec("5 * 2 = <<5*2=10>>10 dollars\n#### 10")
    assert spec.score("It is 4+6.\n#### 10", gold, ScoreContext())["answer_match"]
    assert spec.score("4 + 6 = 10", gold, ScoreContext())["answer_match"]  # last number
    assert not spec.score("#### 11", gold, ScoreContext())["answer_match"]
    assert not spec.score("I do not know", gold, ScoreContext())["answer_match"]
    assert not spec.score("#### 10 apples, or 12", rec("#### 12"), ScoreContext())["answer_match"]


@pytest.fixture
def spider_dir(tmp_path):
    db = tmp_path / "shop" / "shop.sqlite"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE item(id INTEGER, name TEXT, price REAL);"
                       "INSERT INTO item VALUES (1,'pen',2.0),(2,'ink',5.0),(3,'cap',2.0);")
    conn.commit()
    conn.close()
    return tmp_path


def test_spider_exact_match_normalisation():
    assert normalize_sql("SELECT name FROM item WHERE price  >  2;") == normalize_sql("select NAME from ITEM where price > 2")
    assert normalize_sql("SELECT name FROM item") != normalize_sql("SELECT id FROM item")
    spec = get_task("spider")
    gold = rec("SELECT count(*) FROM item", user="For db_id:[shop]\n\nHow many items?")
    assert spec.score("select COUNT(*) from item;", gold, ScoreContext())["exact_match"]
    assert not spec.score("SELECT count(*) FROM item WHERE price > 1", gold, ScoreContext())["exact_match"]
    assert "execution_match" not in spec.score("x", gold, ScoreContext())  # no db dir: no execution


def test_spider_execution_match(spider_dir):
    spec, ctx = get_task("spider"), ScoreContext(spider_db_dir=spider_dir)
    gold = rec("SELECT name FROM item WHERE price = 2", user="For db_id:[shop]\n\nCheap items?")
    ok = spec.score("SELECT name FROM item WHERE price < 3", gold, ctx)
    assert ok["execution_match"] and ok["execution_status"] == "ok" and not ok["exact_match"]
    bad = spec.score("SELECT name FROM item", gold, ctx)
    assert not bad["execution_match"]
    # an erroring prediction fails even against a gold query with an empty result
    empty_gold = rec("SELECT name FROM item WHERE price > 100", user="For db_id:[shop]\n\nx")
    err = spec.score("SELECT nme FROM item", empty_gold, ctx)
    assert err["execution_match"] is False and err["execution_status"] == "pred_error"
    ordered = rec("SELECT name FROM item ORDER BY id DESC", user="For db_id:[shop]\n\nx")
    assert not spec.score("SELECT name FROM item ORDER BY id", ordered, ctx)["execution_match"]
    assert spec.score("SELECT name FROM item ORDER BY id", rec("SELECT name FROM item", user="For db_id:[shop]"),
                      ctx)["execution_match"]  # no ORDER BY in gold: row order is free
    assert execution_match("SELECT 1", "SELECT 1", spider_dir / "nope.sqlite").status == "missing_db"
    assert not execution_match("DELETE FROM item", "SELECT 1", spider_dir / "shop" / "shop.sqlite").match


def test_label_prefix_rotten_tomatoes_and_yelp():
    rt, yelp = get_task("rotten_tomatoes"), get_task("yelp")
    assert rt.score("Good", rec("Good"), ScoreContext())["label_match"]
    assert rt.score("Good, really", rec("Good"), ScoreContext())["label_match"]
    assert not rt.score("Bad", rec("Good"), ScoreContext())["label_match"]
    assert not rt.score("Goodness", rec("Good"), ScoreContext())["label_match"]
    assert not yelp.score("Very Good", rec("Good"), ScoreContext())["label_match"]
    assert yelp.score("Very Bad", rec("Very Bad"), ScoreContext())["label_match"]
    assert not yelp.score("", rec("Bad"), ScoreContext())["label_match"]


def test_hellaswag_choice():
    hs = get_task("hellaswag")
    assert hs.score("B", rec("B"), ScoreContext())["choice_match"]
    assert hs.score("B) the man walks", rec("B"), ScoreContext())["choice_match"]
    assert not hs.score("A", rec("B"), ScoreContext())["choice_match"]
    assert not hs.score("Because", rec("B"), ScoreContext())["choice_match"]


def test_nq_open_gold_contained_in_generation():
    nq = get_task("nq_open")
    gold = rec("6 geese a-laying; maids a-milking")
    assert nq.score("Six? No: 6 geese a-laying!", gold, ScoreContext())["contains_gold"]
    assert nq.score("The maids a-milking", gold, ScoreContext())["contains_gold"]
    assert not nq.score("", gold, ScoreContext())["contains_gold"]  # the reference calls this correct
    assert not nq.score("geese", gold, ScoreContext())["contains_gold"]  # generation inside gold is not enough
    assert not nq.score("1990s", rec("1990"), ScoreContext())["contains_gold"]  # whole words only


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ValueError, match="synth"):
        get_task("synth_test")


@pytest.mark.parametrize("pred", [
    "ATTACH 'file:{out}?mode=rwc' AS x",  # created a file even on the read-only connection
    "ATTACH DATABASE '{out}' AS x",
    "PRAGMA writable_schema = 1",
    "CREATE TEMP TABLE t(a)",
    "SELECT 1; ATTACH '{out}' AS y",
])
def test_spider_execution_denies_side_effects(spider_dir, pred):
    out = spider_dir / "created.sqlite"
    res = execution_match(pred.format(out=out), "SELECT 1", spider_dir / "shop" / "shop.sqlite")
    assert res.match is False and res.status in ("denied", "pred_error") and not out.exists()
    assert execution_match(f"ATTACH 'file:{out}?mode=rwc' AS x", "SELECT 1",
                           spider_dir / "shop" / "shop.sqlite").status == "denied"


def test_spider_execution_time_limit_per_query(spider_dir):
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    res = execution_match(endless, "SELECT 1", spider_dir / "shop" / "shop.sqlite", timeout_s=0.2)
    assert res.status == "timeout" and res.match is False
    ok = execution_match("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) "
                         "SELECT count(*) FROM c", "SELECT 3", spider_dir / "shop" / "shop.sqlite")
    assert ok.status == "ok" and ok.match  # reading (with a recursive CTE) stays allowed
