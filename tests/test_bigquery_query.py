"""The BigQuery side: the query builder (bounds, sizes, rejected input) and the BigQuery branch of the graph.

The graph test swaps ReadFromBigQuery for `beam.Create` rows shaped like its output
(dicts, TIMESTAMP as datetime), then re-reads the raw cache it wrote with --source csv.
"""

from __future__ import annotations

import glob
import json
from datetime import UTC
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import preprocess
from pipelines.preprocessing.bigquery import DEFAULT_TIMEOUT_S, QueryError, build_query
from pipelines.preprocessing.options import UsageError, parse_args, resolve_config
from pipelines.preprocessing.pipeline import build_preprocess, write_outputs
from pipelines.preprocessing.summary import counters_from_result
from taxifare_core import contract, generate
from taxifare_core.storage.outputs import resolve as published_files


def test_query_is_the_contracts_with_validated_bounds():
    query = build_query("200k", "2010-03-01", "2012-12-31")
    assert query == contract.QUERY_TEMPLATE.format(
        columns=", ".join(contract.RAW_COLUMNS),
        project=contract.BQ_PROJECT,
        dataset=contract.BQ_DATASET,
        data_size="200k",
        min_date="2010-03-01",
        max_date="2012-12-31",
    )
    assert "FROM `wagon-public-datasets`.taxifare.raw_200k" in query
    assert "BETWEEN '2010-03-01' AND '2012-12-31'" in query
    assert query.splitlines()[-1] == "ORDER BY pickup_datetime"


@pytest.mark.parametrize("size", contract.DATA_SIZES)
def test_every_allowed_size_names_its_table(size):
    assert f".raw_{size}\n" in build_query(size, "2009-01-01", "2015-01-01")


def test_same_day_window_is_allowed():
    assert "BETWEEN '2013-07-06' AND '2013-07-06'" in build_query("1k", "2013-07-06", "2013-07-06")


def test_custom_project_and_dataset():
    query = build_query("1k", "2009-01-01", "2015-01-01", project="my-project-42", dataset="taxi_copy")
    assert "FROM `my-project-42`.taxi_copy.raw_1k" in query


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data_size": "10k"},
        {"data_size": "1k; DROP TABLE x"},
        {"data_size": "ALL"},
        {"min_date": "2015-13-01"},
        {"min_date": "2015-02-30"},
        {"min_date": "2015-1-1"},
        {"min_date": "20150101"},
        {"max_date": "2015-01-01' OR '1'='1"},
        {"max_date": "2015-01-01 00:00:00"},
        {"min_date": "2015-01-02", "max_date": "2015-01-01"},
        {"project": "bad project"},
        {"project": "x`; SELECT 1; --"},
        {"dataset": "taxifare.raw_all"},
        {"dataset": ""},
    ],
)
def test_rejected_input_never_reaches_sql(kwargs):
    args = {"data_size": "1k", "min_date": "2009-01-01", "max_date": "2015-01-01", **kwargs}
    with pytest.raises(QueryError):
        build_query(**args)


def bigquery_config(tmp_path, *extra):
    """A validated --source bigquery config (billing project given, as a real run needs)."""
    flags, options = parse_args(
        [
            "--source",
            "bigquery",
            "--data_size",
            "200k",
            "--project",
            "billing-project-1",
            "--output",
            str(tmp_path / "out"),
            *extra,
        ]
    )
    return options, resolve_config(flags, options)


def test_bigquery_config_needs_a_project_and_export_a_bucket(tmp_path):
    with pytest.raises(UsageError, match="--project"):
        resolve_config(*parse_args(["--source", "bigquery"]))
    with pytest.raises(UsageError, match="--temp_location"):
        bigquery_config(tmp_path, "--read_method", "EXPORT")
    _, config = bigquery_config(tmp_path, "--read_method", "EXPORT", "--temp_location", "gs://bucket/tmp")
    assert config.read_method == "EXPORT" and config.table == "wagon-public-datasets.taxifare.raw_200k"


def test_emulator_flag_needs_no_billing_project():
    config = resolve_config(*parse_args(["--source", "bigquery", "--bigquery_emulator", "127.0.0.1:9050"]))
    assert config.bigquery_emulator == "127.0.0.1:9050"
    assert config.output.endswith("processed_2009-01-01_2015-01-01_1k")


