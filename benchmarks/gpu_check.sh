#!/usr/bin/env bash
# The GPU check on the lent GPU machine (bare image: CUDA torch, transformers, accelerate; no FAISS, no
# install of this package, no network). From the repository root, with `.gpu/` carried (made here by
# `python benchmarks/gpu_prepare.py`):
#   bash benchmarks/gpu_check.sh [extra benchmarks/gpu_check.py arguments]
# Unpacks the sm_90 FAISS GPU into /tmp, puts the checkout on PYTHONPATH (nothing is installed), prints one
# MISSING: line per missing piece, then runs `benchmarks/gpu_check.py --device cuda` (about 2-3 minutes;
# it writes benchmarks/results/gpu/<device>.json/.md and, when $OUT is set, copies there). docs/gpu_check.md.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SITE="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$SITE"
if [ -f .gpu/faiss_gpu_sm90.tar.xz ]; then
  "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .gpu/faiss_gpu_sm90.tar.xz "$SITE" \
    || echo "MISSING: FAISS GPU: could not unpack .gpu/faiss_gpu_sm90.tar.xz"
else
  echo "MISSING: FAISS GPU: no .gpu/faiss_gpu_sm90.tar.xz (run python benchmarks/gpu_prepare.py before the call and carry .gpu)"
fi
if ls .gpu/whl/*.whl >/dev/null 2>&1; then  # optional extra wheels (README of the device tool)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/whl/*.whl
fi
[ -f .gpu/minilm/config.json ] || echo "MISSING: .gpu/minilm (all-MiniLM-L6-v2 config + tokenizer): run python benchmarks/gpu_prepare.py"
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  || echo "MISSING: a CUDA build of torch that sees the GPU ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1))"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
exec "$PY" benchmarks/gpu_check.py --device cuda "$@"
