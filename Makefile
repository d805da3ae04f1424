# Everything a fresh machine needs is installed by the `.venv` target; `make test` and `make run` depend on it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)

.PHONY: setup run test test-all test-cuda lint bench clean audit audit-test lock

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade -c requirements.lock pip
	# torch 2.13.0 is the CPU build on this machine's disk; install it first so nothing pulls a CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	# Constrained to requirements.lock, the set `make audit` checks; `make lock` re-pins it.
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	# prometheus + promtool (Debian package) for the deploy tests and the real-Prometheus test.
	bash scripts/install-prometheus.sh
	# headless chromium + chromedriver (Debian packages) for the live page's browser tests.
	bash scripts/install-browser.sh
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/streamlearn demo

# Minutes at most, loopback only: the soak (marker `slow`) runs in `make test-all`, the tests that ask
# the package index (marker `network`) in `make audit-test`.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not network" -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# On a machine with a GPU: the learner contract and the device path's equality on CUDA (elsewhere
# every one is skipped, "no CUDA device", and listed by -rs).
test-cuda: $(STAMP)
	$(BIN)/python -m pytest -m cuda -rs -q tests/learners

lint: $(STAMP)
	$(BIN)/ruff check streamlearn tests benchmarks
	$(BIN)/ruff format --check streamlearn tests benchmarks
	$(BIN)/mypy

# Every learner on the full stream, one after another; the side-by-side report lands in runs/bench-report/index.html.
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py --report runs/bench-report

# Known vulnerabilities in the locked dependencies (PyPI's advisory data); accepted ones: security/pip-audit-ignore.txt.
audit:
	bash scripts/audit.sh

# The audit's own tests (they ask PyPI; pins it can't audit here are listed, not failed): CI's audit step.
audit-test: $(STAMP)
	$(BIN)/python -m pytest -m network -q

# Re-pin requirements.lock from pyproject.toml: a fresh throwaway venv installed as above but unconstrained, frozen.
lock:
	set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	$(PY) -m venv "$$d/venv"; \
	"$$d/venv/bin/pip" install -q --upgrade pip; \
	"$$d/venv/bin/pip" install -q "torch==2.13.0"; \
	"$$d/venv/bin/pip" install -q -e '.[dev]'; \
	{ sed -n '/^#/!q;p' requirements.lock 2>/dev/null || true; "$$d/venv/bin/pip" freeze --all --exclude-editable; } >"$$d/lock"; \
	mv "$$d/lock" requirements.lock
	@echo "requirements.lock re-pinned; review it (git diff requirements.lock), then run make audit"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
