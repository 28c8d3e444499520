"""BigQuery for real, offline: Beam's ReadFromBigQuery and the preprocess CLI against a local emulator.

The emulator (`local-bigquery`, Python 3.13, its own venv .venv-bqemu/ made on first
use from PyPI) is started on free loopback ports for this module, loaded with a
generated dirty sample as wagon-public-datasets.taxifare.raw_1k, and stopped by
its PID at the end, also when a test fails. Without Python 3.13 the emulator tests
skip, saying why; on CI (CI=true) they fail instead. A Cloud Storage emulator
(gcp-storage-emulator, same venv) takes the gs:// shards of the last test.

    .venv/bin/python -m pytest tests/test_bigquery_emulator.py -q
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.internal.gcp import auth as beam_auth
from apache_beam.io.gcp import bigquery as beam_bigquery
from apache_beam.io.gcp import bigquery_io_metadata, bigquery_tools, gce_metadata_util
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from emulator_helpers import ROOT, ensure_emulator_venv
from emulators import bigquery as bq_server
from emulators import gcs as gcs_server
from emulators import processes as emulator_processes
from emulators import python_env as emulator_python
from pipelines.local import bigquery_clients, bigquery_emulator
from pipelines.preprocessing.bigquery import bigquery_read_failure, build_query
from taxifare_core import contract
from taxifare_core.generate import generate_rides
from taxifare_core.storage import outputs

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

TABLE = f"{contract.BQ_DATASET}.raw_1k"
N_GENERATED, SEED = 1000, 42
READ_METHODS = ("DIRECT_READ", "EXPORT")
RUN_TIMEOUT_S = 300


def dirty_sample() -> pd.DataFrame:
    """Generated rides plus exact duplicates (other keys) and a few rows for each cleaning rule."""
    rides = generate_rides(N_GENERATED, seed=SEED)
    extra = rides.iloc[[10, 20, 30, 40, 50, 60]].copy()
    extra[contract.KEY_COLUMN] = [f"extra-{i}" for i in range(len(extra))]
    extra.iloc[3, extra.columns.get_loc(contract.LABEL_COLUMN)] = 0.0
    extra.iloc[4, extra.columns.get_loc(contract.PASSENGER_COLUMN)] = 9
    extra.iloc[5, extra.columns.get_loc("pickup_latitude")] = None
    return pd.concat([rides, extra], ignore_index=True)


def write_csv(rides: pd.DataFrame, path: Path) -> Path:
    """The rides as the raw CSV form (header, key first, '... UTC' stamps, empty for missing)."""
    text = rides.astype(object).where(rides.notna(), "")
    text[contract.TIME_COLUMN] = rides[contract.TIME_COLUMN].dt.strftime(contract.CSV_TIME_FORMAT).fillna("")
    path.parent.mkdir(parents=True, exist_ok=True)
    text.to_csv(path, index=False, lineterminator="\n")
    return path


def in_window(rides: pd.DataFrame) -> pd.DataFrame:
    """The rows the contract's query selects (BETWEEN the default dates, inclusive midnights)."""
    stamps = rides[contract.TIME_COLUMN]
    low, high = pd.Timestamp(contract.DEFAULT_MIN_DATE, tz="UTC"), pd.Timestamp(contract.DEFAULT_MAX_DATE, tz="UTC")
    return rides[stamps.between(low, high)]


def as_records(rides: pd.DataFrame) -> list[tuple]:
    """The seven query columns as tuples, None for missing, to compare with what Beam reads."""
    records = []
    for row in rides[list(contract.RAW_COLUMNS)].astype(object).itertuples(index=False):
        records.append(
            tuple(None if pd.isna(v) else (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v) for v in row)
        )
    return records


def beam_record(row: dict) -> tuple:
    """A row read by ReadFromBigQuery as a tuple of the seven columns (NaN read as None)."""
    return tuple(None if isinstance(row[c], float) and math.isnan(row[c]) else row[c] for c in contract.RAW_COLUMNS)


# --- the redirect, without a server -------------------------------------------


