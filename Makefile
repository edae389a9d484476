# Two entry points for a fresh machine: `make audit` and `make test`.
# Each bootstraps .venv from requirements.txt (one pip invocation) when it is missing
# or older than the pins.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: audit test test-process lint bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The stability audit: every subject x dtype x device x execution x check; writes
# reports/latest/.
audit: $(STAMP)
	$(BIN)/python -m pytest --pyargs audit.suite -p no:cacheprovider -n 2 --dist worksteal --hypothesis-profile=ci \
		--executions eager,compiled,autocast_bfloat16,autocast_float16 $(ARGS)

# Lint plus the suite (reference self-tests, harness tests, audit), deterministic (the
# `test` Hypothesis profile: ci's derandomized searches with 6 examples instead of 12); the
# tests that start whole pytest / audit processes (signals, crash isolation, retention,
# runs from outside the repo) are `make test-process`, which CI runs next.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist worksteal --hypothesis-profile=test -m "not process" $(ARGS)

test-process: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal --hypothesis-profile=ci -m process $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m reference bench
	$(BIN)/python -m audit bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
