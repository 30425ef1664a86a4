# `make sweep` and `make test` set everything up on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Cells run in parallel by `make sweep`, one torch thread each.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: install sweep report test test-fast test-random bench lint clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

sweep: $(INSTALLED)  ## the default study on the embedded task and tiny model, then its report
	$(BIN)/cttt sweep default --jobs $(JOBS)
	$(BIN)/cttt report default

test: $(INSTALLED)  ## the full suite (what CI runs)
	$(BIN)/pytest -q

test-fast: $(INSTALLED)  ## the suite without tests marked slow
	$(BIN)/pytest -q -m "not slow"

test-random: $(INSTALLED)  ## the whole suite in a random order (no test may depend on another's state)
	$(BIN)/pytest -q -p random_order --random-order

bench: $(INSTALLED)  ## per-phase timings; SECTIONS="base cell overhead jobs" (default: all)
	$(BIN)/python -m catalyst_ttt.bench $(SECTIONS)

lint: $(INSTALLED)  ## ruff, and the import layers of pyproject.toml (README, "Layers")
	$(BIN)/ruff check catalyst_ttt tests
	$(BIN)/lint-imports

clean:
	rm -rf runs cache
