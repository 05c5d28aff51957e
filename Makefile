# The two commands a new user needs: `make serve UPSTREAM=...` and `make test`.
# Both create ./.venv and install the project into it on first use (pyproject.toml holds the dependencies).

VENV ?= .venv
PY := $(VENV)/bin/python
UPSTREAM ?= $(PROXY_UPSTREAM_URL)
ARGS ?=

.PHONY: install serve test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,fast]"
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	$(VENV)/bin/proxy serve $(if $(UPSTREAM),--upstream $(UPSTREAM)) $(ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest
