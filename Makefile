# The launcher: `make run` runs the main job, `make test` the test suite.
# Both create the project-local virtual environment .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test preprocess train predict sample bench dataflow reset_local_files clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (set PYTHON=python3.x, >= 3.11)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,test,dataflow]"
	touch $(STAMP)

run: install
	$(PY) -m pipelines.main

test: install
	$(PY) -m pytest -q

sample: install
	$(PY) scripts/generate_rides.py

preprocess: install
	$(PY) -m pipelines.preprocess $(ARGS)

train: install
	$(PY) -m pipelines.train $(ARGS)

predict: install
	$(PY) -m pipelines.predict $(ARGS)

bench: install
	$(PY) scripts/bench_preprocess.py $(ARGS)

dataflow: install
	$(PY) scripts/submit_dataflow.py $(ARGS)

# Empties the local data and training-output folders, keeping their structure.
reset_local_files: install
	$(PY) -m pipelines.reset_local_files

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
