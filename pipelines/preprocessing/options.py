"""Command-line flags of `python -m pipelines.preprocess`, parsed once, as Beam's own examples (wordcount) do.

`flag_parser()` declares this pipeline's flags; `parse_known_args` takes them and every
other flag (`--runner`, `--direct_num_workers`, `--project`, `--temp_location`, ...) goes to
Beam's `PipelineOptions`. `resolve_config` validates both strictly and returns a `PreprocessConfig`:

    flags, options = parse_args(argv)            # --help; a bad value of ours: one line, exit 2
    check_beam_flags(options, vars(flags))       # a flag nobody knows: UsageError (Beam would only log it)
    config = resolve_config(flags, options)      # raises UsageError with one clear line
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import os
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import PurePosixPath

from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
)

from pipelines.cli import OneLineErrorParser, UsageError
from pipelines.preprocessing.bigquery import (
    QueryError,
    add_local_run_flags,
    build_query,
    parse_date,
    table_name,
)
from pipelines.preprocessing.clean import DEDUPE_MODES
from pipelines.preprocessing.sources import DEFAULT_BLOCK_ROWS
from pipelines.run_statistics import resolve_reference
from pipelines.runners import DEFAULT_RUNNER, pipeline_options
from taxifare_core import contract
from taxifare_core.stats_file import StatsError

SOURCES = ("csv", "bigquery")
READ_METHODS = ("DIRECT_READ", "EXPORT")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_DEDUPE = "batch"

BEAM_FLAGS_HELP = """\
Beam flags pass through, for example:
  --runner NAME          DirectRunner-compatible local engine by default (FnApiRunner,
                         in process, works offline); DataflowRunner for Google Cloud
  --direct_num_workers N --direct_running_mode multi_processing
                         run the local engine in N worker processes
  --project ID           GCP project billed for BigQuery reads (required with --source bigquery)
  --temp_location gs://BUCKET/tmp
                         staging area (required by --read_method EXPORT and by Dataflow)
  --region REGION        Dataflow region
