# Two commands do everything on a fresh machine:
#   make run   - set up .venv, fetch offline assets, run the notebook suite (parameter set `default`) into runs/default/
#   make test  - same setup, then the whole test suite (unit tests + notebook smoke runs)
# Not part of make test: make mutation - the mutation score of the six core modules (mutmut, one worker, 40
#   minutes): per module killed / survived / timeout in benchmarks/results/mutation.csv (docs/reliability.md)
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PARAMS ?= default
EXPLORE_PARAMS ?= default
EXPLORE_PORT   ?= 8866
STAMP  := $(VENV)/.tmlib-installed

.PHONY: setup assets browser run explore test test-fast bench bench-quick mutation clean-runs lock

# constraints.txt: the versions the tests passed with; setup installs through it, so a fresh clone gets them
$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 -c constraints.txt
	$(PY) -m pip install -q -e '.[dev,lab]' -c constraints.txt
	touch $(STAMP)

# Refresh constraints.txt: the newest versions pyproject.toml allows, installed into a scratch venv (then run make test)
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q torch==2.13.0
	.venv-lock/bin/python -m pip install -q -e '.[dev,lab]'
	{ echo "# The versions make test passed with (pip constraints: setup installs through them). Refresh: make lock"; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^tmlib' \
	  | sed -E 's/^([A-Za-z0-9_.-]+)==([^+]+)\+.*/\1==\2/' | sort -f; } > constraints.txt
	rm -rf .venv-lock

setup: $(STAMP)

assets: $(STAMP)
	$(PY) -m tmlib assets fetch

run: assets
	$(PY) -m tmlib suite --params $(PARAMS) --out runs/$(PARAMS)

# Debian's Chromium for the browser tests (HTML report; notebook 02's explorer in JupyterLab and in Voila, driven
# by Playwright on this Chromium: never `playwright install`). Best effort: without it those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	  || echo "note: chromium not installed; the browser tests will be skipped"

# The token-importance explorer as a standalone web page (Voila serving notebooks/explorer_app.ipynb); its scorer is
# notebook 02's for parameter set EXPLORE_PARAMS, cached in runs/$(EXPLORE_PARAMS)/02_token_importance_explorer/
explore: assets
	@echo "explorer: http://localhost:$(EXPLORE_PORT)/  (the first start trains the scorer; Ctrl-C stops)"
	TMLIB_EXPLORER_PARAMS=$(EXPLORE_PARAMS) $(PY) -m voila notebooks/explorer_app.ipynb --no-browser \
	  --port=$(EXPLORE_PORT) --Voila.ip=127.0.0.1

test: assets browser
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

test-fast: assets
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -m "not slow"

bench: assets
	$(PY) benchmarks/run_all.py

bench-quick: assets
	$(PY) benchmarks/run_all.py --quick

# mutmut ([tool.mutmut] in pyproject.toml) mutates the six core modules in mutants/ (its scratch copy, rebuilt on
# every run) and runs, per mutant, the selected fast tests that call the mutated function; one thread, one worker
mutation: assets
	rm -rf mutants
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 1
	$(PY) benchmarks/mutation_score.py

clean-runs:
	rm -rf runs/
