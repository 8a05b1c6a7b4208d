# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test unit functional e2e lint bench clean

$(BIN)/cumulo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

## make run: create the venv, install, and serve the whole cloud (`cumulo up`).
run: $(BIN)/cumulo
	$(BIN)/cumulo up $(ARGS)

## make test: every test (unit, functional, e2e; e2e skips what this machine lacks).
test: $(BIN)/cumulo
	$(BIN)/pytest -q -rs $(ARGS)

unit: $(BIN)/cumulo
	$(BIN)/pytest -q tests/unit $(ARGS)

functional: $(BIN)/cumulo
	$(BIN)/pytest -q tests/functional $(ARGS)

e2e: $(BIN)/cumulo
	$(BIN)/pytest -q -rs tests/e2e $(ARGS)

lint: $(BIN)/cumulo
	$(BIN)/ruff check cumulo tests bench
	$(BIN)/ruff format --check cumulo tests bench

bench: $(BIN)/cumulo
	$(BIN)/python bench/identity_tokens.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
