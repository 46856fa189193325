# agent-pdp — `make run` serves on the embedded default, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup tools run test lint typecheck policy pytest bench fmt clean fuzz

setup: $(STAMP) tools

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

tools:
	@scripts/install-tools.sh

run: setup
	$(BIN)/pdpctl serve

# Lint: ruff, and the import layers contract (pyproject [tool.importlinter], docs/architecture.md).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

# The policy gate (docs/audit.md#pdpctl-ci): fmt --check, check --strict, Regal, Rego tests
# with coverage >= 90, bundle build, replay of the recorded corpus on the new bundle, and the
# invariants fuzzed on it (pdpctl policy fuzz, 300 cases).
policy: setup
	$(BIN)/pdpctl ci

# The suite with line + branch coverage; under the floor ([tool.coverage.report] fail_under
# in pyproject.toml) it fails.
pytest: setup
	$(BIN)/pytest --cov --cov-branch --cov-report=term-missing:skip-covered

test: lint typecheck policy pytest

# The long run of the service fuzz test (tests/test_service_fuzz.py): random, 20x the cases
# of `make test` per property unless FUZZ_EXAMPLES says how many.
FUZZ_EXAMPLES ?= 0
fuzz: setup
	PDP_FUZZ_PROFILE=long PDP_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q -s -p no:cacheprovider tests/test_service_fuzz.py

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/pdpctl policy fmt

bench: setup
	@command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .tools .pdp-state bundles/*.tar.gz .mypy_cache .ruff_cache .pytest_cache
