# Two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Each bootstraps .venv with pinned versions the first time.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test demo lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel of 2.13.0 (a wider range would pull CUDA packages).
	$(VENV)/bin/pip install --quiet -c constraints.txt torch
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest tests -q

demo: $(STAMP)
	$(VENV)/bin/vppo demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) .pytest_cache
