# Conveyor: `make run` starts the whole system locally, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The dev extra (every part: server, operator, handlers, local, and the test tools) and
# bench: the tests smoke-run the benchmark harness.
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test chaos lint system-deps bench bench-quick chart-check image clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

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

## lint: ruff (lint and format), mypy and the import-layering contracts
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: everything CI runs; two pytest workers (one per core), each test file on one worker
## so a file's module fixtures (moto, servers) start once. WORKERS=0 runs them in-process.
WORKERS ?= 2
test: $(STAMP) system-deps lint
	$(BIN)/pytest -n $(WORKERS) --dist loadfile $(ARGS)

## chaos: the heavy fault runs (500 tasks under 10% AWS faults, kill -9 x12, a 10 s AWS
## outage, 100 fuzz examples per route, 50 clients x 2,000 tasks); figures in test-artifacts/reliability/
chaos: $(STAMP)
	CONVEYOR_FUZZ_EXAMPLES=100 $(BIN)/pytest -m chaos tests/faults $(ARGS)
	CONVEYOR_FUZZ_EXAMPLES=100 $(BIN)/pytest tests/faults/test_fuzz.py $(ARGS)

## bench: the side-by-side benchmarks (writes docs/BENCHMARKS.md)
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick $(ARGS)

## chart-check: the Helm chart, Dockerfile, skaffold and monitoring checks (all offline)
chart-check: $(STAMP) system-deps
	$(BIN)/pytest tests/chart tests/monitoring $(ARGS)

## image: build the one image (api, worker, operator, init) as conveyor:<chart appVersion>, the chart's default (needs a Docker engine)
IMAGE ?= conveyor:$(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' charts/conveyor/Chart.yaml)
image:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-artifacts
