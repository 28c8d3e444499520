"""Point Apache Beam's BigQuery IO at a local BigQuery emulator, in this process (local runs and tests only).

Beam has no endpoint option for BigQuery, so this redirects the private names its
ReadFromBigQuery goes through (a Beam upgrade that moves them fails
tests/test_bigquery_emulator.py::test_beam_still_has_the_redirected_names):

- `BigQueryWrapper._bigquery_client` builds the REST client (jobs, tables, datasets) and
  `apache_beam.io.gcp.bigquery.bq_storage` gives the Storage Read API client (DIRECT_READ):
  both from pipelines.local.bigquery_clients, on the emulator, with its deadlines;
- `gce_metadata_util.fetch_dataflow_job_id` would ask the GCE metadata server.

Both clients go without credentials (plain HTTP, an insecure gRPC channel), and
Beam's credential cache (`apache_beam.internal.gcp.auth._Credentials`) is set to
"anonymous", as Beam sets it itself after ~20 s of failed lookups: nothing looks
for Application Default Credentials or waits for a login, and Beam's GCS client
connects anonymously, to the GCS emulator that STORAGE_EMULATOR_HOST names if any
(e.g. gcp-storage-emulator, which scripts/bigquery_emulator.py also runs). The redirect
lives in this process only: the pipeline must run in process (the DirectRunner or
FnApiRunner, not multi_processing), which `check_runs_in_process(options)` checks.
`python -m pipelines.preprocess --bigquery_emulator HOST:PORT` and the tests are its users;
this package is not shipped to Dataflow workers and no pipeline module imports it.

    from pipelines.local.bigquery_emulator import use_bigquery_emulator
    use_bigquery_emulator("127.0.0.1:9050")            # REST; Storage Read on port + 10
    use_bigquery_emulator("127.0.0.1:9050", grpc_port=9070, timeout=60)

scripts/bigquery_emulator.py starts such an emulator and loads rides into it.
"""

from __future__ import annotations

import functools
import os

import grpc
from apache_beam.internal.gcp import auth as beam_auth
from apache_beam.io.gcp import gce_metadata_util

from pipelines.local.bigquery_clients import CLIENT_FACTORIES, DEFAULT_TIMEOUT_S, bound_bigquery_calls
from pipelines.runners import LOCAL_RUNNERS

# `local-bigquery serve` listens for gRPC (Storage Read) on its REST port + 10 by default.
DEFAULT_GRPC_PORT_OFFSET = 10
REST_PATH = "/bigquery/v2/"
# What Google's own BigQueryReadGrpcTransport sets on its channel: no message size limit.
# gRPC's default (4 MB received) breaks DIRECT_READ once the emulator answers with bigger
# Arrow record batches (from ~100k rows).
GRPC_CHANNEL_OPTIONS = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
EMULATOR_HOST_ENV = "BIGQUERY_EMULATOR_HOST"
# Names this module replaces, for the guard test: (owner, attribute).
REDIRECTED_NAMES = (*CLIENT_FACTORIES, (gce_metadata_util, "fetch_dataflow_job_id"))
# Beam's process-wide credential cache, and its fields: looked up yet?, the credentials (None: anonymous).
CREDENTIAL_CACHE = beam_auth._Credentials
CREDENTIAL_FIELDS = ("_credentials_lock", "_credentials_init", "_credentials")


def check_runs_in_process(options) -> None:
    """ValueError (one line) unless these PipelineOptions run the pipeline in this process.

    Worker processes (multi_processing, Prism, Dataflow) would not see the redirect and
    would ask Google for credentials, then wait for an interactive login.
    """
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    runner = (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]
    if runner not in LOCAL_RUNNERS:
        raise ValueError(f"--bigquery_emulator needs an in-process local runner, not {runner}")
    if options.view_as(DirectOptions).direct_running_mode == "multi_processing":
        raise ValueError("--bigquery_emulator works in this process only: drop --direct_running_mode multi_processing")


def parse_host_port(host_port: str) -> tuple[str, int]:
    """'HOST:PORT' -> (host, port); ValueError with a clear message otherwise."""
    host, sep, port = host_port.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT for the BigQuery emulator, got {host_port!r}")
    return host, int(port)


def _no_dataflow_job_id() -> str:
    """Not on a Dataflow worker: the emulator's jobs get no beam_job_id label."""
    return ""


def _set_beam_credentials_anonymous() -> None:
    """Beam's credential cache: looked up, none (anonymous) from now on."""
    with CREDENTIAL_CACHE._credentials_lock:
        CREDENTIAL_CACHE._credentials_init = True
        CREDENTIAL_CACHE._credentials = None


def use_bigquery_emulator(host_port: str, grpc_port: int | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Send this process's Beam BigQuery reads to the emulator at host_port (REST), each call bounded by `timeout` s."""
    host, port = parse_host_port(host_port)
    grpc_port = grpc_port or port + DEFAULT_GRPC_PORT_OFFSET
    moved = [name for owner, name in REDIRECTED_NAMES if name not in owner.__dict__]
    moved += [name for name in CREDENTIAL_FIELDS if not hasattr(CREDENTIAL_CACHE, name)]
    if moved:
        raise RuntimeError(f"apache_beam moved {', '.join(moved)}: pipelines/local/bigquery_emulator.py must follow it")
    bound_bigquery_calls(
        timeout,
        rest_url=f"http://{host}:{port}{REST_PATH}",
        storage_channel=functools.partial(grpc.insecure_channel, f"{host}:{grpc_port}", options=GRPC_CHANNEL_OPTIONS),
    )
    gce_metadata_util.fetch_dataflow_job_id = _no_dataflow_job_id
    _set_beam_credentials_anonymous()
    # google-cloud-bigquery clients made elsewhere in this process follow too.
    os.environ[EMULATOR_HOST_ENV] = f"http://{host}:{port}"
