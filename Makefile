# Conveyor: `make run` starts the whole system locally, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
ARGS   ?=

.PHONY: run test lint unit system-deps bench bench-quick chart-check image clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $@

## run: the whole system on an embedded moto server (API on 127.0.0.1:8000, one worker)
run: $(STAMP)
	$(BIN)/conveyor run $(ARGS)

## system-deps: Debian packages the tests drive for real (Chromium, promtool)
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## lint: ruff, mypy and the import-layering contracts
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: everything CI runs
test: $(STAMP) system-deps lint
	$(BIN)/pytest $(ARGS)

## bench: the side-by-side benchmarks (writes docs/BENCHMARKS.md)
bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks $(ARGS)

bench-quick: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks --quick $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
