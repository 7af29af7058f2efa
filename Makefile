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

.PHONY: demo test bench man install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if ! nvidia-smi -L >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[sim,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(MMZ) demo --dir $(DEMO)

man: $(STAMP)
	$(PY) -m mmzcli.manpages man

bench: $(STAMP)
	$(PY) bench/cutout.py

clean:
	rm -rf $(DEMO) .pytest_cache
