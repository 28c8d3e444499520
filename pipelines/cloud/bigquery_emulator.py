"""Point Apache Beam's BigQuery IO at a local BigQuery emulator, in this process.

Beam has no endpoint option for BigQuery, so this redirects the three private names
its ReadFromBigQuery goes through (a Beam upgrade that moves them fails
tests/test_bigquery_emulator.py::test_beam_still_has_the_redirected_names):

- `BigQueryWrapper._bigquery_client` builds the REST client (jobs, tables, datasets);
- `apache_beam.io.gcp.bigquery.bq_storage` gives the Storage Read API client (DIRECT_READ);
- `gce_metadata_util.fetch_dataflow_job_id` would ask the GCE metadata server.

Both clients go without credentials (plain HTTP, an insecure gRPC channel), and
Beam's credential cache (`apache_beam.internal.gcp.auth._Credentials`) is set to
"anonymous", as Beam sets it itself after ~20 s of failed lookups: nothing looks
for Application Default Credentials or waits for a login, and Beam's GCS client
connects anonymously, to the GCS emulator that STORAGE_EMULATOR_HOST names if any
(e.g. gcp-storage-emulator, which scripts/bigquery_emulator.py also runs). The redirect
lives in this process only: the pipeline must run in process (the DirectRunner or
FnApiRunner, not multi_processing), which `check_runs_in_process(options)` checks.
`python -m pipelines.preprocess --bigquery_emulator HOST:PORT` is its user.

    from pipelines.cloud.bigquery_emulator import use_bigquery_emulator
    use_bigquery_emulator("127.0.0.1:9050")            # REST; Storage Read on port + 10
    use_bigquery_emulator("127.0.0.1:9050", grpc_port=9070)
    stop_using_bigquery_emulator()                     # back to Google Cloud

scripts/bigquery_emulator.py starts such an emulator and loads rides into it.
"""
from __future__ import annotations

import functools
import os
import types

import grpc
from apache_beam.internal.gcp import auth as beam_auth
from apache_beam.internal.http_client import get_new_http
from apache_beam.io.gcp import bigquery as beam_bigquery
from apache_beam.io.gcp import bigquery_tools, gce_metadata_util
from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api

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
REDIRECTED_NAMES = (
    (bigquery_tools.BigQueryWrapper, "_bigquery_client"),
    (beam_bigquery, "bq_storage"),
    (gce_metadata_util, "fetch_dataflow_job_id"),
)
# Beam's process-wide credential cache, and its fields: looked up yet?, the credentials (None: anonymous).
CREDENTIAL_CACHE = beam_auth._Credentials
CREDENTIAL_FIELDS = ("_credentials_lock", "_credentials_init", "_credentials")
# What they were before any redirect, for stop_using_bigquery_emulator.
_ORIGINALS = {(owner, name): owner.__dict__.get(name) for owner, name in REDIRECTED_NAMES}


# Runners that execute the pipeline in this process (where the redirect lives).


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


def _rest_client(base_url: str, pipeline_options=None):
    """Beam's apitools BigQuery client, talking to the emulator."""
    # No credentials at all: apitools then sends plain requests, as the emulator expects.
    return bigquery_api.BigqueryV2(
        url=base_url, http=get_new_http(), get_credentials=False, response_encoding="utf8"
    )


def _storage_module(grpc_target: str) -> types.ModuleType:
    """A stand-in for google.cloud.bigquery_storage_v1 whose read client uses an insecure channel
    with Google's message limits (GRPC_CHANNEL_OPTIONS)."""
    import google.cloud.bigquery_storage_v1 as bq_storage
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    def read_client(**kwargs):
        transport = BigQueryReadGrpcTransport(channel=grpc.insecure_channel(grpc_target, options=GRPC_CHANNEL_OPTIONS))
        return bq_storage.BigQueryReadClient(transport=transport, **kwargs)

    module = types.ModuleType(f"{bq_storage.__name__}_emulator")
    module.__dict__.update(bq_storage.__dict__)
    module.BigQueryReadClient = read_client
    return module


def _no_dataflow_job_id() -> str:
    """Not on a Dataflow worker: the emulator's jobs get no beam_job_id label."""
    return ""


def _set_beam_credentials(looked_up: bool) -> None:
    """Empty Beam's credential cache: anonymous from now on (looked_up) or looked up again on next use."""
    with CREDENTIAL_CACHE._credentials_lock:
        CREDENTIAL_CACHE._credentials_init = looked_up
        CREDENTIAL_CACHE._credentials = None


def use_bigquery_emulator(host_port: str, grpc_port: int | None = None) -> None:
    """Send this process's Beam BigQuery reads to the emulator at host_port (REST)."""
    host, port = parse_host_port(host_port)
    grpc_port = grpc_port or port + DEFAULT_GRPC_PORT_OFFSET
    moved = [name for (owner, name), original in _ORIGINALS.items() if original is None]
    moved += [name for name in CREDENTIAL_FIELDS if not hasattr(CREDENTIAL_CACHE, name)]
    if moved:
        raise RuntimeError(f"apache_beam moved {', '.join(moved)}: pipelines/cloud/bigquery_emulator.py must follow it")
    base_url = f"http://{host}:{port}{REST_PATH}"
    bigquery_tools.BigQueryWrapper._bigquery_client = staticmethod(
        functools.partial(_rest_client, base_url)
    )
    beam_bigquery.bq_storage = _storage_module(f"{host}:{grpc_port}")
    gce_metadata_util.fetch_dataflow_job_id = _no_dataflow_job_id
    _set_beam_credentials(looked_up=True)
    # google-cloud-bigquery clients made elsewhere in this process follow too.
    os.environ[EMULATOR_HOST_ENV] = f"http://{host}:{port}"


def stop_using_bigquery_emulator() -> None:
    """Undo use_bigquery_emulator: Beam talks to Google Cloud again."""
    for (owner, name), original in _ORIGINALS.items():
        if original is not None:
            setattr(owner, name, original)
    _set_beam_credentials(looked_up=False)
    os.environ.pop(EMULATOR_HOST_ENV, None)
