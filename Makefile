# Two entry points on a machine that has only python3:
#   make demo   creates .venv, installs the scanner, scans the bundled demo world
#   make test   creates .venv, installs the scanner with test tools, runs the whole suite:
#               the default suite (unit, property and lab tests), then the suites that start
#               real components (Postfix, unbound, Chromium, Dovecot, a network namespace),
#               then ruff and mypy
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scanner demo

test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -n 0 -m "realmta or dnssec or browser or imap or netns"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
