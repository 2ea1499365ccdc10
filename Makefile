# raysiege — the two quick-start commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Every Ray process started from here stays on loopback and sends no usage stats.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0

DEMO_OUT ?= results/demo

.PHONY: run test lint proto bench soak clean

# .venv with the runtime dependencies; reinstalled when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

# .venv with the test extra as well.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	touch $@

## run: a short demo load test end to end (embedded Ray, bundled MNIST model server).
run: $(VENV)/.installed
	$(VENV)/bin/coordinator start --agents 2 --rate 200 --duration 10s --out $(DEMO_OUT)

## test: lint, then the whole suite (unit and integration).
test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -ra

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## proto: regenerate model_server/api/ from proto/.
proto: $(VENV)/.installed-test
	$(PY) proto/generate.py

## bench: benchmarks that print ratios measured side by side (not part of `make test`).
bench: $(VENV)/.installed-test
	$(PY) bench/run_all.py

## soak: 10 minutes at a constant rate, memory of every process sampled (not in CI).
soak: $(VENV)/.installed-test
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
