"""The prepared GPU check (benchmarks/gpu_check.py) on the CPU: its `--device cpu --tiny` run, its guards,
and the pieces that make FAISS GPU travel to the GPU machine (benchmarks/gpu_prepare.py).

The tiny run executes every section in-process with tiny shapes and checks the JSON and markdown
it writes: every section present and ok, every number finite, the CPU/CPU loss comparison exact
and the bf16-autocast one within tolerance, FAISS CPU == exact torch search. The isolated mode is
checked with injected faults (a crash, an exception, a hang killed at its time box). The real model
shapes are checked by parameter counts on the meta device.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402
import gpu_prepare  # noqa: E402
from gpu_check_faiss import compare  # noqa: E402
from gpu_check_llm import SHAPES, VARIANTS, lm_config  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from accelerate import Accelerator

    Accelerator(mixed_precision="no")  # what earlier tests leave in this process: the bf16 loops must not clash
    out = tmp_path_factory.mktemp("gpu_check")
    saved = os.environ.pop("OUT", None)  # the report must go to --out-dir only
    try:
        rc = gpu_check.main(["--device", "cpu", "--tiny", "--no-isolate", "--out-dir", str(out), "--name", "tiny",
                             "--work-dir", str(out / "work")])
    finally:
        if saved is not None:
            os.environ["OUT"] = saved
    return rc, json.loads((out / "tiny.json").read_text()), (out / "tiny.md").read_text()


def _rows(report: dict, section: str, **match) -> list[dict]:
    return [r for r in report["sections"][section]["rows"] if all(r.get(k) == v for k, v in match.items())]


def _positive(row: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(row[key], int | float) and math.isfinite(row[key]) and row[key] > 0, (key, row)


def test_tiny_run_passes_with_every_section(tiny_run):
    rc, report, _ = tiny_run
    summary = report["summary"]
    assert rc == 0, summary
    assert list(report["sections"]) == list(gpu_check.SECTIONS)
    assert all(r["status"] == "ok" for r in report["sections"].values()), summary["errors"]
    assert summary["ok"] and not summary["errors"] and not summary["failed_checks"] and not summary["nonfinite"]
    assert summary["checks_total"] >= 25 and summary["checks_passed"] == summary["checks_total"]
    assert report["env"]["torch"] == torch.__version__ and report["mode"] == {**report["mode"], "tiny": True}


def test_tiny_llm_steps_time_every_variant_of_both_shapes(tiny_run):
    _, report, _ = tiny_run
    for shape in SHAPES:
        for variant in VARIANTS:
            (row,) = _rows(report, "llm_steps", model=shape, variant=variant)
            _positive(row, "step_ms", "update_ms", "fwd_bwd_ms", "tokens_per_s", "tokens_per_s_fwd_bwd",
                      "peak_mem_gib", "conv_tokens", "computed_tokens", "loss")
        tripled = _rows(report, "llm_steps", model=shape, variant="tripled")[0]
        assert tripled["computed_tokens"] == 3 * 4 * 160  # 3B rows padded to the tiny max length
        assert _rows(report, "llm_steps", model=shape, variant="plain")[0]["conv_tokens"] == tripled["conv_tokens"]
        ratios = report["sections"]["llm_steps"]["derived"][shape]
        assert set(ratios) == {"reference/tripled", "in_context/plain", "reference/plain", "tripled/plain"}


def test_tiny_vljepa_trains_from_pixels_and_streams(tiny_run):
    _, report, _ = tiny_run
    (train,) = _rows(report, "vljepa", arm="train_step")
    _positive(train, "step_ms", "clips_per_s", "loss", "visual_tokens", "trainable_m", "peak_mem_gib")
    for precision in ("bf16_autocast", "fp32"):
        _positive(_rows(report, "vljepa", arm="stream_model", precision=precision)[0], "windows_per_s")
    _positive(_rows(report, "vljepa", arm="stream_pipeline")[0], "windows", "windows_per_s", "frames_per_s")


def test_tiny_faiss_cpu_equals_exact_device_search_at_every_depth(tiny_run):
    _, report, _ = tiny_run
    for k in (10, 4096, 5000):
        for backend in ("faiss_cpu", "torch_cpu"):
            (row,) = _rows(report, "faiss", k=k, backend=backend)
            assert row["pass"] and row["recall_vs_cpu"] == 1.0 and row["max_score_diff"] <= 1e-4, row
            _positive(row, "qps")
    assert any("FAISS GPU" in n for n in report["sections"]["faiss"]["notes"])  # CPU build: a note, not missing


def test_tiny_parity_cpu_fp32_is_exact_and_bf16_within_tolerance(tiny_run):
    _, report, _ = tiny_run
    rows = report["sections"]["parity"]["rows"]
    assert {r["model"] for r in rows} == {"llm_jepa tiny llama", "llm_jepa tiny gemma", "vljepa tiny"}
    for r in rows:
        assert r["pass"], r
        if r["arm"] == "fp32":
            assert r["rel_diff"] == 0.0  # same device, same precision: bit-identical
    assert any(r["rel_diff"] > 0 for r in rows if r["arm"] == "bf16_autocast")  # autocast really ran in bf16


def test_tiny_train_loops_and_markdown(tiny_run):
    _, report, markdown = tiny_run
    loops = {r["loop"]: r for r in report["sections"]["train_loops"]["rows"]}
    assert set(loops) == {"llm_jepa.train", "vljepa.train"}
    assert all(r["steps"] == 3 and r["saved_final"] for r in loops.values())
    for name in gpu_check.SECTIONS:
        assert f"## {name}" in markdown
    assert "**PASS**" in markdown and "| llama-3.2-1b | tripled |" in markdown


def test_in_process_loops_leave_no_accelerate_state_behind(tiny_run):
    from accelerate import Accelerator

    assert Accelerator(mixed_precision="no").mixed_precision == "no"  # raises if the bf16 state had stayed


def test_isolated_sections_record_crash_and_error_and_the_rest_runs(tmp_path):
    rc = gpu_check.main(["--device", "cpu", "--tiny", "--sections", "faiss,train_loops", "--out-dir", str(tmp_path),
                         "--name", "faults", "--work-dir", str(tmp_path / "work"), "--fault", "faiss:crash",
                         "--fault", "train_loops:raise"])
    report = json.loads((tmp_path / "faults.json").read_text())
    assert rc == 1 and not report["summary"]["ok"]
    assert report["sections"]["faiss"]["status"] == "crashed"
    assert report["sections"]["train_loops"]["status"] == "error"
    assert "injected fault" in report["sections"]["train_loops"]["error"]
    assert "ERROR: faiss:" in (tmp_path / "faults.md").read_text()


def test_isolated_section_is_killed_at_its_time_box(tmp_path):
    args = gpu_check._parser().parse_args(["--device", "cpu", "--tiny", "--fault", "parity:hang",
                                           "--work-dir", str(tmp_path)])
    t0 = time.monotonic()
    out = gpu_check.run_isolated("parity", args, box_s=4.0)
    assert out["status"] == "timeout" and time.monotonic() - t0 < 30


def test_compare_is_tie_proof_but_catches_score_and_id_differences():
    scores = np.array([[0.9, 0.5, 0.5, 0.1]], dtype=np.float32)
    ids = np.array([[3, 1, 2, 0]])
    assert compare((scores, ids), (scores.copy(), ids.copy()))["pass"]
    swapped = compare((scores, ids), (scores.copy(), np.array([[3, 2, 1, 0]])))  # a tie in another order
    assert swapped["pass"] and swapped["ids_equal"] == 0.5
    assert not compare((scores, ids), (scores + np.float32(1e-3), ids))["pass"]
    assert not compare((scores, ids), (scores, np.array([[3, 1, 2, 7]])))["pass"]


def test_summary_flags_nonfinite_numbers_failed_checks_and_missing_pieces():
    sections = {"a": {"status": "ok", "rows": [{"x": float("nan")}], "checks": {"c": True}},
                "b": {"status": "ok", "rows": [], "checks": {"d": False}, "missing": ["FAISS GPU: cpu build"]}}
    s = gpu_check.summarize(sections, [])
    assert not s["ok"] and s["nonfinite"] == [".a.rows[0].x"] and s["failed_checks"] == ["b: d"]
    assert s["missing"] == ["FAISS GPU: cpu build"]


@pytest.mark.parametrize("shape, params", [("llama-3.2-1b", 1_235_814_400), ("gemma-2-2b", 2_614_341_888)])
def test_real_shapes_have_the_published_parameter_counts(shape, params):
    from transformers import AutoModelForCausalLM

    config = lm_config(shape, tiny=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == params


def test_vljepa_real_shape_is_the_papers_8_frame_configuration():
    from gpu_check_vl import vl_config

    cfg = vl_config(tiny=False, minilm_dir=gpu_check.find_minilm(None))
    x, p, y = cfg.x_encoder, cfg.predictor, cfg.y_encoder
    assert (x["hidden_size"], x["num_hidden_layers"], x["crop_size"], x["frames_per_clip"]) == (1024, 24, 256, 8)
    assert (p["hidden_size"], p["num_hidden_layers"], p["vocab_size"]) == (2048, 8, 128256)
    assert (y["model_type"], y["hidden_size"], y["num_hidden_layers"]) == ("bert", 384, 6) and cfg.embed_dim == 1536


def _fatbin(entries: list[tuple[int, int, bytes]]) -> bytes:
    """A fat binary of (kind, arch, payload) entries with 64-byte entry headers."""
    body = b""
    for kind, arch, payload in entries:
        header = struct.pack("<HHIQ", kind, 0, 64, len(payload)) + bytes(12) + struct.pack("<I", arch)
        body += header + bytes(64 - len(header)) + payload
    return struct.pack("<IHHQ", gpu_prepare.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_strip_fatbins_keeps_only_the_sm90_cubin_in_place():
    sm90 = (gpu_prepare.CUBIN, 90, b"\x90" * 40)
    blob = _fatbin([(gpu_prepare.PTX, 90, b"p" * 24), (gpu_prepare.CUBIN, 80, b"\x80" * 32), sm90])
    broken = bytearray(_fatbin([sm90]))
    struct.pack_into("<Q", broken, 8, len(broken))  # payload size past the entries: must stay untouched
    data = bytearray(b"head" + blob + b"mid" + bytes(broken) + b"tail")
    stats = gpu_prepare.strip_fatbins(data)
    assert len(data) == 4 + len(blob) + 3 + len(broken) + 4 and stats["stripped"] == 1
    start = 4 + 16
    assert struct.unpack_from("<Q", data, 4 + 8)[0] == 64 + 40
    assert data[start:start + 104] == _fatbin([sm90])[16:]
    assert not any(data[start + 104:4 + len(blob)])  # the other code is zeros now
    assert data[4 + len(blob):] == b"mid" + bytes(broken) + b"tail"


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("readelf") is None, reason="needs gcc and readelf")
def test_cublas_shim_forwards_every_argument_to_the_cublas13_library(tmp_path):
    """19 arguments (13 of them on the stack) reach the target unchanged; a missing function returns 1."""
    args = ", ".join(f"long a{i}" for i in range(19))
    fold = "".join(f"h = h * 31u + (unsigned long)a{i}; " for i in range(19))
    (tmp_path / "fake.c").write_text(f"int cublasGemmEx({args}) {{ unsigned long h = 7; {fold}return (int)(h & 0x7fffffff); }}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "libfake13.so"), str(tmp_path / "fake.c")], check=True)
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    gpu_prepare.build_shims(lib_dir, ["cublasCreate_v2", "cublasGemmEx"], tmp_path)
    versions = subprocess.run(["readelf", "-V", str(lib_dir / "libcublas.so.12")], capture_output=True, text=True).stdout
    assert "Name: libcublas.so.12" in versions
    os.environ["JEPA_CUBLAS13"] = str(tmp_path / "libfake13.so")
    try:
        shim = ctypes.CDLL(str(lib_dir / "libcublas.so.12"))
    finally:
        del os.environ["JEPA_CUBLAS13"]
    values = [3 + 1000 * i for i in range(19)]
    h = 7
    for v in values:
        h = (h * 31 + v) % 2**64
    shim.cublasGemmEx.restype = ctypes.c_int
    assert shim.cublasGemmEx(*[ctypes.c_long(v) for v in values]) == h & 0x7FFFFFFF
    assert shim.cublasCreate_v2(None) == 1  # not in the fake library: CUBLAS_STATUS_NOT_INITIALIZED
