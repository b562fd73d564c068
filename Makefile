# The README's two commands: `make serve` and `make test`. Both set up everything they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./data

.PHONY: serve test venv dev lint typecheck clean bench system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

venv: $(VENV)/.installed

dev: $(VENV)/.dev-installed

serve: venv
	$(BIN)/leveret serve --data-dir $(DATA_DIR)

lint: dev
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/ruff format --check src tests tools benchmarks

typecheck: dev
	$(BIN)/mypy

test: dev system-deps
	$(BIN)/python -m pytest

# What the tests need from Debian beyond the venv: Chromium for the web-UI test (driven by Playwright,
# which cannot download its own browser here) and rabbitmq-server for its rabbitmqadmin tool.
# `make test` runs it; as root it installs what is missing, otherwise it says what to install and the
# tests that need them are skipped with a message (in CI, CI=true, they fail instead).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v rabbitmqadmin >/dev/null || missing="$$missing rabbitmq-server"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else \
			echo "not root: install$$missing yourself for the web-UI and rabbitmqadmin tests (skipped without them)"; \
		fi; \
	fi

bench: dev
	$(BIN)/leveret bench --help

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
