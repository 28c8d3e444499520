"""Local-only helpers, loaded by local runs and tests: the BigQuery emulator redirect.

pyproject.toml leaves this package out of the one Dataflow workers install, and no
pipeline module imports it: only `python -m pipelines.preprocess --bigquery_emulator`
(an in-process run) and the tests do.
"""