Counts, timings and the output folder are printed at the end and saved in OUTPUT/summary.json."""


def add_preprocess_flags(parser: argparse.ArgumentParser) -> None:
    """This pipeline's flags (the rest are Beam's)."""
    parser.add_argument("--source", choices=SOURCES, default="csv", help="where raw rides come from (default: csv)")
    parser.add_argument(
        "--input",
        default=None,
        help="with --source csv: a file or glob of CSVs with a header (local or gs://); "
        "default: the embedded generated sample (100k rows, made once)",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="output folder (local or gs://); default: "
        "$LOCAL_DATA_PATH/processed/processed_{min_date}_{max_date}_{size}",
    )
    parser.add_argument(
        "--data_size",
        default=None,
        help=f"with --source bigquery: the table, one of {', '.join(contract.DATA_SIZES)} "
        f"(default {contract.DEFAULT_DATA_SIZE}); with --source csv: only the {{size}} "
        "label of the default output folder (default: the input folder's name and a "
        "6-digit hash of the input pattern)",
    )
    parser.add_argument(
        "--min_date",
        default=contract.DEFAULT_MIN_DATE,
        help=f"first pickup date kept, YYYY-MM-DD, inclusive (default {contract.DEFAULT_MIN_DATE}); "
        "CSV rows outside the window are counted as outside_date_range",
    )
    parser.add_argument(
        "--max_date",
        default=contract.DEFAULT_MAX_DATE,
        help="last pickup date kept, YYYY-MM-DD; as BigQuery's BETWEEN, it means midnight UTC, "
        f"so only rides at exactly 00:00:00 of that day are kept (default {contract.DEFAULT_MAX_DATE})",
    )
    parser.add_argument(
        "--val_start",
        default=None,
        help="rides picked up from this date (midnight UTC) on go to val, earlier ones to train; "
        "default: one month before --max_date",
    )
    parser.add_argument(
        "--dedupe",
        choices=DEDUPE_MODES,
        default=DEFAULT_DEDUPE,
        help="exact duplicates: 'batch' removes them within each block of --block_rows rows "
        "(flat memory, the origin course's chunked approach; default), 'global' across the "
        "whole input (a shuffle: exact, but local memory grows ~0.5 GB per million rows), "
        "'none' keeps them",
    )
    parser.add_argument(
        "--shard_format",
        choices=("csv", "parquet"),
        default="csv",
        help="file format of the train and val shards: csv (default, 66 columns, no header) or parquet "
        "(the same values, one row group per batch: smaller and faster for the trainer to read); "
        "readers find either through OUTPUT/summary.json, so OUTPUT/train-*.csv names them both",
    )
    parser.add_argument(
        "--num_shards",
        type=int,
        default=0,
        help="shards per output (train, val, errors); 0 lets the runner decide (default). "
        "A fixed count makes the local runners hold the output in memory",
    )
    parser.add_argument(
        "--block_rows",
        type=int,
        default=DEFAULT_BLOCK_ROWS,
        help=f"rows per batch: the unit of vectorized work and of --dedupe batch (default {DEFAULT_BLOCK_ROWS:,})",
    )
    parser.add_argument(
        "--bq_project",
        default=contract.BQ_PROJECT,
        help=f"project holding the raw tables (default {contract.BQ_PROJECT})",
    )
    parser.add_argument(
        "--bq_dataset",
        default=contract.BQ_DATASET,
        help=f"dataset holding the raw tables (default {contract.BQ_DATASET})",
    )
    parser.add_argument(
        "--read_method",
        choices=READ_METHODS,
        default="DIRECT_READ",
        help="BigQuery read: DIRECT_READ (Storage Read API, default) or EXPORT (needs --temp_location)",
    )
    add_local_run_flags(parser)  # --bigquery_timeout, --bigquery_emulator: local runs only, never Beam's
    parser.add_argument(
        "--compare_to",
        default=None,
        metavar="REF",
        help="score drift of this run's kept rows against an earlier run: its output folder or its "
        "stats.json (local or gs://); default: val is scored against train",
    )
    parser.add_argument(
        "--fail_on_drift",
        action="store_true",
        default=False,
        help="when a feature drifts (population stability index > 0.2): do not publish the run (its files "
        "and report stay in OUTPUT/run-<id>/ for inspection, summary.json keeps naming the previous "
        "run) and exit with code 3",
    )
    parser.add_argument(
        "--no_statistics",
        action="store_true",
        default=False,
        help="skip the feature statistics, stats.json and report.html (for benchmarks)",
    )
    parser.add_argument(
        "--allow_empty",
        action="store_true",
        default=False,
        help="publish the output even when no train or val row is left (default: such a run "
        "fails with exit code 1 and its files stay unpublished in OUTPUT/run-<id>/ for inspection)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        default=False,
        help="write into a non-empty --output that holds no output of this project: the run is written "
        "beside those files, which are never removed (default: such a folder is refused, exit code 2)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        default=False,
        help="no progress line (default on local runs: one at least every 10 s on stderr, with bytes of the "
        "input read, rate and ETA)",
    )
    parser.add_argument(
        "--log_level",
        choices=LOG_LEVELS,
        default=None,
        help="Python logging level, Beam's included (default: Beam quiet on local runs); "
        "DEBUG also prints the traceback behind a one-line error such as a failed BigQuery read",
    )


@dataclass(frozen=True)
class PreprocessConfig:
    """Validated settings of one run (JSON-friendly: strings and ints only)."""

    source: str
    input: str | None
    query: str | None
    table: str | None
    output: str
    data_size: str
    min_date: str
    max_date: str
    val_start: str
    dedupe: str
    num_shards: int
    block_rows: int
    read_method: str
    bigquery_emulator: str | None
    runner: str
    compare_to: str | None = None
    fail_on_drift: bool = False
    statistics: bool = True
    allow_empty: bool = False
    force: bool = False
    shard_format: str = "csv"

    def to_dict(self) -> dict:
        """The config as a plain dict."""
        return asdict(self)


def flag_parser(prog: str = "python -m pipelines.preprocess") -> argparse.ArgumentParser:
    """The parser of this pipeline's flags, behind --help (Beam's flags are listed in its epilog)."""
    parser = OneLineErrorParser(
        prog=prog,
        description="Beam batch pipeline: raw taxi rides (CSV or BigQuery) -> clean -> 65 features "
        "-> sharded processed CSVs (OUTPUT/train-*.csv, OUTPUT/val-*.csv), "
        "the dead letter (OUTPUT/errors-*.jsonl), OUTPUT/summary.json, the feature "
        "statistics with drift (OUTPUT/stats.json) and a report (OUTPUT/report.html). The files are "
        "written to OUTPUT/run-<id>/ and published by summary.json, written last: a failed "
        "or killed run leaves the previous output as it was. Exit codes: 0 done, "
        "1 no rows written (see --allow_empty) or counts not adding up, 2 bad flag or path, "
        "or OUTPUT being written by another run, 3 drift flagged with --fail_on_drift (not published).",
        epilog=BEAM_FLAGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # No prefix matching: `--out` must not pass for --output, nor a Beam flag's prefix for one of ours.
        allow_abbrev=False,
    )
    add_preprocess_flags(parser)
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, PipelineOptions]:
    """(this pipeline's flags, Beam's options from the rest): one parse each, as Beam's wordcount does.

    --help prints and exits 0; a bad value of one of ours prints one line and exits 2.
    """
    flags, beam_args = flag_parser().parse_known_args(argv)
    return flags, pipeline_options(beam_args)


def one_month_before(day: date) -> date:
    """The same day one calendar month earlier (clamped to the month's length)."""
    year, month = (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _folder_safe(label: str) -> str:
    """A label usable in a folder name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label) or "csv"


def _csv_size_label(pattern: str) -> str:
    """The {size} label of a CSV input: the name of the folder holding the files, and a hash of the pattern.

    The hash (6 hex digits of the absolute pattern) keeps x1/data/*.csv and
    x2/data/*.csv from sharing a default output folder.
    """
    parts = PurePosixPath(pattern.replace("\\", "/")).parts
    folders = [part for part in parts[:-1] if not any(ch in part for ch in "*?[")]
    name = _folder_safe(folders[-1] if folders else PurePosixPath(parts[-1]).stem)
    absolute = pattern if "://" in pattern else os.path.abspath(os.path.expanduser(pattern))
    return f"{name}-{hashlib.sha256(absolute.encode()).hexdigest()[:6]}"


def absolute_path(path: str | None) -> str | None:
    """A local path made absolute: workers resolve a relative one against their own folder, not the submitter's."""
    if path is None or "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def resolve_config(flags: argparse.Namespace, options: PipelineOptions, default_input=None) -> PreprocessConfig:
    """Validate this pipeline's flags (and the Beam options they depend on), fill defaults; UsageError (one line).

    `flags` and `options` come from `parse_args`. `default_input` is called for the CSV input
    when --input is absent (it makes the embedded sample).
    """
    cloud = options.view_as(GoogleCloudOptions)
    try:
        low = parse_date(flags.min_date, "--min_date")
        high = parse_date(flags.max_date, "--max_date")
        val_start = parse_date(flags.val_start, "--val_start") if flags.val_start else one_month_before(high)
    except QueryError as error:
        raise UsageError(str(error)) from None
    if low > high:
        raise UsageError(f"--min_date {low} is after --max_date {high}")
    if flags.val_start and not low <= val_start <= high:
        raise UsageError(f"--val_start {val_start} is outside the window {low} .. {high}")
    if flags.num_shards < 0:
        raise UsageError(f"--num_shards must be 0 (runner decides) or more, got {flags.num_shards}")
    if flags.block_rows < 1:
        raise UsageError(f"--block_rows must be at least 1, got {flags.block_rows}")
    runner = options.view_as(StandardOptions).runner or DEFAULT_RUNNER
    if flags.compare_to:
        if flags.no_statistics:
            raise UsageError("--compare_to needs the statistics: drop --no_statistics")
        try:
            resolve_reference(flags.compare_to)
        except StatsError as error:
            raise UsageError(str(error)) from None

    query = table = pattern = None
    if flags.source == "bigquery":
        data_size = flags.data_size or contract.DEFAULT_DATA_SIZE
        try:
            query = build_query(data_size, flags.min_date, flags.max_date, flags.bq_project, flags.bq_dataset)
        except QueryError as error:
            raise UsageError(str(error)) from None
        table = table_name(data_size, flags.bq_project, flags.bq_dataset)
        if not flags.bigquery_emulator:
            if not cloud.project:
                raise UsageError(
                    "--source bigquery needs the GCP project to bill: pass --project YOUR_PROJECT "
                    "(or --source csv --input FILES to run offline)"
                )
            if flags.read_method == "EXPORT" and not (cloud.temp_location or "").startswith("gs://"):
                raise UsageError("--read_method EXPORT needs --temp_location gs://BUCKET/PATH")
        if flags.input:
            raise UsageError("--input is for --source csv; --source bigquery reads the query's table")
    else:
        pattern = flags.input or (default_input() if default_input else None)
        if not pattern:
            raise UsageError("--source csv needs --input FILES")
        if flags.data_size:
            data_size = _folder_safe(flags.data_size)
        elif not flags.input:
            # The embedded sample keeps its documented folder name (its own name is unique).
            data_size = _folder_safe(PurePosixPath(pattern.replace("\\", "/")).parts[-2])
        else:
            data_size = _csv_size_label(pattern)
    output = flags.output or str(
        contract.local_data_path()
        / "processed"
        / contract.processed_dir_name(low.isoformat(), high.isoformat(), data_size)
    )
    return PreprocessConfig(
        source=flags.source,
        input=absolute_path(pattern),
        query=query,
        table=table,
        output=absolute_path(output).rstrip("/") or "/",
        data_size=data_size,
        min_date=low.isoformat(),
        max_date=high.isoformat(),
        val_start=val_start.isoformat(),
        dedupe=flags.dedupe,
        num_shards=flags.num_shards,
        block_rows=flags.block_rows,
        read_method=flags.read_method,
        bigquery_emulator=flags.bigquery_emulator,
        runner=runner,
        compare_to=flags.compare_to,
        fail_on_drift=flags.fail_on_drift,
        statistics=not flags.no_statistics,
        allow_empty=bool(flags.allow_empty),
        force=bool(flags.force),
        shard_format=flags.shard_format,
    )
