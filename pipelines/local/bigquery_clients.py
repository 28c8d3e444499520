"""Deadlines on the BigQuery calls Beam's ReadFromBigQuery makes in this process (local runs).

Beam has no setting for them. Its REST client (query and export jobs, tables, datasets)
retries a refused connection through apitools 5 times with waits up to 60 s, under Beam's
own retries; its Storage Read client keeps Google's defaults: `create_read_session` is
retried for 600 s and `read_rows` for 86,400 s. Measured: with the emulator killed 5 s into a
DIRECT_READ run, the run was still waiting 60 s later (EXPORT ended after ~150 s, no
emulator at all after ~140 s), holding the output folder's lock. Beam's own `timeout`
argument bounds one read attempt, not the retries: a `read_rows` on a closed port with
timeout=5 had not returned after 100 s.

`bound_bigquery_calls(seconds)` replaces the two factories Beam builds its clients with
(`BigQueryWrapper._bigquery_client`, `apache_beam.io.gcp.bigquery.bq_storage`; a Beam upgrade
that moves them fails tests/test_bigquery_emulator.py::test_beam_still_has_the_redirected_names):

- REST: `seconds` per HTTP request, and no apitools retry under Beam's own (3 retries after
  waits of 5, 10 and 20 s, each fuzzed to 50-100%: a refused connection ends a call within
  BEAM_REST_RETRY_S = 35 s, whatever `seconds` is); once requests have failed for `seconds`,
  every later one fails at once, not retried (`_Breaker`), so Beam's clean-up calls after a
  failed read do not add their own retries;
- Storage Read: `create_read_session` gets `timeout=seconds` and both it and `read_rows`
  (each reconnect of a broken stream included) a retry that gives up after `seconds`. A
  stream that keeps sending rows is not cut: a large table may take longer to read.

The hooks live in this process: the in-process local runners (FnApiRunner, DirectRunner
in_memory or multi_threading). Worker processes (multi_processing, Dataflow) keep Beam's
defaults; Dataflow retries and fails a stuck work item itself.

    from pipelines.local.bigquery_clients import bound_bigquery_calls
    bound_bigquery_calls(30)                                   # Google Cloud, 30 s a call
    bound_bigquery_calls(30, rest_url="http://127.0.0.1:9050/bigquery/v2/",
                         storage_channel=lambda: grpc.insecure_channel("127.0.0.1:9060"))   # an emulator
"""

from __future__ import annotations

import functools
import threading
import time
import types

import apache_beam
from apache_beam.internal.gcp import auth as beam_auth
from apache_beam.internal.http_client import get_new_http
from apache_beam.io.gcp import bigquery as beam_bigquery
from apache_beam.io.gcp import bigquery_tools
from apache_beam.io.gcp.internal.clients import bigquery as bigquery_api
from apache_beam.utils.retry import PermanentException
from google.auth.exceptions import DefaultCredentialsError
from httplib2 import HttpLib2Error

from pipelines.preprocessing.bigquery import CREDENTIALS_HINT, DEFAULT_TIMEOUT_S

# apitools' retries of one REST request (its default is 5, waiting 2**n s up to 60 s between):
# none, Beam's own retries (bigquery_tools.MAX_RETRIES) are enough.
REST_RETRIES = 0
# The longest Beam's retries of a REST call wait in all: 5 + 10 + 20 s.
BEAM_REST_RETRY_S = 35.0
REST_MAX_RETRY_WAIT_S = 5
# Beam's two client factories this module replaces, for the guard test: (owner, attribute).
CLIENT_FACTORIES = (
    (bigquery_tools.BigQueryWrapper, "_bigquery_client"),
    (beam_bigquery, "bq_storage"),
)
_ORIGINAL_STORAGE = beam_bigquery.bq_storage


class BigQueryUnreachableError(PermanentException, ConnectionError):
    """BigQuery's REST endpoint failed every request for longer than the deadline: not retried by Beam."""