@pytest.mark.parametrize("bad", ["0", "-5", "soon", "inf", "nan"])
def test_a_bigquery_timeout_that_is_not_a_positive_number_is_one_line(bad, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--source", "bigquery", "--bigquery_timeout", bad])
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--bigquery_timeout" in line and "positive number of seconds" in line


def test_the_bigquery_timeout_defaults_to_30_seconds():
    flags, _ = parse_args(["--source", "bigquery"])
    assert flags.bigquery_timeout == DEFAULT_TIMEOUT_S == 30


def bigquery_rows(n: int = 1500) -> list[dict]:
    """Generated rides shaped like ReadFromBigQuery's output: dicts, TIMESTAMP as aware datetime, None for NULL."""
    rides = generate.generate_rides(n, seed=5)
    rows = []
    for record in rides[list(contract.RAW_COLUMNS)].to_dict("records"):
        row = {key: None if pd.isna(value) else value for key, value in record.items()}
        if row[contract.TIME_COLUMN] is not None:
            row[contract.TIME_COLUMN] = row[contract.TIME_COLUMN].to_pydatetime().astimezone(UTC)
        if row[contract.PASSENGER_COLUMN] is not None:
            row[contract.PASSENGER_COLUMN] = int(row[contract.PASSENGER_COLUMN])
        rows.append(row)
    # One malformed row, as a corrupt source could send.
    rows.append({**rows[0], contract.LABEL_COLUMN: "n/a-fare"})
    return rows


def test_bigquery_branch_from_create_rows(tmp_path):
    options, config = bigquery_config(tmp_path, "--block_rows", "400")
    rows = bigquery_rows()
    p = BeamTestPipeline(runner="FnApiRunner", options=options)
    outputs = build_preprocess(p | beam.Create(rows), config)
    assert set(outputs) == {"train", "val", "dead_letter", "raw", "stats"}
    dead = outputs["dead_letter"] | beam.FlatMap(str.splitlines) | beam.Map(lambda line: json.loads(line)["source"])
    assert_that(dead, equal_to(["wagon-public-datasets.taxifare.raw_200k"]), label="DeadLetter")
    raw_lines = outputs["raw"] | "RawLines" >> beam.FlatMap(str.splitlines) | beam.Map(lambda line: 1)
    assert_that(raw_lines | beam.CombineGlobally(sum), equal_to([len(rows)]), label="RawCacheRows")
    write_outputs(outputs, config)
    result = p.run()
    result.wait_until_finish()
    counters = counters_from_result(result)
    assert counters["rows_read"] == len(rows) and counters["bad_input"] == 1
    out = Path(config.output)
    header = Path(sorted(glob.glob(str(out / "raw-*.csv")))[0]).read_text().splitlines()[0]
    assert header == ",".join(contract.RAW_COLUMNS)

    # The raw cache re-runs with --source csv to the same processed rows (the query's window held every row).
    rerun = tmp_path / "rerun"
    assert preprocess.main(["--input", str(out / "raw-*.csv"), "--output", str(rerun), "--block_rows", "400"]) == 0
    for split in ("train", "val"):
        first = sorted(
            line for path in glob.glob(str(out / f"{split}-*.csv")) for line in Path(path).read_text().split()
        )
        second = sorted(
            line for path in published_files(str(rerun / f"{split}-*.csv")) for line in Path(path).read_text().split()
        )
        assert first == second and first
    summary = json.loads((rerun / "summary.json").read_text())
    assert summary["rows_read"] == len(rows) and summary["bad_input"] == 1


@pytest.mark.parametrize("extra", [[], ["--read_method", "EXPORT", "--temp_location", "gs://bucket/tmp"]])
def test_real_bigquery_read_builds_offline(tmp_path, extra):
    options, config = bigquery_config(tmp_path, *extra)
    p = beam.Pipeline(options=options)
    outputs = build_preprocess(p, config)
    write_outputs(outputs, config)
    labels = [part.full_label for part in p.transforms_stack[0].parts]
    assert labels[:2] == ["ReadBigQuery", "ParseBigQueryRows"]  # the raw cache comes out of the parse
    assert {"WriteTrain", "WriteVal", "WriteErrors", "WriteRaw"} <= set(labels)
    read = p.transforms_stack[0].parts[0].transform
    assert read.method == getattr(type(read).Method, config.read_method)
