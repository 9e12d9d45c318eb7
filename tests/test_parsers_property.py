"""Property tests (hypothesis) of the input parsers: whatever a user writes into a manifest, a
JSONL data file, a recipe or a `--set` override either parses or raises the parser's own named
error (ManifestError, RecordError/DataSourceError, ConfigError), never another exception."""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jepa_common.config import ConfigError, load_config
from llm_jepa.data import DataSourceError, RecordError, load_records
from vljepa.data import ManifestError, load_manifest
from vljepa.eval_cli import EvalConfig
from vljepa.eval_data import from_manifest
from vljepa.recipe import TrainConfig

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=8)
_keys = st.sampled_from(["path", "target", "query", "start", "end", "label", "messages", "x"])
_rows = st.dictionaries(_keys, _json, max_size=5) | _json
_lines = st.lists(_rows.map(json.dumps) | st.text(max_size=30), max_size=4).map("\n".join)
_csv = st.lists(st.lists(st.text(string.printable, max_size=8), max_size=5).map(",".join), max_size=4).map("\n".join)


def _write(suffix: str, content: str | bytes) -> Path:
    f = Path(tempfile.mkdtemp()) / f"data{suffix}"
    f.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return f


@SETTINGS
@given(st.one_of(_lines, st.binary(max_size=40)), st.sampled_from([".jsonl", ".csv"]))
@example("[" * 5000, ".jsonl")
@example('{"path": "a.mp4", "target": "t", "start": 1e999}', ".jsonl")
@example("path,target\n" + "a.mp4,\"unclosed", ".csv")
def test_training_manifest_parses_or_raises_manifest_error(content, suffix):
    try:
        records = load_manifest(_write(suffix, content))
    except ManifestError:
        return
    assert records and all(r.target.strip() and r.path for r in records)


@SETTINGS
@given(st.one_of(_lines, _csv, st.binary(max_size=40)), st.sampled_from([".jsonl", ".csv"]),
       st.none() | st.just(["a", "b"]))
@example('{"path": "a.mp4", "label": -1}', ".jsonl", None)
@example('{"path": "a.mp4", "label": "²"}', ".jsonl", ["a", "b"])
@example('{"path": "a.mp4", "label": 7}', ".jsonl", ["a", "b"])
def test_classify_manifest_parses_or_raises_manifest_error(content, suffix, names):
    try:
        data = from_manifest(_write(suffix, content), names)
    except ManifestError:
        return
    assert len(data.paths) == len(data.labels) > 0
    assert all(0 <= label < len(data.class_names) for label in data.labels)


@SETTINGS
@given(st.one_of(_lines, st.binary(max_size=40)))
@example("")
@example("[" * 5000)
def test_llm_jsonl_parses_or_raises_record_error(content):
    try:
        records = load_records(str(_write(".jsonl", content)))
    except (RecordError, DataSourceError):
        return
    assert records and all("messages" in r for r in records)


@SETTINGS
@given(st.integers(min_value=-3, max_value=10))
def test_llm_limit_is_checked(limit):
    try:
        records = load_records("synth_test", limit=limit)
    except ValueError as e:
        assert limit < 0 and "limit" in str(e)
        return
    assert len(records) == limit


_override = st.one_of(
    st.text(max_size=30),
    st.tuples(st.sampled_from(["optim.lr", "optim.betas", "model.loss", "data.num_frames", "run.seed", "optim",
                               "index.kind", "templates", "ks", "data", "model.x.y", ""]),
              st.text(max_size=12) | _json.map(json.dumps)).map("=".join))


@SETTINGS
@given(st.one_of(st.text(max_size=60), _json.map(json.dumps)), st.lists(_override, max_size=3),
       st.sampled_from([TrainConfig, EvalConfig]))
@example("optim: {lr: [", [], TrainConfig)
@example("", ["optim.betas=[0.9, 0.95"], TrainConfig)
@example("", ["data.num_frames=1.0e400"], TrainConfig)
@example("", ["templates='[abc'"], EvalConfig)
@example("{1: 2}", [], EvalConfig)
def test_config_parses_or_raises_config_error(recipe, overrides, cls):
    try:
        cfg = load_config(cls, _write(".yaml", recipe), overrides)
    except ConfigError:
        return
    assert isinstance(cfg, cls)