def test_beam_still_has_the_redirected_names():
    """Fails loudly when a Beam upgrade moves or stops using the names the emulator redirect replaces."""
    wrapper = bigquery_tools.BigQueryWrapper
    assert callable(wrapper.__dict__["_bigquery_client"].__func__)
    assert "_bigquery_client(pipeline_options)" in inspect.getsource(wrapper.from_pipeline_options)
    storage = beam_bigquery.bq_storage
    assert hasattr(storage, "BigQueryReadClient") and hasattr(storage.types, "ReadSession")
    assert "bq_storage.BigQueryReadClient()" in inspect.getsource(beam_bigquery._CustomBigQueryStorageSource.split)
    assert "bq_storage.BigQueryReadClient()" in inspect.getsource(beam_bigquery._CustomBigQueryStorageStreamSource)
    assert callable(gce_metadata_util.fetch_dataflow_job_id)
    labels = inspect.getsource(bigquery_io_metadata.create_bigquery_io_metadata)
    assert "gce_metadata_util.fetch_dataflow_job_id()" in labels
    cache = bigquery_emulator.CREDENTIAL_CACHE
    assert all(hasattr(cache, name) for name in bigquery_emulator.CREDENTIAL_FIELDS)
    assert "cls._credentials_init" in inspect.getsource(cache.get_service_credentials)
    # What the deadlines rely on: Beam's REST client factory takes the options and builds the client
    # Beam would; the Storage Read client's read_rows keeps its `retry` for every reconnect; apitools
    # clients expose their retry count; Beam's REST retries stay within BEAM_REST_RETRY_S.
    assert "bigquery.BigqueryV2(" in inspect.getsource(wrapper._bigquery_client)
    assert '{"retry": retry, "timeout": timeout' in inspect.getsource(storage.BigQueryReadClient.read_rows)
    assert "retry" in inspect.signature(storage.BigQueryReadClient.read_rows).parameters
    client = bigquery_clients._rest_client(3, "http://127.0.0.1:1/bigquery/v2/")
    assert (client.num_retries, client.http.timeout) == (bigquery_clients.REST_RETRIES, 3)
    assert bigquery_tools.MAX_RETRIES == 3


@pytest.fixture
def redirect_restored(monkeypatch):
    """Whatever a test redirects, Beam's clients, its credential cache and the environment are put back
    afterwards (monkeypatch records them first)."""
    for owner, name in bigquery_emulator.REDIRECTED_NAMES:
        monkeypatch.setattr(owner, name, owner.__dict__[name])
    for name in bigquery_emulator.CREDENTIAL_FIELDS[1:]:
        monkeypatch.setattr(bigquery_emulator.CREDENTIAL_CACHE, name, getattr(bigquery_emulator.CREDENTIAL_CACHE, name))
    monkeypatch.delenv(bigquery_emulator.EMULATOR_HOST_ENV, raising=False)


@pytest.mark.parametrize("bad", ["", "localhost", "localhost:", ":9050", "host:port", "host:0", "host:70000"])
def test_bad_emulator_address_is_refused(bad):
    with pytest.raises(ValueError, match="HOST:PORT"):
        bigquery_emulator.use_bigquery_emulator(bad)


@pytest.mark.parametrize(
    "argv, refused",
    [
        ([], False),
        (["--runner", "FnApiRunner"], False),
        (["--direct_running_mode", "multi_threading", "--direct_num_workers", "2"], False),
        (["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"], True),
        (["--runner", "DataflowRunner"], True),
        (["--runner", "PrismRunner"], True),
    ],
)
def test_emulator_mode_refuses_runners_outside_this_process(argv, refused):
    """Worker processes would miss the redirect and wait for a Google login: refused in one line."""
    options = PipelineOptions(argv)
    if refused:
        with pytest.raises(ValueError, match="--bigquery_emulator"):
            bigquery_emulator.check_runs_in_process(options)
    else:
        bigquery_emulator.check_runs_in_process(options)


