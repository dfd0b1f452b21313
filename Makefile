# InferGate: install, run and test everything locally, without Docker.
#   make run       start the whole stack in the foreground (Ctrl-C or `make stop` to stop it)
#   make test      install, lint, typecheck, then every test suite (they start their own stacks)
# Ports: NGINX_PORT, GATEWAY_PORT, AUTH_PORT, USAGE_PORT, AI_PORT, REDIS_PORT, MONGO_PORT, LLM_PORT,
# PROMETHEUS_PORT (make run starts Prometheus too; RUN_ARGS=--no-observability skips it),
# NGINX_ADMIN_PORT (the operator console, on 127.0.0.1 only, when ADMIN_TOKEN is set).
# Any other variable reaches the services: REGISTRATION_RATE_LIMIT=1000 make run.
# OLLAMA_URL=http://host:11434 make run uses that Ollama instead of the embedded model.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Where scripts/bootstrap-uv.sh may put uv: on PATH for every recipe.
export PATH := $(HOME)/.local/bin:$(HOME)/.cache/infergate/uv-venv/bin:$(PATH)

UV_RUN := uv run --frozen
DEVSTACK := $(UV_RUN) python -m infergate_devstack

# Only the directories that hold code yet (members appear as they are written).
has_code = $(foreach dir,$(1),$(if $(wildcard $(dir)/*.py $(dir)/*/*.py),$(dir)))
SOURCE_DIRS := $(call has_code,common/src api-gateway/src auth-service/src usage-service/src \
	ai-service/src devstack/src local-llm/src bench)
TEST_DIRS := $(call has_code,common/tests api-gateway/tests auth-service/tests \
	usage-service/tests ai-service/tests devstack/tests local-llm/tests tests)

.PHONY: help uv install run stop lint typecheck test bench

help:
	@echo "make install    install uv, the Python packages, redis-server, nginx and SecantusDB"
	@echo "make run        start the local stack (nginx on http://127.0.0.1:8080, Prometheus on :9090)"
	@echo "make stop       stop a stack started by 'make run'"
	@echo "make lint       ruff check and ruff format --check"
	@echo "make typecheck  mypy (strict)"
	@echo "make test       install, lint, typecheck and run every test suite"
	@echo "make bench      run the load benchmarks"

uv:
	@scripts/bootstrap-uv.sh

install: uv
	uv sync --frozen --all-packages
	$(DEVSTACK) install

run: install
	$(DEVSTACK) run $(RUN_ARGS)

stop: uv
	$(DEVSTACK) stop

lint: uv
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .

# Test directories each have a conftest.py, so mypy checks them one at a time.
typecheck: uv
	$(UV_RUN) mypy $(SOURCE_DIRS) conftest.py
	@for dir in $(TEST_DIRS); do echo "mypy $$dir"; $(UV_RUN) mypy $$dir; done

# The embedded model's runtime is built before pytest (minutes, once per machine) so no test
# waits on it; Chromium (apt) is installed for the web console's browser tests. The test files
# run on TEST_WORKERS pytest-xdist workers (each file whole on one worker, each worker with its
# own stacks on free ports): most of the suite waits on servers, not on the CPU.
TEST_WORKERS ?= 2
test: install lint typecheck
	$(DEVSTACK) install --llm --browser
	$(UV_RUN) pytest $(TEST_DIRS) -n $(TEST_WORKERS) --dist loadfile --durations=25

# About 13 minutes (InferGate, then LiteLLM's proxy as the peer). Options through BENCH_ARGS,
# e.g. BENCH_ARGS="--users 20000 --label users-20000", or BENCH_ARGS="soak --minutes 5"
# (see `uv run python -m bench --help`).
bench: install
	@command -v wrk >/dev/null || { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq wrk; }
	$(UV_RUN) python -m bench $(BENCH_ARGS)
