# The two commands of the quickstart: `make lab` and `make test`. Both install what they need
# from nothing (venv + Python packages, the harness CLIs from npm, Debian packages) and are
# idempotent: stamps skip what is already there.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
CLAUDE_CODE_VERSION := 2.1.197
CODEX_VERSION := 0.169.0
PI_VERSION := 0.73.1
CLAUDE_ACP_VERSION := 0.16.2
GEMINI_CLI_VERSION := 0.61.0
QWEN_CODE_VERSION := 0.24.4
OPENCODE_VERSION := 1.18.33
# JupyterHub's proxy (make hub, tests/test_hub*.py), beside the CLIs.
CHP_VERSION := 5.3.0
CLI_STAMP := $(TOOLS)/.clis-$(CLAUDE_CODE_VERSION)-$(CODEX_VERSION)-$(PI_VERSION)-$(CLAUDE_ACP_VERSION)-$(GEMINI_CLI_VERSION)-$(QWEN_CODE_VERSION)-$(OPENCODE_VERSION)-$(CHP_VERSION)
DEBIAN_PACKAGES := chromium bubblewrap firejail socat tmux git curl ca-certificates
LAB_PORT ?= 8888
PYTEST_ARGS ?=
# Tests run in this many pytest-xdist workers; most wait on subprocesses (kernels, CLIs, a
# browser), so more workers than cores pays, up to a point: with seven agent CLIs, six workers
# kept two cores at a load of 12 and timed tests out. Tests marked `serial` run afterwards, alone.
TEST_WORKERS ?= 4

export PATH := $(CURDIR)/$(TOOLS)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: lab hub test check docs bench install python-deps harness-clis system-deps clean

install: python-deps harness-clis

python-deps: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,docs,hub]'
	touch $@

harness-clis: $(CLI_STAMP)
$(CLI_STAMP):
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-audit --no-fund --loglevel=error \
		@anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION) \
		@openai/codex@$(CODEX_VERSION) \
		@mariozechner/pi-coding-agent@$(PI_VERSION) \
		@zed-industries/claude-code-acp@$(CLAUDE_ACP_VERSION) \
		@google/gemini-cli@$(GEMINI_CLI_VERSION) \
		@qwen-code/qwen-code@$(QWEN_CODE_VERSION) \
		opencode-ai@$(OPENCODE_VERSION) \
		configurable-http-proxy@$(CHP_VERSION)
	$(TOOLS)/node_modules/.bin/claude --version
	$(TOOLS)/node_modules/.bin/codex --version
	$(TOOLS)/node_modules/.bin/pi --version
	$(TOOLS)/node_modules/.bin/gemini --version
	$(TOOLS)/node_modules/.bin/qwen --version
	$(TOOLS)/node_modules/.bin/opencode --version
	$(TOOLS)/node_modules/.bin/configurable-http-proxy --version
	touch $@

# Debian packages the tests use: a real browser for the JupyterLab test and the sandboxes.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lab: install system-deps
	cd notebooks && $(CURDIR)/$(VENV)/bin/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) \
		--ServerApp.open_browser=False $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) \
		--LabApp.default_url=/lab/tree/quickstart.ipynb

# A local JupyterHub (users alice, bob, carol; password omnikernel) to try sharing by name.
HUB_PORT ?= 8000
hub: install system-deps
	$(PY) -m omnikernel.testing.hub --port=$(HUB_PORT) --workdir=.hub

test: install system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) -m 'not serial' $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS)

# Fast feedback: the unit tier (no kernel, browser, sandbox or subprocess), in under a minute.
# It is CPU-bound, so one worker per core (-n auto): 20 s on 2 cores against 59 s with -n 6.
check: python-deps
	$(PY) -m pytest -n auto -m unit $(PYTEST_ARGS)

# The documentation site (Sphinx + MyST) into docs/_build/html, warnings as errors; the example
# notebooks are executed on the way against the offline rehearsal model (about 20 s).
docs: install system-deps
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

# Every speed and memory figure, each as a ratio against a baseline measured in the same run:
# one table (with targets: met / not met, and the load) on stdout and bench-results.json at the
# checkout's root; a full run publishes docs/bench-results.json and the docs table (BENCH_ARGS=--quick: smoke).
BENCH_ARGS ?=
bench: install system-deps
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .hub build dist *.egg-info
