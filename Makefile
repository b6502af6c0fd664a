# uniedit-synth — `make demo` runs the offline demo, `make test` runs the whole test suite.
# Both create .venv and install everything they need on a fresh machine with only Python 3.10+.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/demo
# setup-train installs torch once, then the train and diffusers extras (the diffusers editor's tests need it).
# Prefer a local CPU build of torch when the machine has one (much smaller than the CUDA wheel);
# otherwise pip picks torch as usual. Override with `make test TORCH=torch==2.5.1`.
TORCH  ?= $(or $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl)),torch)
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: help setup setup-train browser demo test test-fast lint bench docs clean

help:
	@echo "make demo   - install into $(VENV) and run uniedit synth on the offline world ($(OUT))"
	@echo "make test   - install (with the train and diffusers extras and chromium) and run the whole test suite"
	@echo "              (TEST_JOBS=2 processes, then the timing-sensitive 'serial' tests alone)"
	@echo "make test-fast - unit tests only (no Ray, no subprocess e2e)"
	@echo "make lint   - ruff"
	@echo "make docs   - build the documentation site into site/ (mkdocs build --strict)"
	@echo "make bench  - run the benchmarks in benchmarks/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e ".[dev,docs]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import uniedit_synth, ray, pyarrow, datasets, openai, google.genai, mkdocs, material"
	touch $@

$(VENV)/.installed-train: $(VENV)/.installed
	$(PIP) install "$(TORCH)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e ".[train,diffusers]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import torch, transformers, diffusers"
	touch $@

setup: $(VENV)/.installed

setup-train: $(VENV)/.installed-train

# Debian's chromium for the report's browser test (playwright's own browser download cannot work here).
# No browser, no test run: `make test` must not pass without the checks the README claims.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; } \
	  && command -v chromium >/dev/null 2>&1 \
	  || { echo "error: chromium could not be installed; make test needs it for the report's browser test" >&2; exit 1; }

demo: setup
	$(BIN)/uniedit synth --pipeline default --out $(OUT)
	$(BIN)/uniedit stats $(OUT)

# Two parts: every test not marked `serial`, spread over TEST_JOBS processes (pytest-xdist, whole files per
# process: most e2e time is Ray start-up and fake-server latency, not CPU), then the `serial` tests alone
# (they bound time, or their outcome depends on timing under load). Both parts always run; the first
# failure's code is make's. pytest exits 5 when it collected nothing: that is a failure here too.
# UNIEDIT_REQUIRE_BROWSER: the browser test fails instead of skipping when chromium is missing.
TEST_JOBS ?= 2
test: setup-train browser
	@UNIEDIT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not serial"; a=$$?; \
	  UNIEDIT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q -m serial; b=$$?; \
	  for rc in $$a $$b; do if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; done; \
	  if [ $$a -ne 0 ]; then exit $$a; fi; exit $$b

test-fast: setup
	$(BIN)/python -m pytest -q tests/unit -m "not ray and not train and not browser"

lint: setup
	$(BIN)/ruff check uniedit_synth tests benchmarks examples

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs site .pytest_cache
