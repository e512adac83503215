# mlops-assets: the ML lifecycle as Dagster assets.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= $(CURDIR)/.demo
PYTHON ?= python3

.PHONY: install demo dev mlflow-ui test test-fast bench lint docs clean

install: $(VENV)/.installed

# torch first: the CPU build on this machine's disk; otherwise pip pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The whole story under a real dagster-daemon (own process group, stopped at the end); see docs/quickstart.md.
demo: install
	MLOPS_DEMO_DIR=$(DEMO_DIR) $(PY) -m mlops_assets.demo.run

# The UI on the demo's instance: its sensor ticks and sensor/schedule-launched runs are there.
dev: install
	mkdir -p $(DEMO_DIR)/dagster_home
	test -f $(DEMO_DIR)/dagster_home/dagster.yaml || cp mlops_assets/demo/dagster.yaml $(DEMO_DIR)/dagster_home/dagster.yaml
	DAGSTER_HOME=$(DEMO_DIR)/dagster_home MLOPS_DEMO_DIR=$(DEMO_DIR) MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
		$(VENV)/bin/dagster dev -w workspace.yaml

mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(DEMO_DIR)/state/mlflow.db --port 5000

# Test files run in parallel, each file on one worker (module fixtures stay shared): most tests wait
# on real daemons, servers and subprocesses, so three workers keep two cores busy.
TEST_WORKERS ?= 3
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(PY) -m pytest mlops_assets_tests/core

bench: install
	$(PY) benchmarks/training.py
	$(PY) benchmarks/drift.py
	$(PY) benchmarks/sensor_tick.py

docs: install
	$(PY) -m mlops_assets.spec_reference > docs/configuration.md

lint: install
	$(VENV)/bin/ruff check mlops_assets mlops_assets_tests benchmarks

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
