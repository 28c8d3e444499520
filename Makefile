# The launcher: `make run` runs the main job, `make test` the test suite.
# Both create the project-local virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUFF ?= $(PY) -m ruff

.PHONY: install shell run test lint preprocess train predict serve sample bench bench_train bench_full_scale bench_bad_input bench_bigquery fuzz quality dataflow dataflow_predict portable portable_predict bigquery_emulator reset_local_files clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "error: $(PYTHON) is missing or older than Python 3.11 (set PYTHON=python3.x)"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[train,test,dataflow,serve]"
	touch $(STAMP)

run: install
	$(PY) -m pipelines.main

# The linter and the format check first (settings in pyproject.toml), then every test and the
# packages' doctests (testpaths in pyproject.toml).
test: install lint
	$(PY) -m pytest -q

lint: install
	$(RUFF) check .
	$(RUFF) format --check .

# A shell with .venv activated, so that `python -m pipelines.NAME` finds the project and its
# dependencies (`exit` leaves it). Or: `source .venv/bin/activate`, or write `.venv/bin/python`.
shell: install
	@echo "a shell with $(VENV) activated; exit to leave"
	@bash -c 'exec bash --rcfile <(echo "[ -f ~/.bashrc ] && . ~/.bashrc; . $(VENV)/bin/activate") -i'

sample: install
	$(PY) scripts/generate_rides.py

preprocess: install
	$(PY) -m pipelines.preprocess $(ARGS)

train: install
	$(PY) -m pipelines.train $(ARGS)

predict: install
	$(PY) -m pipelines.predict $(ARGS)

# The HTTP prediction service on the latest model: ARGS="--port 8080 --run NAME ..."
serve: install
	$(PY) -m pipelines.serve $(ARGS)

bench: install
	$(PY) scripts/bench_preprocess.py $(ARGS)

bench_train: install
	$(PY) scripts/bench_train.py $(ARGS)

bench_full_scale: install
	$(PY) scripts/bench_full_scale.py $(ARGS)

bench_bad_input: install
	$(PY) scripts/bench_bad_input.py $(ARGS)

# BigQuery (local emulator) vs CSV on the same 1.1 M rides: ARGS="--rows N --read_methods EXPORT ..."
bench_bigquery: install
	$(PY) scripts/bench_bigquery.py $(ARGS)

# Malformed input of 78 kinds through preprocessing and batch prediction (docs/bad-input.md).
fuzz: install
	$(PY) scripts/fuzz_inputs.py $(ARGS)

# Signals, a full disk, read-only and foreign folders, a dying BigQuery, a hostile HTTP client: one table (ARGS="--quick").
.PHONY: hostile_env
hostile_env: install
	$(PY) scripts/hostile_env.py $(ARGS)

# Model vs baseline on the real sample beside the project (../shared/data).
quality: install
	$(PY) scripts/quality_real_sample.py $(ARGS)

# A local BigQuery emulator (its own Python 3.13 venv .venv-bqemu): ARGS=start|stop|status|load ...
bigquery_emulator: install
	$(PY) scripts/bigquery_emulator.py $(or $(ARGS),start)

dataflow: install
	$(PY) scripts/submit_dataflow.py $(ARGS)

# Batch prediction on Dataflow: ARGS="--input gs://BUCKET/rides/*.csv [--run RUN] [--dry_run]"
dataflow_predict: install
	$(PY) scripts/submit_dataflow.py --job predict $(ARGS)

# Preprocessing through Beam's portable runner, workers built only from the shipped sdist (docs/dataflow.md),
# on the real sample and on dirty input; each must equal the in-process run. ARGS="--workers 2 ..."
PORTABLE_SAMPLE ?= ../shared/data/*.csv
PORTABLE_OUT ?= build/portable
portable: install
	$(PY) scripts/portable_run.py --input '$(PORTABLE_SAMPLE)' --output $(PORTABLE_OUT)/sample $(ARGS)
	$(PY) scripts/portable_run.py --dirty 5000 --output $(PORTABLE_OUT)/dirty $(ARGS)

# Batch prediction the same way (workers get TensorFlow from requirements-predict.txt):
# ARGS="--input 'rides/*.csv' --registry DIR [--run RUN]"
portable_predict: install
	$(PY) scripts/portable_run.py --job predict --output $(PORTABLE_OUT)/predict $(ARGS)

# Empties the local data and training-output folders, keeping their structure: lists them, then asks
# (ARGS=--yes to skip the question; without a terminal it needs --yes).
reset_local_files: install
	$(PY) -m pipelines.reset_local_files $(ARGS)

clean:
	rm -rf $(VENV) .venv-bqemu build *.egg-info .pytest_cache
