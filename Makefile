# The README's commands. Each does its own set-up: virtual environment, packages, firebase-tools.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PORT ?= 8080
RUN_FLAGS ?=
PYTEST_ARGS ?=
AGAINST ?= HEAD

.PHONY: run test test-unit test-fast lint bench bench-ab install clean lock

run: install
	PORT=$(PORT) $(PY) -m infra.local $(RUN_FLAGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything that runs in process, without the emulator stack: seconds, not minutes.
test-unit: install
	$(PY) -m pytest -m "not emulators" $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: install
	$(PY) -m bench.cold_start
	$(PY) -m bench.request_latency
	$(PY) -m bench.listen
	$(PY) -m bench.pipeline
	$(PY) -m bench.export
	$(PY) -m bench.chat

# This tree against another commit (AGAINST=REF; HEAD by default, which measures the noise),
# alternating in the same rounds: cold starts and the chat's added latency.
bench-ab: install
	$(PY) -m bench.cold_start --against $(AGAINST)
	$(PY) -m bench.chat --against $(AGAINST)

install: $(STAMP) $(NODE_STAMP)

$(STAMP): pyproject.toml requirements-dev.txt requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Mnemo needs Python 3.11+ (python3 is $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m infra.prerequisites
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	@$(PYTHON) -m infra.prerequisites
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .mypy_cache .ruff_cache

# Re-pin requirements.txt (runtime) and requirements-dev.txt from pyproject.toml's ranges.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet . && .lockenv/bin/pip freeze --exclude-editable | grep -v '^mnemo' > .lockenv/runtime.txt
	.lockenv/bin/pip install --quiet '.[dev]' && .lockenv/bin/pip freeze --exclude-editable | grep -v '^mnemo' > .lockenv/all.txt
	{ echo '# Pinned runtime dependencies (Cloud Functions and the realtime image install exactly these).'; \
	  echo '# Regenerate: make lock'; cat .lockenv/runtime.txt; } > requirements.txt
	{ echo '# Pinned development dependencies: the runtime set plus the test and lint tools.'; \
	  echo '-r requirements.txt'; grep -vxF -f .lockenv/runtime.txt .lockenv/all.txt; } > requirements-dev.txt
	rm -rf .lockenv
