# mmz: `make demo` runs the main job end to end on a simulated survey, `make test` runs the tests.
# Both create .venv on first use.  Where no CUDA GPU is present the CPU build of PyTorch is
# installed first (torch==2.13.0, whose wheel lies on these machines' disk), so that pip never
# resolves a multi-GB CUDA build; on a GPU machine pip picks torch>=2.4 from the index.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MMZ    := $(VENV)/bin/mmz
STAMP  := $(VENV)/.mmz-installed
DEMO   ?= demo

.PHONY: demo test lint bench man install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if ! nvidia-smi -L >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[sim,rail,dev]'
	touch $(STAMP)

test: lint
	$(PY) -m pytest -q

# ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade, ...) and the formatter in check mode, then mypy on the
# library; settings in pyproject.toml.  `make test` runs it first, so CI does.
lint: $(STAMP)
	$(VENV)/bin/ruff check mmzcli bench tests
	$(VENV)/bin/ruff format --check mmzcli bench tests
	$(VENV)/bin/mypy mmzcli

demo: $(STAMP)
	$(MMZ) demo --dir $(DEMO)

man: $(STAMP)
	$(PY) -m mmzcli.manpages man

bench: $(STAMP)
	$(PY) bench/cutout.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache .mypy_cache
