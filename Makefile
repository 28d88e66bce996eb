# Two commands do everything on a fresh machine:
#   make run   - set up .venv, fetch offline assets, run the notebook suite (parameter set `default`) into runs/default/
#   make test  - same setup, then the whole test suite (unit tests + notebook smoke runs)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= default
STAMP  := $(VENV)/.tmlib-installed

.PHONY: setup assets browser run test test-fast bench bench-quick clean-runs

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,lab]'
	touch $(STAMP)

setup: $(STAMP)

assets: $(STAMP)
	$(PY) -m tmlib assets fetch

run: assets
	$(PY) -m tmlib suite --params $(PARAMS) --out runs/$(PARAMS)

# Debian's Chromium for the headless-browser check of the HTML report (best effort: without it that test skips)
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	  || echo "note: chromium not installed; the browser test will be skipped"

test: assets browser
	$(PY) -m pytest -q

test-fast: assets
	$(PY) -m pytest -q -m "not slow"

bench: assets
	$(PY) benchmarks/run_all.py

bench-quick: assets
	$(PY) benchmarks/run_all.py --quick

clean-runs:
	rm -rf runs/
