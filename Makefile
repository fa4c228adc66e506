# Two commands a newcomer needs: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo serve test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The main job: with SOURCE=host:port it links to that cluster; without, it runs the self-contained demo.
demo: $(STAMP)
	$(BIN)/linkd demo $(if $(SOURCE),--bootstrap-server $(SOURCE) --topic $(TOPIC))

serve: $(STAMP)
	$(BIN)/linkd serve

# Whole modules per worker (module-scoped brokers start once), slowest modules first: tests/conftest.py orders
# them by tests/module_seconds.json, and --no-loadscope-reorder keeps xdist from re-sorting by test count.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check protocol linkd tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/run.py --quick
