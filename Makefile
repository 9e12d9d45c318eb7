# Entry points for people and CI. Everything runs inside .venv, created on first use.
#   make demo   -> the offline end-to-end demo (main job)
#   make test   -> the test suite (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-llm demo-vl test lint bench gpu-prepare gpu-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	# CPU torch from the local wheel first, so the package's torch requirement is already met.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,video]'
	touch $(STAMP)

demo: demo-vl demo-llm
	@echo; echo "=== make demo: summary ==="; cat demo_out/vljepa/summary.txt demo_out/llm_jepa/summary.txt

demo-llm: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m llm_jepa.demo --out demo_out/llm_jepa

demo-vl: venv
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m vljepa.demo --out demo_out/vljepa

test: venv
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q -x --durations=15

lint: venv
	$(BIN)/ruff check .

bench: venv
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/llm_jepa_step.py

# GPU check (docs/gpu_check.md): gpu-prepare writes .gpu/ for the lent GPU machine; gpu-check runs on a CUDA box
gpu-prepare: venv
	$(BIN)/python benchmarks/gpu_prepare.py

gpu-check: venv
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python benchmarks/gpu_check.py --device cuda

clean:
	rm -rf $(VENV) demo_out runs .pytest_cache
