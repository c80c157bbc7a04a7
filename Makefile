# mlcycle: two commands on a fresh machine --  `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PIP_VERSION := 26.3
BIN    := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false

.PHONY: install nginx demo down test test-random lint status clean

# The environment is built from the lock (the whole resolved set), never from loose requirements.
$(BIN)/.installed: requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==$(PIP_VERSION)"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

install: $(BIN)/.installed

## nginx: the stable endpoint's nginx, which pip cannot install: installed when root on Debian (its system
## service not started), else stop at once with the command to run (infra/nginx.sh)
nginx:
	@bash infra/nginx.sh

## demo: create .venv, install, start the local stack, run the pipeline end to end, print where to look
demo: nginx install
	$(BIN)/mlcycle up
	$(BIN)/mlcycle demo

## down: stop exactly what `make demo` left running
down:
	@if [ -x $(BIN)/mlcycle ]; then $(BIN)/mlcycle down; else echo "nothing to stop (no $(VENV))"; fi

status: install
	$(BIN)/mlcycle status

## test: the whole test suite (what CI runs), in file order
test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -p no:randomly

## test-random: the modules that need no Prefect server, Docker or served model, shuffled (modules and the
## tests in each; pytest-randomly prints the seed, and `-p randomly --randomly-seed=N` repeats that order).
## .ci/run runs it after `make test`, which keeps file order: together they show no test leans on another.
UNIT_TESTS := tests/test_settings.py tests/test_schema.py tests/test_drift_stats.py tests/test_drift_verdict.py \
	tests/test_drift_multivariate.py tests/test_properties.py tests/test_partitions.py tests/test_calibration.py \
	tests/test_gate.py tests/test_estimation.py tests/test_architecture.py tests/test_demo_names.py \
	tests/test_service_log_guard.py tests/test_sources.py tests/test_secrets.py tests/test_storage.py \
	tests/test_path_safety.py tests/test_init.py tests/test_projects.py tests/test_lease.py tests/test_gc.py \
	tests/test_registry.py tests/test_landing_real_data.py tests/test_audit.py tests/test_benchmark_imports.py
test-random: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -p randomly $(UNIT_TESTS)

## lint: ruff, and no six-line run repeated between project modules (pylint's duplicate-code check)
lint: install
	$(BIN)/ruff check tasks flows bentos tests benchmarks docs
	$(BIN)/pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 --ignore-imports=yes \
	    --ignore-comments=yes --ignore-docstrings=yes --ignore-signatures=yes --score=no tasks flows bentos

clean: down
	rm -rf .mlcycle
