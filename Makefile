# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST := $(BIN)/pytest -q -rs
# pytest exits 5 when it collects nothing: fine for a filter (ARGS="-k ...") or a folder
# with no tests yet, but under CI an empty run means the suite itself is broken.
NO_TESTS_OK = { rc=$$?; if [ $$rc -eq 5 ] && [ "$${CI:-}" != true ]; then \
	echo "no tests collected"; else exit $$rc; fi; }

.PHONY: run test unit functional e2e lint bench clean conformance conformance-qemu

$(BIN)/cumulo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

## make run: create the venv, install, install the host packages real guests need (as
## root; otherwise it prints the command), and serve the whole cloud (`cumulo up`).
run: $(BIN)/cumulo
	$(BIN)/cumulo host-packages --install
	$(BIN)/cumulo up $(ARGS)

## make test: every test (unit, functional, e2e; e2e skips what this machine lacks),
## one worker per core; each worker runs whole files against its own cloud, in collection
## order (the long e2e files first, the many short unit files last to fill the gaps; xdist's
## default, most tests first, left a single worker on a long e2e file at the end).
test: $(BIN)/cumulo
	$(PYTEST) -n auto --dist loadfile --no-loadscope-reorder --durations=10 $(ARGS) || $(NO_TESTS_OK)

unit: $(BIN)/cumulo
	$(PYTEST) tests/unit $(ARGS) || $(NO_TESTS_OK)

## make functional CUMULO_TEST_DATABASE=postgresql (or mariadb): same tests, server database.
functional: $(BIN)/cumulo
	$(PYTEST) tests/functional $(ARGS) || $(NO_TESTS_OK)

e2e: $(BIN)/cumulo
	$(PYTEST) tests/e2e $(ARGS) || $(NO_TESTS_OK)

lint: $(BIN)/cumulo
	$(BIN)/ruff check cumulo tests bench
	$(BIN)/ruff format --check cumulo tests bench

## make conformance: OpenStack's Tempest API tests (identity, compute, image, network, volume)
## against a fresh cloud; Tempest in its own venv (.tempest-venv); writes docs/conformance.md.
## DRIVER=qemu: the compute tests on real guests; DATABASE=postgresql: PostgreSQL + RabbitMQ.
DRIVER ?= fake
DATABASE ?= sqlite
CONFORMANCE_REPORT = docs/conformance$(if $(filter-out fake,$(DRIVER)),-$(DRIVER))$(if $(filter-out sqlite,$(DATABASE)),-$(DATABASE)).md
conformance: $(BIN)/cumulo
	nice -n 10 $(BIN)/python -m cumulo.testing.tempest --driver $(DRIVER) --database $(DATABASE) \
		--report $(CONFORMANCE_REPORT) $(ARGS)

## make conformance-qemu: the compute tests on real QEMU guests, which Tempest logs in to over
## SSH through floating IPs ([validation]); writes docs/conformance-qemu.md.
conformance-qemu:
	$(MAKE) conformance DRIVER=qemu

bench: $(BIN)/cumulo
	$(BIN)/python bench/identity_tokens.py

clean:
	rm -rf $(VENV) .tempest-venv .pytest_cache build *.egg-info
