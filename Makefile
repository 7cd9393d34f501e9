# `make run` and `make test` bootstrap everything they need on a fresh machine (as root).
VENV      := .venv
BIN       := $(VENV)/bin
PYTHON    ?= python3
# The Claude Code CLI goes where every job's user can run it, not into this checkout
# (scripts/install-agent.sh says why); make AGENT_DIR=... to put it elsewhere.
AGENT_DIR ?= /usr/local/lib/claude-batch-server
export AGENT_DIR  # the tests run the CLI from there too
CLAUDE    := $(AGENT_DIR)/node_modules/.bin/claude
JOB_PATH  := /usr/local/bin:/usr/bin:/bin
PAM_FILE  := /etc/pam.d/claude-batch-server
# the suite mostly waits (servers, jobs, clusters): three processes, each module in one
PYTEST_ARGS ?= -n 3 --dist loadfile

.PHONY: run test lint format bootstrap bootstrap-test agent pam clean

# CLAUDE_COMMAND counts as found only where a job finds it: on a job's PATH, not root's.
run: bootstrap pam
	@if PATH=$(JOB_PATH) command -v "$${CLAUDE_COMMAND:-claude}" >/dev/null 2>&1; then \
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

# The Claude Code CLI that package-lock.json pins, in AGENT_DIR (a no-op once there).
agent:
	scripts/install-agent.sh $(AGENT_DIR)

# Our own PAM service: the password and account checks, without pam_faildelay.
pam:
	@if [ "$$(id -u)" -eq 0 ] && ! cmp -s src/claude_batch_server/pam/claude-batch-server $(PAM_FILE); then \
		install -m 0644 src/claude_batch_server/pam/claude-batch-server $(PAM_FILE); \
	fi

clean:
	rm -rf $(VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
