# `make run` and `make test` bootstrap everything they need on a fresh machine (as root).
VENV      := .venv
BIN       := $(VENV)/bin
PYTHON    ?= python3
CLAUDE    := $(CURDIR)/node_modules/.bin/claude
PAM_FILE  := /etc/pam.d/claude-batch-server
PYTEST_ARGS ?=

.PHONY: run test lint format bootstrap bootstrap-test agent pam clean

run: bootstrap pam
	@if command -v "$${CLAUDE_COMMAND:-claude}" >/dev/null 2>&1; then \
		exec $(BIN)/claude-batch-server serve; \
	else \
		$(MAKE) --no-print-directory agent && \
		CLAUDE_COMMAND=$(CLAUDE) exec $(BIN)/claude-batch-server serve; \
	fi

test: bootstrap-test agent pam lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: bootstrap-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: bootstrap-test
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bootstrap: $(VENV)/.installed

bootstrap-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	scripts/bootstrap-system.sh run
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	scripts/bootstrap-system.sh test
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The Claude Code CLI, installed into this project (node_modules), never globally.
agent: $(CLAUDE)

$(CLAUDE): package.json package-lock.json
	scripts/bootstrap-system.sh run
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Our own PAM service: the password and account checks, without pam_faildelay.
pam:
	@if [ "$$(id -u)" -eq 0 ] && ! cmp -s src/claude_batch_server/pam/claude-batch-server $(PAM_FILE); then \
		install -m 0644 src/claude_batch_server/pam/claude-batch-server $(PAM_FILE); \
	fi

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
