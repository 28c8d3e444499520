"""The BigQuery emulator (`local-bigquery`, on DuckDB): start it, and load rides into a table.

The REST API listens on PORT and the Storage Read API (gRPC) on PORT + 10, the
convention pipelines.cloud.bigquery_emulator follows.
"""
from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

from emulators.processes import DEFAULT_HOST, READY_TIMEOUT_S, Emulator, EmulatorError, free_port, launch
from emulators.python_env import ensure_venv
from pipelines.cloud.bigquery_emulator import DEFAULT_GRPC_PORT_OFFSET, parse_host_port
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
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": f"http://{host}:{port}"})


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