class _Breaker:
    """The time since this process's REST requests started failing (reset by any success).

    Beam retries each REST call after waits of 5, 10 and 20 s, and after a failed read it still
    makes its clean-up calls (temporary dataset, jobs), each retried the same way: with the server
    gone, those retries added up to 133 s on a loaded machine for a 10 s deadline. Once requests
    have failed for longer than the deadline, every later request fails at once, as a
    PermanentException Beam does not retry.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._since: float | None = None
        self._lock = threading.Lock()

    def open_for(self) -> float | None:
        """Seconds requests have been failing, when that is past the deadline; else None."""
        with self._lock:
            if self._since is None:
                return None
            failing = time.monotonic() - self._since
            return failing if failing >= self.seconds else None

    def failed(self) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()

    def succeeded(self) -> None:
        with self._lock:
            self._since = None


_breaker: _Breaker | None = None


def _guarded_http(timeout: float):
    """Beam's HTTP object for apitools, with `timeout` per request and the process's breaker."""
    http = get_new_http(timeout_secs=timeout)
    breaker = _breaker
    if breaker is None:
        return http
    request = http.request

    def guarded_request(*args, **kwargs):
        failing = breaker.open_for()
        if failing is not None:
            raise BigQueryUnreachableError(f"BigQuery has not answered for {failing:.0f} s (--bigquery_timeout)")
        try:
            response = request(*args, **kwargs)
        except (OSError, HttpLib2Error) as error:  # refused, reset, timed out, name not found
            breaker.failed()
            failing = breaker.open_for()
            if failing is not None:
                raise BigQueryUnreachableError(f"BigQuery has not answered for {failing:.0f} s: {error}") from error
            raise
        breaker.succeeded()
        return response

    http.request = guarded_request
    return http


def _rest_client(timeout: float, url: str | None, pipeline_options=None):
    """Beam's apitools BigQuery client, as Beam builds it, with a deadline per request and few retries;
    on `url` (an emulator) without credentials; DefaultCredentialsError, never a browser login, when
    Google's credentials are missing."""
    if url:
        client = bigquery_api.BigqueryV2(
            url=url, http=_guarded_http(timeout), get_credentials=False, response_encoding="utf8"
        )
    else:
        credentials = beam_auth.get_service_credentials(pipeline_options)
        if credentials is None:
            # apitools would start an interactive browser login (a listener on :8080, ~/.apitools.token).
            raise DefaultCredentialsError(CREDENTIALS_HINT)
        client = bigquery_api.BigqueryV2(
            http=_guarded_http(timeout),
            credentials=credentials,
            response_encoding="utf8",
            additional_http_headers={"user-agent": f"apache-beam-{apache_beam.__version__}"},
        )
    client.num_retries = REST_RETRIES
    client.max_retry_wait = REST_MAX_RETRY_WAIT_S
    return client


def bounded_retry(timeout: float):
    """Google's retry of transient gRPC errors (unavailable, a broken stream), giving up after `timeout` s."""
    from google.api_core import exceptions, retry

    transient = retry.if_exception_type(exceptions.ServiceUnavailable, exceptions.Unknown)
    return retry.Retry(initial=0.2, maximum=5.0, multiplier=1.5, predicate=transient, timeout=timeout)


def _storage_module(timeout: float, channel=None) -> types.ModuleType:
    """A stand-in for google.cloud.bigquery_storage_v1 whose read client bounds its calls by `timeout`
    (on a new `channel()`, an emulator's, when given)."""
    from google.api_core.gapic_v1.method import DEFAULT

    bq_storage = _ORIGINAL_STORAGE
    limit = timeout  # the methods' own `timeout` argument shadows the name

    class BoundedReadClient(bq_storage.BigQueryReadClient):
        """BigQueryReadClient whose calls give up after `timeout` s of failures."""

        def create_read_session(self, *args, retry=DEFAULT, timeout=DEFAULT, **kwargs):
            return super().create_read_session(
                *args,
                retry=bounded_retry(limit) if retry is DEFAULT else retry,
                timeout=limit if timeout is DEFAULT else timeout,
                **kwargs,
            )

        def read_rows(self, *args, retry=DEFAULT, **kwargs):
            # No overall timeout: a long stream that keeps sending is fine; its reconnects are bounded.
            return super().read_rows(*args, retry=bounded_retry(limit) if retry is DEFAULT else retry, **kwargs)

    def read_client(**kwargs):
        if channel is not None:
            from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
                BigQueryReadGrpcTransport,
            )

            kwargs["transport"] = BigQueryReadGrpcTransport(channel=channel())
        return BoundedReadClient(**kwargs)

    module = types.ModuleType(f"{bq_storage.__name__}_bounded")
    module.__dict__.update(bq_storage.__dict__)
    module.BigQueryReadClient = read_client
    return module


def check_beam_names() -> None:
    """RuntimeError when a Beam upgrade moved the factories this module replaces."""
    moved = [name for owner, name in CLIENT_FACTORIES if name not in owner.__dict__]
    if moved:
        raise RuntimeError(f"apache_beam moved {', '.join(moved)}: pipelines/local/bigquery_clients.py must follow it")


def bound_bigquery_calls(timeout: float = DEFAULT_TIMEOUT_S, rest_url: str | None = None, storage_channel=None) -> None:
    """Make this process's Beam BigQuery clients give up after `timeout` s (see the module's docstring);
    on an emulator: REST at `rest_url`, without credentials, and Storage Read on `storage_channel()`."""
    if not timeout > 0:
        raise ValueError(f"the BigQuery timeout must be positive, got {timeout}")
    check_beam_names()
    global _breaker
    _breaker = _Breaker(timeout)
    bigquery_tools.BigQueryWrapper._bigquery_client = staticmethod(functools.partial(_rest_client, timeout, rest_url))
    beam_bigquery.bq_storage = _storage_module(timeout, storage_channel)
