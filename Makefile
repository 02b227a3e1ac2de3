# The two commands that matter: `make demo` and `make test`. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov

.PHONY: help venv lint up down status demo test test-fast bench soak clean

help:
	@echo "make demo   - start the local stack and stream a sample from simulated Omi devices"
	@echo "make test   - lint, format check and the whole test suite (emulators, checkov, Terraform checks)"
	@echo "make test-fast - lint and every test not marked slow"
	@echo "make up / make down / make status - the local stack"
	@echo "make bench  - benchmarks; writes bench/results/ and docs/performance.md, docs/cost.md"
	@echo "make soak   - many simulated devices under injected faults; fails on any lost or doubled chunk"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt examples/vad/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

up: venv
	$(PY) -m omi_receiver.devtools.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m omi_receiver.devtools.stack down; else echo "nothing to stop"; fi

status: venv
	$(PY) -m omi_receiver.devtools.stack status

demo: venv
	$(PY) -m omi_receiver.devtools.demo

# Lint and format first: a failure there is the quickest to read.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint $(CHECKOV_VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (the soak, the demo, checkov,
# timeouts waited out on purpose); about two minutes instead of six.
test-fast: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

soak: venv
	$(PY) -m bench.soak $(SOAK_ARGS)

clean: down
	rm -rf $(VENV) $(CHECKOV_VENV) .local .pytest_cache .hypothesis *.egg-info