def test_redirect_replaces_beams_clients(redirect_restored):
    """REST client on the emulator's URL with few retries, storage stand-in with bounded calls, no
    metadata-server call, anonymous credentials without a lookup."""
    originals = {name: owner.__dict__[name] for owner, name in bigquery_emulator.REDIRECTED_NAMES}
    bigquery_emulator.use_bigquery_emulator("127.0.0.1:19050", timeout=7)
    client = bigquery_tools.BigQueryWrapper._bigquery_client(PipelineOptions())
    assert client.url == "http://127.0.0.1:19050/bigquery/v2/"
    assert client.num_retries == bigquery_clients.REST_RETRIES
    assert client.http.timeout == 7
    assert beam_bigquery.bq_storage is not originals["bq_storage"]
    assert beam_bigquery.bq_storage.types is originals["bq_storage"].types
    assert gce_metadata_util.fetch_dataflow_job_id() == ""
    started = time.monotonic()
    assert beam_auth.get_service_credentials(PipelineOptions()) is None  # anonymous, no lookup
    assert time.monotonic() - started < 1
    assert os.environ[bigquery_emulator.EMULATOR_HOST_ENV] == "http://127.0.0.1:19050"


def test_the_emulator_redirect_stays_out_of_the_workers_package_and_the_pipeline_options():
    """pipelines.local (the redirect, the client hooks) is not in the package Dataflow workers install,
    no pipeline module imports it, and its flags never reach Beam's options."""
    import tomllib

    from setuptools import find_packages

    from pipelines.preprocessing.options import parse_args

    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=found["include"], exclude=found.get("exclude", ()))
    assert "pipelines.preprocessing" in packages and "pipelines.local" not in packages
    importers = [
        path
        for path in (ROOT / "pipelines").rglob("*.py")
        if path.parent.name != "local"
        and re.search(r"^\s*(from|import) pipelines\.local", path.read_text(), re.MULTILINE)
    ]
    assert [path.relative_to(ROOT).as_posix() for path in importers] == ["pipelines/preprocess.py"]
    flags, options = parse_args(
        [
            "--source",
            "bigquery",
            "--bigquery_emulator=127.0.0.1:9050",
            "--bigquery_timeout",
            "12",
            "--runner",
            "FnApiRunner",
        ]
    )
    assert (flags.bigquery_emulator, flags.bigquery_timeout) == ("127.0.0.1:9050", 12.0)
    assert "bigquery_emulator" not in options.get_all_options(retain_unknown_options=True)
    assert "bigquery_timeout" not in options.get_all_options(retain_unknown_options=True)


# --- the emulator ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rides() -> pd.DataFrame:
    """The dirty sample loaded into the emulator and written as CSV."""
    return dirty_sample()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory, rides):
    """A running emulator holding the sample as taxifare.raw_1k; stopped by PID at the end."""
    ensure_emulator_venv()
    server = bq_server.start(tmp_path_factory.mktemp("bqemu"), log=lambda line: None)
    try:
        assert bq_server.load_rides(server.host_port, rides, TABLE) == len(rides)
        yield server
    finally:
        emulator_processes.stop(server.pid)


def test_emulator_is_stopped_by_pid(tmp_path):
    """start() answers a real API call; stop(pid) ends the process and frees the port."""
    try:
        emulator_python.ensure_venv(log=lambda line: None)
    except emulator_processes.EmulatorError as error:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"BigQuery emulator unavailable: {error}")
    server = bq_server.start(tmp_path / "data", log=lambda line: None)
    try:
        assert bq_server.is_ready(server.host_port)
    finally:
        assert emulator_processes.stop(server.pid)
    assert not bq_server.is_ready(server.host_port)
    assert not emulator_processes.alive(server.pid)


def test_emulator_serves_the_loaded_dirty_table(emulator, rides):
    client = bq_server.client(emulator.host_port)
    query = f"SELECT COUNT(*) AS n, COUNTIF(pickup_latitude IS NULL) AS missing FROM `{contract.BQ_PROJECT}`.{TABLE}"
    (row,) = client.query(query).result()
    assert row["n"] == len(rides)
    assert row["missing"] == rides["pickup_latitude"].isna().sum() >= 1


@pytest.mark.parametrize("method", READ_METHODS)
def test_read_from_bigquery_on_the_direct_runner(emulator, rides, method, tmp_path, redirect_restored):
    """Beam's own ReadFromBigQuery, in process, returns exactly the rows of the contract's query."""
    bigquery_emulator.use_bigquery_emulator(emulator.host_port)
    query = build_query("1k", contract.DEFAULT_MIN_DATE, contract.DEFAULT_MAX_DATE)
    expected = as_records(in_window(rides))
    assert 0 < len(expected) < len(rides)
    options = PipelineOptions(
        ["--runner", "DirectRunner", "--direct_running_mode", "in_memory", "--project", contract.BQ_PROJECT]
    )
    with beam.Pipeline(options=options) as pipeline:
        read = pipeline | beam.io.ReadFromBigQuery(
            query=query, use_standard_sql=True, method=method, gcs_location=str(tmp_path / "export")
        )
        assert_that(read | beam.Map(beam_record), equal_to(expected))


# --- python -m pipelines.preprocess --source bigquery vs --source csv ---------------


def from_emulator(emulator) -> tuple[str, ...]:
    """The preprocessing flags that read the rides from the running emulator."""
    return ("--source", "bigquery", "--bigquery_emulator", emulator.host_port)


def run_preprocess(*args: str, env: dict[str, str] | None = None) -> dict | None:
    """Run the preprocess CLI in a subprocess; return its summary.json when the output is local."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = args[args.index("--output") + 1]
    return None if output.startswith("gs://") else json.loads(Path(output, "summary.json").read_text())


def shard_lines(folder: Path, prefix: str) -> list[str]:
    """All lines of folder/prefix-*-of-*.*, sorted (shard order and count do not matter)."""
    lines = []
    for path in outputs.resolve(str(folder / f"{prefix}-*-of-*")) or []:  # the published run's files
        lines += Path(path).read_text().splitlines()
    return sorted(line for line in lines if line)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, rides) -> tuple[Path, dict]:
    """The CSV path on the same rows: the reference output folder and summary."""
    folder = tmp_path_factory.mktemp("csv_path")
    summary = run_preprocess(
        "--source",
        "csv",
        "--input",
        str(write_csv(rides, folder / "raw" / "rides.csv")),
        "--output",
        str(folder / "out"),
        "--dedupe",
        "global",
    )
    return folder / "out", summary


def rule_counts(summary: dict, missing_stamps: int = 0) -> dict:
    """What cleaning did, apart from the date window, which BigQuery's query applies before the pipeline.

    The query's BETWEEN also leaves out rows without a pickup time, which the CSV
    path reads and drops as missing values: `missing_stamps` takes them off.
    """
    dropped = {rule: n for rule, n in summary["dropped"].items() if rule != "outside_date_range"}
    dropped[contract.RULE_MISSING] -= missing_stamps
    return {**dropped, "duplicates": summary["duplicates"], "train": summary["train_rows"], "val": summary["val_rows"]}


@pytest.mark.parametrize("method", READ_METHODS)
def test_preprocess_from_bigquery_equals_the_csv_path(emulator, rides, csv_run, method, tmp_path):
    """Same rows through BigQuery (both read methods) and through CSV: identical shards; the raw cache is written."""
    csv_out, csv_summary = csv_run
    out = tmp_path / "out"
    summary = run_preprocess(
        *from_emulator(emulator),
        "--read_method",
        method,
        "--data_size",
        "1k",
        "--output",
        str(out),
        "--temp_location",
        str(tmp_path / "bq_tmp"),
        "--dedupe",
        "global",
    )
    train, val = shard_lines(out, "train"), shard_lines(out, "val")
    assert len(train) > 800 and len(val) > 0
    assert train == shard_lines(csv_out, "train")
    assert val == shard_lines(csv_out, "val")
    assert shard_lines(out, "errors") == shard_lines(csv_out, "errors") == []
    assert summary["balanced"] and summary["rows_read"] == len(in_window(rides))
    assert rule_counts(summary) == rule_counts(csv_summary, rides[contract.TIME_COLUMN].isna().sum())
    assert summary["duplicates"] >= 2 and summary["dropped_total"] >= 5  # the sample is dirty

    # The raw cache: the query's rows, header first, readable by the CSV path with the same result.
    cache = outputs.resolve(str(out / "raw-*-of-*.csv"))
    assert cache and all(Path(p).read_text().split("\n", 1)[0] == ",".join(contract.RAW_COLUMNS) for p in cache)
    cached = pd.concat([pd.read_csv(p) for p in cache])
    assert len(cached) == len(in_window(rides))
    again = tmp_path / "from_cache"
    run_preprocess(
        "--source", "csv", "--input", str(out / "raw-*-of-*.csv"), "--output", str(again), "--dedupe", "global"
    )
    assert shard_lines(again, "train") == train
    assert shard_lines(again, "val") == val


# --- the cloud path on emulators: BigQuery -> Beam -> gs:// shards ----------------------

BUCKET = "taxifare-emulated"


@pytest.fixture(scope="module")
def storage(tmp_path_factory, emulator):
    """A GCS emulator holding BUCKET (the emulator fixture has made the venv); stopped by PID."""
    server = gcs_server.start_storage(tmp_path_factory.mktemp("gcs"), BUCKET, log=lambda line: None)
    try:
        yield server
    finally:
        emulator_processes.stop(server.pid)


def gs_shard_lines(storage_host_port: str, prefix: str) -> list[str]:
    """All lines of gs://BUCKET/PREFIX-*-of-*, sorted, read back through the GCS emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    client = gcs.Client(
        project="local",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://{storage_host_port}"},
    )
    lines = []
    folder, name = prefix.rsplit(
        "/", 1
    )  # shards live in the folder's published run-<id>/ (taxifare_core.storage.outputs)
    for blob in client.list_blobs(BUCKET, prefix=f"{folder}/run-"):
        if re.fullmatch(rf".*/{re.escape(name)}\d{{5}}-of-\d{{5}}\.\w+", blob.name):
            lines += blob.download_as_text().splitlines()
    return sorted(line for line in lines if line)


def test_bigquery_to_gs_shards_on_emulators(emulator, storage, csv_run):
    """The cloud path offline: BigQuery (emulator) -> Beam -> gs:// (emulator), same shards as the CSV path."""
    csv_out, _ = csv_run
    run_preprocess(
        *from_emulator(emulator),
        "--data_size",
        "1k",
        "--output",
        f"gs://{BUCKET}/processed/run",
        "--dedupe",
        "global",
        env={"STORAGE_EMULATOR_HOST": f"http://{storage.host_port}"},
    )
    assert gs_shard_lines(storage.host_port, "processed/run/train-") == shard_lines(csv_out, "train")
    assert gs_shard_lines(storage.host_port, "processed/run/val-") == shard_lines(csv_out, "val")
    assert len(gs_shard_lines(storage.host_port, "processed/run/raw-")) > 800


# --- past gRPC's default message size, and wrong-type values, through the preprocess CLI ------------

# local-bigquery serves one Storage Read stream per 100,000 rows (STREAM_ROWS), each stream's rows in
# one Arrow message of ~56 bytes a row: 75k to 100k rows read make one message over gRPC's 4 MB default
# (100k loaded, ~92k in the query's window: "Received message larger than max (5181483 vs. 4194304)"
# without the channel options). 120k would not: two streams of ~55k rows, ~3 MB each.
LARGE_ROWS = 100_000
LARGE_DATASET, STRING_FARE_DATASET = "taxifare_large", "taxifare_string_fare"


def preprocess_in_process(*args: str) -> dict:
    """`python -m pipelines.preprocess ARGS` in this process (no interpreter start-up); its summary."""
    from pipelines import preprocess

    assert preprocess.main(list(args)) == 0
    return json.loads(Path(args[args.index("--output") + 1], "summary.json").read_text())


@pytest.mark.emulator
def test_direct_read_past_grpcs_message_limit_equals_the_csv_path(emulator, tmp_path, redirect_restored):
    """100k rows by DIRECT_READ (one Storage Read message over 4 MB) give the CSV path's exact rows."""
    rides = generate_rides(LARGE_ROWS, seed=7)
    assert bq_server.load_rides(emulator.host_port, rides, f"{LARGE_DATASET}.raw_all") == LARGE_ROWS
    common = ("--dedupe", "none", "--num_shards", "1")
    bq = preprocess_in_process(
        *from_emulator(emulator),
        "--read_method",
        "DIRECT_READ",
        "--data_size",
        "all",
        "--bq_dataset",
        LARGE_DATASET,
        "--output",
        str(tmp_path / "bq"),
        *common,
    )
    csv = preprocess_in_process(
        "--source",
        "csv",
        "--input",
        str(write_csv(rides, tmp_path / "rides.csv")),
        "--output",
        str(tmp_path / "csv"),
        *common,
    )
    assert 75_000 < bq["rows_read"] == len(in_window(rides)) <= 100_000  # one stream, one message > 4 MB
    assert bq["train_rows"] + bq["val_rows"] == csv["train_rows"] + csv["val_rows"] > 70_000
    for prefix in ("train", "val"):
        assert shard_lines(tmp_path / "bq", prefix) == shard_lines(tmp_path / "csv", prefix)


