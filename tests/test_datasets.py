"""The project carries its data: packaged set names resolve offline, typos get a clear error.

Every short set name that a recipe, benchmark, demo or test uses must resolve to a file shipped
inside `llm_jepa/datasets` (nothing outside the checkout, no network); anything that is not a
packaged name, an existing file or an explicit `org/name` hub id is an error that lists the
packaged names and never reaches the hub.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llm_jepa.data import DataSourceError, SourceKind, available_names, load_records, resolve_source
from llm_jepa.datasets import packaged_names, read_packaged_lines

ROOT = Path(__file__).resolve().parent.parent
ROWS = {"synth_train": 8000, "synth_test": 2000, "turk_train": 8000, "turk_test": 2000, "gsm8k_train": 7473,
        "gsm8k_test": 1319, "spider_train": 6587, "spider_test": 1447, "rotten_tomatoes_train": 8530,
        "rotten_tomatoes_test": 1066, "nq_open_train": 8000, "nq_open_test": 1769, "hellaswag_test": 2000,
        "yelp_test": 2000}


def test_every_paper_set_is_packaged_with_its_rows():
    assert packaged_names() == sorted(ROWS)
    for name, rows in ROWS.items():
        lines = read_packaged_lines(name)
        assert len(lines) == rows, name
        assert [m["role"] for m in json.loads(lines[0])["messages"]][-2:] == ["user", "assistant"]
    for lic in ("LICENSE-LLM-JEPA", "LICENSE-NL-RX", "LICENSE-GSM8K"):
        assert (ROOT / "llm_jepa" / "datasets" / lic).is_file()


def _names_used_in_project() -> set[str]:
    """Short set names in recipes (data.train), benchmarks, demos, library defaults and tests."""
    names: set[str] = set()
    for yaml in (ROOT / "recipes").rglob("*.yaml"):
        names |= set(re.findall(r"^\s*(?:train|data):\s*([A-Za-z0-9_]+)\s*$", yaml.read_text(), re.M))
    py_files = [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("llm_jepa/*.py"), *ROOT.glob("tests/*.py"),
                *ROOT.glob("vljepa/*.py"), ROOT / "Makefile"]
    for f in py_files:
        text = f.read_text()
        names |= set(re.findall(r"[\"'=]([a-z0-9]+(?:_[a-z0-9]+)*_(?:train|test))[\"'\s,]", text))
    return names - {"x_train", "x_test", "y_train", "y_test"}


def test_every_set_name_the_project_uses_resolves_to_packaged_data():
    used = _names_used_in_project()
    assert {"synth_train", "synth_test"} <= used  # the scan finds the names it must find
    for name in sorted(used):
        src = resolve_source(name)
        assert src.kind is SourceKind.PACKAGED, (name, src)


def test_typo_is_a_clear_error_and_never_a_hub_call(monkeypatch):
    import datasets

    def no_network(*a, **k):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a typo must not become a hub request")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(DataSourceError) as err:
        load_records("synth_trian")
    msg = str(err.value)
    assert "'synth_train'" in msg and "Did you mean" in msg and "gsm8k_test" in msg


def test_directory_missing_file_and_hub_id(tmp_path):
    with pytest.raises(DataSourceError, match="is a directory"):
        resolve_source(tmp_path)
    with pytest.raises(DataSourceError, match="does not exist"):
        resolve_source(tmp_path / "nope.jsonl")
    with pytest.raises(DataSourceError, match="is empty"):
        resolve_source("")
    assert resolve_source("someorg/some-set") .kind is SourceKind.HUB


def test_files_plain_gzip_and_extra_data_dir(tmp_path, monkeypatch):
    rec = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    plain = tmp_path / "mine.jsonl"
    plain.write_text(json.dumps(rec) + "\n")
    with gzip.open(tmp_path / "zipped.jsonl.gz", "wt") as f:
        f.write(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    assert load_records(plain) == [rec]
    assert len(load_records(tmp_path / "zipped.jsonl.gz")) == 2
    monkeypatch.setenv("JEPA_DATA_DIR", str(tmp_path))
    assert "zipped" in available_names() and "synth_train" in available_names()
    assert len(load_records("zipped")) == 2
    assert resolve_source("synth_train").kind is SourceKind.PACKAGED  # packaged names win


def test_empty_file_and_negative_limit_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no records"):
        load_records(empty)
    with pytest.raises(ValueError, match="limit=-1"):
        load_records("synth_test", limit=-1)
    assert len(load_records("synth_test", limit=3)) == 3


def test_wheel_carries_the_data(tmp_path):
    """`load_records('synth_train')` works from an installed wheel: the files are package data."""
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ into the source tree
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("vljepa", "llm_jepa", "eval", "jepa_common"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(src)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("jepa_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for set_name in ROWS:
        assert f"llm_jepa/datasets/{set_name}.jsonl.gz" in names
    assert {"llm_jepa/datasets/LICENSE-NL-RX", "llm_jepa/datasets/__init__.py"} <= names
    for folder, files in (("llm_jepa/pretrained/mini_llama", ("config.json", "model.safetensors", "tokenizer.json")),
                          ("vljepa/pretrained/tiny_vjepa2", ("config.json", "model.safetensors", "pretraining.json"))):
        assert {f"{folder}/{f}" for f in files} <= names, folder  # the shipped models are package data too
