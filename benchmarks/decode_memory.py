"""Peak memory of video decoding and of `vljepa eval` on long clips: sample while decoding vs buffering.

Data flow: a synthetic long 720p clip (moving gradients, H.264 via PyAV) -> in a fresh
subprocess per arm, `vljepa.video.decode_video(clip, 8)` (and `vljepa eval retrieval` over a
manifest of such clips) from the code tree given by --tree (this checkout, or an older commit
extracted with `git archive <commit> | tar -x -C DIR`) -> peak resident memory while the work
runs (sampled from /proc/self/statm every 2 ms) minus the resident memory just before it ->
before/after medians and ratios. Arms are interleaved and repeated.

    python benchmarks/decode_memory.py --before /tmp/base --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent.parent

PROBE = r'''
import json, os, sys, threading, time
import torch
torch.set_num_threads(1)
mode, clip, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page / 2**20
peak, done = [0.0], threading.Event()
def sample():  # resident memory every 2 ms while the work runs (ru_maxrss only sees the import peak)
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
if mode == "decode":
    from vljepa.video import decode_video
    work = lambda: decode_video(clip, 8)
else:
    from vljepa.eval_cli import main
    import vljepa.modeling, vljepa.tasks, vljepa.processing, eval.retrieval  # imported before the baseline
    work = lambda: main(["retrieval", "--set", f"model={extra[0]}", "--set", f"data.source={clip}",
                         "--set", f"out={extra[1]}", "--set", "batch_size=2", "--set", "ks=[1]"])
base = rss()
t = threading.Thread(target=sample, daemon=True)
t.start()
work()
done.set()
t.join()
print(json.dumps({"base_mb": base, "peak_mb": peak[0], "delta_mb": peak[0] - base}))
'''


def make_clip(path: Path, n_frames: int = 132, height: int = 720, width: int = 1280, fps: int = 24) -> Path:
    """A long 720p clip of moving colour gradients (compresses like real video, decodes to full frames)."""
    import av

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(n_frames):
            rgb = np.stack([(xx + 7 * t) % 256, (yy + 3 * t) % 256, ((xx + yy) / 8 + 5 * t) % 256], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def probe(tree: Path, mode: str, clip: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(clip), *extra], env=env, capture_output=True,
                         text=True, cwd=tree)
    if out.returncode:
        raise RuntimeError(f"{mode} probe on {tree} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="code tree of the baseline (git archive of an older commit)")
    p.add_argument("--work", default="runs/decode_memory")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--clips", type=int, default=10, help="long clips in the eval manifest")
    p.add_argument("--out", default="benchmarks/results/decode_memory.json")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    clip = make_clip(work / "long720p.mp4")
    from vljepa.builders import build_tiny_vljepa

    torch.manual_seed(0)
    build_tiny_vljepa(num_frames=8, crop_size=32).save_pretrained(work / "model")
    manifest = work / "clips.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(clip), "target": f"clip {i}", "start": 0.01 * i}) + "\n"
                                for i in range(args.clips)))
    rows: dict[str, list[float]] = {}
    for r in range(args.repeats):
        for name, tree in (("before", Path(args.before).resolve()), ("after", HERE)):  # interleaved arms
            rows.setdefault(f"decode/{name}", []).append(probe(tree, "decode", clip)["delta_mb"])
            rows.setdefault(f"eval/{name}", []).append(
                probe(tree, "eval", manifest, str(work / "model"), str(work / f"eval_{name}_{r}"))["delta_mb"])
    med = {k: statistics.median(v) for k, v in rows.items()}
    report = {"clip": "132 frames 1280x720 H.264", "eval_clips": args.clips, "repeats": args.repeats,
              "peak_rss_delta_mb": rows, "median_mb": med,
              "ratio_decode": med["decode/before"] / max(med["decode/after"], 1e-9),
              "ratio_eval": med["eval/before"] / max(med["eval/after"], 1e-9)}
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
