# The two commands a new user needs: `make serve` and `make test`.
# Both create ./.venv and install the project into it on first use (pyproject.toml holds the dependencies):
# `serve` only what running needs, `test` the test tools on top (playwright, hypothesis, ruff, ...).
# `make serve` with no UPSTREAM serves the built-in demo upstream (no key, no network); UPSTREAM=URL a real one.

VENV ?= .venv
PY := $(VENV)/bin/python
UPSTREAM ?= $(PROXY_UPSTREAM_URL)
ARGS ?=

.PHONY: install serve test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[fast]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[test,fast]"
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/proxy serve $(if $(UPSTREAM),--upstream $(UPSTREAM),--demo) $(ARGS)

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest
