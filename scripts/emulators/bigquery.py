"""The BigQuery emulator (`local-bigquery`, on DuckDB): start it, and load rides into a table.

The REST API listens on PORT and the Storage Read API (gRPC) on PORT + 10, the
convention pipelines.local.bigquery_emulator follows.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emulators.processes import DEFAULT_HOST, READY_TIMEOUT_S, Emulator, EmulatorError, free_port, launch, stop
from emulators.python_env import ROOT, ensure_venv
from pipelines.local.bigquery_emulator import DEFAULT_GRPC_PORT_OFFSET, parse_host_port
from scripts.jobs import wait_or_kill_group
from taxifare_core import contract

DEFAULT_DATA_DIR = contract.local_data_path() / "bigquery_emulator"


# BigQuery column types of the raw rides, from the contract's dtypes.
BQ_TYPES = {"string": "STRING", "float32": "FLOAT64", "int16": "INT64", "datetime64[ns, UTC]": "TIMESTAMP"}


def datasets_url(host_port: str, project: str = contract.BQ_PROJECT) -> str:
    """REST URL listing a project's datasets: the readiness probe."""
    return f"http://{host_port}/bigquery/v2/projects/{project}/datasets"


def is_ready(host_port: str) -> bool:
    """True when a real API call (listing datasets) succeeds."""
    try:
        with urllib.request.urlopen(datasets_url(host_port), timeout=5) as response:
            return response.status == 200 and "datasets" in json.load(response)
    except (OSError, ValueError):
        return False


def start(
    data_dir: Path = DEFAULT_DATA_DIR,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    timeout: float = READY_TIMEOUT_S,
    log=print,
) -> Emulator:
    """Start the BigQuery emulator in the background and wait until a real API call succeeds."""
    executable = ensure_venv(log=log)
    port = port or free_port(host)
    data_dir = Path(data_dir)
    command = [
        str(executable), "serve", "--host", host, "--port", str(port),
        "--grpc-port", str(port + DEFAULT_GRPC_PORT_OFFSET),
        "--project", contract.BQ_PROJECT, "--dataset", contract.BQ_DATASET,
        "--data-dir", str(data_dir),
    ]  # fmt: skip
    return launch(command, f"{host}:{port}", is_ready, data_dir, "bigquery_emulator", timeout)


def raw_schema(with_key: bool = True):
    """BigQuery schema of the raw rides table (CONTRACT.md section 1)."""
    from google.cloud import bigquery

    columns = contract.RAW_COLUMNS_WITH_KEY if with_key else contract.RAW_COLUMNS
    return [bigquery.SchemaField(name, BQ_TYPES[contract.RAW_DTYPES[name]]) for name in columns]


def client(host_port: str, project: str = contract.BQ_PROJECT):
    """A google-cloud-bigquery client on the emulator, with anonymous credentials."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    host, port = parse_host_port(host_port)
    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": f"http://{host}:{port}"}
    )


def load_rides(host_port: str, rides, table: str, project: str = contract.BQ_PROJECT) -> int:
    """Replace `dataset.table` of `project` with the rides DataFrame; return its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    if not is_ready(host_port):
        raise EmulatorError(f"no BigQuery emulator answers on {host_port} (start one with `start`)")
    bq = client(host_port, project)
    dataset, _, _ = table.partition(".")
    bq.create_dataset(f"{project}.{dataset}", exists_ok=True)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rides, preserve_index=False), buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(
        schema=raw_schema(contract.KEY_COLUMN in rides.columns),
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    bq.load_table_from_file(buffer, f"{project}.{table}", job_config=config).result()
    return bq.get_table(f"{project}.{table}").num_rows


@dataclass(frozen=True)
class DyingRun:
    """How a preprocess run ended after its BigQuery emulator was killed (or was never there)."""

    seconds: float  # from the kill (with no emulator: from the start) to the run's exit
    returncode: int | None  # None: still running `limit` s after the kill, then killed
    stderr_lines: list[str]
    output: Path  # the run's --output folder


def _wait_for_request(server: Emulator, since: int, run: subprocess.Popen, limit: float) -> None:
    """Until the emulator's log shows a job request made after byte `since` (the run's query), the run
    ends, or `limit` s pass."""
    deadline = time.monotonic() + limit
    while run.poll() is None and time.monotonic() < deadline:
        with open(server.log_path, "rb") as log:
            log.seek(since)
            if b"/jobs" in log.read():
                return
        time.sleep(0.1)


def preprocess_command(host_port: str, *flags: str) -> list[str]:
    """`python -m pipelines.preprocess --source bigquery` reading from the emulator at HOST:PORT, plus `flags`."""
    return [
        sys.executable,
        "-m",
        "pipelines.preprocess",
        "--source",
        "bigquery",
        "--bigquery_emulator",
        host_port,
        *flags,
    ]


def run_with_dying_emulator(
    workdir: Path,
    args: Sequence[str] = (),
    kill_after: float | None = 2.0,
    rows: int = 300_000,
    limit: float = 180.0,
) -> DyingRun:
    """Start an emulator holding `rows` generated rides as taxifare.raw_all, run
    `python -m pipelines.preprocess --source bigquery` on it (plus `args`), SIGKILL the emulator
    `kill_after` s after the run's first job request and time the run's end. With
    `kill_after=None` the run gets a port where nothing listens. A run still going `limit` s
    after the kill is killed by its PID (returncode None). Loopback only; the emulator is
    stopped by its PID in every case.

        run = run_with_dying_emulator(Path(tmp), ["--read_method", "EXPORT"], kill_after=2)
        run.seconds, run.returncode, run.stderr_lines[-1]
    """
    from taxifare_core.generate import generate_rides

    workdir = Path(workdir)
    output = workdir / "out"
    server = None if kill_after is None else start(workdir / "emulator", log=lambda line: None)
    try:
        host_port = f"{DEFAULT_HOST}:{free_port()}" if server is None else server.host_port
        if server is not None:
            load_rides(host_port, generate_rides(rows, seed=11), f"{contract.BQ_DATASET}.raw_all")
            since = server.log_path.stat().st_size
        command = preprocess_command(
            host_port,
            "--data_size",
            "all",
            "--output",
            str(output),
            "--temp_location",
            str(workdir / "bq_tmp"),
            "--no_statistics",
            *args,
        )
        with open(workdir / "run.stderr", "w+") as stderr:
            run = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            if server is not None:
                _wait_for_request(server, since, run, limit)
                time.sleep(kill_after)
                os.kill(server.pid, signal.SIGKILL)
            killed = time.monotonic()
            returncode = wait_or_kill_group(run, limit)
            seconds = time.monotonic() - killed
            stderr.seek(0)
            lines = stderr.read().splitlines()
    finally:
        if server is not None:
            stop(server.pid)
    return DyingRun(seconds, returncode, lines, output)