def load_string_fare_table(host_port: str, rides: pd.DataFrame) -> None:
    """The rides into STRING_FARE_DATASET.raw_1k with fare_amount as a STRING column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    client = bq_server.client(host_port)
    client.create_dataset(f"{contract.BQ_PROJECT}.{STRING_FARE_DATASET}", exists_ok=True)
    schema = [
        bigquery.SchemaField(f.name, "STRING" if f.name == contract.LABEL_COLUMN else f.field_type)
        for f in bq_server.raw_schema(with_key=False)
    ]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rides[list(contract.RAW_COLUMNS)], preserve_index=False), buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(
        schema=schema,
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    client.load_table_from_file(
        buffer, f"{contract.BQ_PROJECT}.{STRING_FARE_DATASET}.raw_1k", job_config=config
    ).result()


@pytest.mark.emulator
@pytest.mark.parametrize("method", READ_METHODS)
def test_a_string_fare_from_bigquery_reaches_the_dead_letter(emulator, tmp_path, method, redirect_restored):
    """A STRING fare column: numbers in text are read, 'abc' goes to the dead letter with its row and reason."""
    rides = generate_rides(200, seed=3)
    rides = rides[rides[contract.TIME_COLUMN].notna()].reset_index(drop=True)
    rides = rides[list(contract.RAW_COLUMNS)].astype({contract.LABEL_COLUMN: object})
    rides[contract.LABEL_COLUMN] = [f"{fare:.2f}" for fare in rides[contract.LABEL_COLUMN].astype(float)]
    rides.loc[5, contract.LABEL_COLUMN] = "abc"
    load_string_fare_table(emulator.host_port, rides)
    out = tmp_path / "out"
    summary = preprocess_in_process(
        *from_emulator(emulator),
        "--read_method",
        method,
        "--data_size",
        "1k",
        "--bq_dataset",
        STRING_FARE_DATASET,
        "--output",
        str(out),
        "--temp_location",
        str(tmp_path / "bq_tmp"),
    )
    [letter] = [json.loads(line) for line in shard_lines(out, "errors")]
    assert letter["reason"] == "fare_amount: expected a number, got 'abc'"
    assert letter["source"] == f"{contract.BQ_PROJECT}.{STRING_FARE_DATASET}.raw_1k"
    record = json.loads(letter["record"])
    assert record[contract.LABEL_COLUMN] == "abc"
    assert record["pickup_longitude"] == pytest.approx(rides.loc[5, "pickup_longitude"])
    assert summary["bad_input"] == 1 and summary["rows_read"] == len(in_window(rides))
    assert summary["balanced"]


# --- a failed BigQuery read: one line naming the table and read method ------------------------------


def test_read_failure_names_the_table_method_and_bigquerys_reason():
    body = '{"error":{"code":404,"message":"Not found: Table p:d.raw_1k was not found in location US"}}'
    error = RuntimeError(
        f"apitools...HttpNotFoundError: HttpError accessing <http://h/jobs>: response: <{{}}>, "
        f"content <{body}> [while running 'ReadBigQuery/Read/SDFBoundedSourceReader']"
    )
    assert bigquery_read_failure(error, "p.d.raw_1k", "DIRECT_READ") == (
        "reading BigQuery table p.d.raw_1k (DIRECT_READ) failed: Not found: Table p:d.raw_1k was not found "
        "in location US"
    )
    assert bigquery_read_failure(ValueError("a bug in a later step"), "p.d.raw_1k", "EXPORT") is None


def run_failing_preprocess(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess", "--source", "bigquery", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.mark.emulator
def test_missing_table_ends_with_one_line_and_debug_shows_the_traceback(emulator, tmp_path):
    args = ("--bigquery_emulator", emulator.host_port, "--data_size", "200k", "--output", str(tmp_path / "out"))
    done = run_failing_preprocess(*args)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "preprocess: error: reading BigQuery table wagon-public-datasets.taxifare.raw_200k (DIRECT_READ) failed: "
        "Not found: Table wagon-public-datasets:taxifare.raw_200k was not found in location US "
        "(--log_level DEBUG shows the traceback)"
    )
    assert "Traceback" not in done.stderr
    debug = run_failing_preprocess(*args, "--log_level", "DEBUG")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1].endswith("was not found in location US")


# --- a BigQuery server that dies mid-read, or is not there: bounded, one line, lock released ----------

DYING_TIMEOUT_S = 10
# Interpreter exit and Beam's teardown on a busy machine, past the longest BigQuery give-up.
DYING_MARGIN_S = 25


def assert_lock_free(folder: Path) -> None:
    """The run left no lock: the next run into `folder` takes it without a takeover."""
    assert not (folder / outputs.LOCK_FILE).exists()
    if folder.exists():
        with outputs.OutputLock(str(folder)) as lock:
            assert lock.warning is None


@pytest.mark.emulator
@pytest.mark.parametrize(
    "read_method, kill_after",
    [("DIRECT_READ", 2), ("EXPORT", 0), ("DIRECT_READ", None)],
    ids=["DIRECT_READ killed mid-read", "EXPORT killed at its query", "no emulator"],
)
def test_a_run_ends_soon_after_bigquery_dies(tmp_path, read_method, kill_after):
    """The emulator SIGKILLed while the run reads its streams, or as the export's jobs start (2 s later
    the files are exported and the run needs no server), or never there: exit 1 within
    --bigquery_timeout or Beam's REST retries (whichever is longer) plus a margin, one error line,
    the output folder's lock released. Before the deadlines DIRECT_READ waited 24 h, EXPORT ~150 s."""
    ensure_emulator_venv()
    run = bq_server.run_with_dying_emulator(
        tmp_path,
        ["--read_method", read_method, "--bigquery_timeout", str(DYING_TIMEOUT_S)],
        kill_after=kill_after,
        rows=300_000,
        limit=180,
    )
    assert run.returncode == 1, run.stderr_lines[-5:]
    assert run.seconds < max(DYING_TIMEOUT_S, bigquery_clients.BEAM_REST_RETRY_S) + DYING_MARGIN_S
    *progress, error = run.stderr_lines
    # Before the error: the run's start line and its progress lines (pipelines.progress), nothing else.
    assert all(line.startswith("preprocess: ") and "Traceback" not in line for line in progress), progress
    assert error.startswith(
        f"preprocess: error: reading BigQuery table {contract.BQ_PROJECT}.{contract.BQ_DATASET}.raw_all "
        f"({read_method}) failed: "
    )
    assert_lock_free(run.output)
