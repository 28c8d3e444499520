"""BigQuery as a source: the contract's query built from validated values, the read, its
credentials checked first, and its failures in one line.

    build_query("all", "2009-01-01", "2015-01-01")     # the contract's SQL
    check_credentials()                                 # BigQueryError naming `gcloud auth ...` without them
    pipeline | READ_BIGQUERY_LABEL >> read_from_bigquery(query, "DIRECT_READ", project, temp_location)
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import date

from taxifare_core import contract

_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


# GCP project ids (optionally domain-scoped) and BigQuery dataset names.
_PROJECT_PATTERN = re.compile(r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")


_DATASET_PATTERN = re.compile(r"[A-Za-z0-9_]{1,1024}")


class QueryError(ValueError):
    """A query parameter that is not allowed (bad date, size, project or dataset)."""


class BigQueryError(RuntimeError):
    """BigQuery cannot be used from here (no credentials): one line, exit 1."""


CREDENTIALS_HINT = (
    "--source bigquery needs Google credentials: run `gcloud auth application-default login` "
    "(or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file)"
)


def check_credentials() -> None:
    """BigQueryError (one line naming `gcloud auth application-default login`) unless Google's
    Application Default Credentials are found. Asked before the pipeline is built: without them,
    Beam's REST client would fall back to an interactive browser login that waits forever."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise BigQueryError(CREDENTIALS_HINT) from None


# Flags of a BigQuery run in this process, read by the command line and never handed to Beam:
# a Dataflow job never sees them (its workers keep Beam's own clients).
DEFAULT_TIMEOUT_S = 30.0


def _timeout(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_local_run_flags(parser: argparse.ArgumentParser) -> None:
    """--bigquery_timeout and --bigquery_emulator, on `parser`."""
    parser.add_argument(
        "--bigquery_timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up a BigQuery call (query or export job, read session, stream) after this many seconds "
        f"of failures, then stop with one line and exit 1 (default {DEFAULT_TIMEOUT_S:g}; local runs)",
    )
    parser.add_argument(
        "--bigquery_emulator",
        default=None,
        metavar="HOST:PORT",
        help="read BigQuery from a local emulator, e.g. 127.0.0.1:9050 (testing; in-process runners only)",
    )


def parse_date(text: str, flag: str = "date") -> date:
    """A strict YYYY-MM-DD date; QueryError otherwise."""
    if not isinstance(text, str) or not _DATE_PATTERN.fullmatch(text):
        raise QueryError(f"{flag} must be a date as YYYY-MM-DD, got {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{flag} is not a real date: {text!r}") from None


def build_query(
    data_size: str,
    min_date: str,
    max_date: str,
    project: str = contract.BQ_PROJECT,
    dataset: str = contract.BQ_DATASET,
) -> str:
    """The contract's query for one table size and date window; every part validated first.

    Only re-formatted, validated values reach the SQL text: dates are parsed and
    written back with `isoformat()`, the size comes from contract.DATA_SIZES.
    """
    if data_size not in contract.DATA_SIZES:
        raise QueryError(f"data size must be one of {', '.join(contract.DATA_SIZES)}, got {data_size!r}")
    low, high = parse_date(min_date, "min_date"), parse_date(max_date, "max_date")
    if low > high:
        raise QueryError(f"min_date {low} is after max_date {high}")
    if not isinstance(project, str) or not _PROJECT_PATTERN.fullmatch(project):
        raise QueryError(f"not a valid GCP project id: {project!r}")
    if not isinstance(dataset, str) or not _DATASET_PATTERN.fullmatch(dataset):
        raise QueryError(f"not a valid BigQuery dataset name: {dataset!r}")
    return contract.QUERY_TEMPLATE.format(
        columns=", ".join(contract.RAW_COLUMNS),
        project=project,
        dataset=dataset,
        data_size=contract.DATA_SIZES[contract.DATA_SIZES.index(data_size)],
        min_date=low.isoformat(),
        max_date=high.isoformat(),
    )


def table_name(data_size: str, project: str = contract.BQ_PROJECT, dataset: str = contract.BQ_DATASET) -> str:
    """The raw table a query reads, for reports: project.dataset.raw_SIZE."""
    return f"{project}.{dataset}.raw_{data_size}"


# The label of the BigQuery read in the preprocessing graph; runners name it in their errors.
READ_BIGQUERY_LABEL = "ReadBigQuery"


_WHILE_RUNNING = re.compile(r"\s*\[while running '[^']*'\]\s*$")


_HTTP_ERROR_CONTENT = re.compile(r"content <(\{.*\})>", re.DOTALL)


_MAX_REASON_CHARS = 400


def _is_google_error(error: BaseException) -> bool:
    """True for the errors Google's clients raise (REST, gRPC, auth), by their module."""
    module = type(error).__module__ or ""
    return module.startswith(("apitools.", "google.api_core", "google.auth", "grpc"))


def _error_chain(error: BaseException):
    """The error, then its causes and contexts."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def bigquery_read_failure(error: BaseException, table: str, read_method: str) -> str | None:
    """One line saying that reading `table` with `read_method` failed and why, when `error` comes
    from the BigQuery read (its step named in the runner's message, or a Google client error in its
    chain); None for any other error, which the caller re-raises.

        >>> bigquery_read_failure(RuntimeError("ConnectionRefusedError: [Errno 111] Connection refused "
        ...     "[while running 'ReadBigQuery/Read/SDFBoundedSourceReader']"), "p.d.raw_1k", "EXPORT")
        'reading BigQuery table p.d.raw_1k (EXPORT) failed: ConnectionRefusedError: [Errno 111] Connection refused'
    """
    chain = list(_error_chain(error))
    from_read = any(f"'{READ_BIGQUERY_LABEL}/" in str(e) for e in chain) or any(map(_is_google_error, chain))
    if not from_read:
        return None
    text = str(error)
    content = _HTTP_ERROR_CONTENT.search(text)
    reason = None
    if content:  # apitools' HttpError: BigQuery's own message is in the JSON body
        try:
            reason = json.loads(content.group(1))["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = None
    if reason is None:
        lines = [line.strip() for line in _WHILE_RUNNING.sub("", text).splitlines() if line.strip()]
        reason = lines[0] if lines else type(error).__name__
    if len(reason) > _MAX_REASON_CHARS:
        reason = reason[:_MAX_REASON_CHARS] + "..."
    return f"reading BigQuery table {table} ({read_method}) failed: {reason}"


def read_from_bigquery(query: str, read_method: str, project: str | None, temp_location: str | None):
    """Beam's BigQuery read of `query` (rows as dicts; TIMESTAMP as datetime). Its calls are bounded
    in time by pipelines.local.bigquery_clients, which the command line installs for local runs."""
    from apache_beam.io.gcp.bigquery import ReadFromBigQuery

    kwargs = {"gcs_location": temp_location} if read_method == "EXPORT" and temp_location else {}
    return ReadFromBigQuery(
        query=query,
        use_standard_sql=True,
        method=getattr(ReadFromBigQuery.Method, read_method),
        project=project,
        **kwargs,
    )
