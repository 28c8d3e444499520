"""The preprocessing pipeline: its graph (`build_preprocess`) and one crash-safe run (`run`).

`build_preprocess(pipeline_or_rows, config)` builds the graph and returns its
PCollections, so tests can feed `beam.Create` rows in place of the source;
`run(options, config)` writes OUTPUT/run-<id>/ and publishes it with OUTPUT/summary.json
(`taxifare_core.storage.outputs`). The command line is `pipelines.preprocess`.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import time

import apache_beam as beam
import pandas as pd
import pyarrow as pa
from apache_beam.io.parquetio import WriteToParquetBatched
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from pipelines import progress
from pipelines.cloud import dataflow
from pipelines.preprocessing.bigquery import READ_BIGQUERY_LABEL, read_from_bigquery
from pipelines.preprocessing.bigquery_rows import ParseRecordBatches
from pipelines.preprocessing.clean import CleanRides, FilterDateWindowFn
from pipelines.preprocessing.encode import EncodeRides, FormatCsvLines, SplitTrainVal
from pipelines.preprocessing.options import PreprocessConfig, UsageError, flag_parser, resolve_config
from pipelines.preprocessing.parse import ParseCsvBlocks
from pipelines.preprocessing.sources import ReadCsvBlocks, check_inputs, input_bytes
from pipelines.preprocessing.statistics import STATS_PARTS, ComputeStatistics, write_text_file
from pipelines.preprocessing.summary import (
    SUMMARY_FILE,
    MetricsUnavailableError,
    build_summary,
    counters_from_result,
    stages_from_result,
    write_summary,
)
from pipelines.preprocessing.tags import (
    DEAD_LETTER,
    RAW,
    RIDES,
    TRAIN,
    TRAIN_BATCHES,
    VAL,
    VAL_BATCHES,
)
from pipelines.run_statistics import REPORT_FILE, publish_statistics, resolve_reference
from pipelines.runners import LOCAL_RUNNERS
from taxifare_core import contract, storage
from taxifare_core.shard_format import PARQUET_SCHEMA, SUFFIXES, processed_table
from taxifare_core.stats_file import STATS_FILE
from taxifare_core.storage import outputs


class PreprocessRides(beam.PTransform):
    """Typed rides -> {"train", "val"} CSV text: date window, cleaning, dedupe, encode, split, format.

    Also {"train_batches", "val_batches"}: the split's ProcessedBatches before formatting,
    for the statistics (pipelines.preprocessing.statistics.ComputeStatistics).
    """

    def __init__(
        self,
        min_date,
        max_date,
        val_start,
        dedupe: str = "batch",
        batch_rows: int = 100_000,
        num_shards: int = 0,
        shard_format: str = "csv",
    ):
        super().__init__()
        self.min_date, self.max_date, self.val_start = min_date, max_date, val_start
        self.dedupe, self.batch_rows, self.num_shards = dedupe, batch_rows, num_shards
        self.shard_format = shard_format

    def expand(self, rides):
        split = (
            rides
            | "FilterDateWindow"
            >> beam.ParDo(FilterDateWindowFn(self.min_date, self.max_date)).with_output_types(pd.DataFrame)
            | "Clean" >> CleanRides(self.dedupe, self.batch_rows)
            | "Encode" >> EncodeRides()
            | "Split" >> SplitTrainVal(self.val_start)
        )
        if self.shard_format == "parquet":  # one Arrow table per batch: one row group each
            shards = {
                TRAIN: split[TRAIN] | "TableTrain" >> beam.Map(_table_of),
                VAL: split[VAL] | "TableVal" >> beam.Map(_table_of),
            }
        else:
            shards = {
                TRAIN: split[TRAIN] | "FormatTrain" >> FormatCsvLines(pieces=self.num_shards),
                VAL: split[VAL] | "FormatVal" >> FormatCsvLines(pieces=self.num_shards),
            }
        return {
            **shards,
            TRAIN_BATCHES: split[TRAIN],
            VAL_BATCHES: split[VAL],
        }


def _table_of(batch) -> pa.Table:
    """A ProcessedBatch as the Arrow table of one Parquet row group."""
    return processed_table(batch.rows)


STATS = "stats"


KIND = "preprocess"  # the manifest's job name: batch prediction refuses to publish over it, and back


# Output file prefixes under OUTPUT/, and their suffixes.
OUTPUT_FILES = {TRAIN: ("train", ".csv"), VAL: ("val", ".csv"), DEAD_LETTER: ("errors", ".jsonl"), RAW: ("raw", ".csv")}


def read_source(pipeline: beam.Pipeline, config: PreprocessConfig) -> beam.PCollection:
    """The raw input: RawBlocks of CSV lines, or BigQuery's rows as dicts."""
    if config.source == "csv":
        # A glob into a published output folder (e.g. its raw cache) reads that output's files.
        published = outputs.resolve(config.input)
        return pipeline | "ReadCsv" >> ReadCsvBlocks(published or config.input, config.block_rows)
    options = pipeline.options.view_as(GoogleCloudOptions)
    project = options.project or (contract.BQ_PROJECT if config.bigquery_emulator else None)
    read = read_from_bigquery(config.query, config.read_method, project, options.temp_location)
    return pipeline | READ_BIGQUERY_LABEL >> read


def build_preprocess(source, config: PreprocessConfig) -> dict[str, beam.PCollection]:
    """The pipeline graph from a Pipeline (reads config's source) or a PCollection of raw input.

    A PCollection stands for what the source would give: RawBlocks for
    --source csv, dict rows shaped like BigQuery's for --source bigquery.
    Returns {"train", "val"} CSV text, {"dead_letter"} JSON lines and, for
    BigQuery, {"raw"} CSV text of the rows read (the raw cache).
    """
    raw = read_source(source, config) if isinstance(source, beam.Pipeline) else source
    outputs = {}
    if config.source == "csv":
        parsed = raw | "ParseCsv" >> ParseCsvBlocks()
    else:
        parsed = raw | "ParseBigQueryRows" >> ParseRecordBatches(config.table, config.block_rows)
        outputs[RAW] = parsed[RAW]
    lines = parsed[RIDES] | "Preprocess" >> PreprocessRides(
        config.min_date,
        config.max_date,
        config.val_start,
        config.dedupe,
        config.block_rows,
        config.num_shards,
        config.shard_format,
    )
    outputs.update({TRAIN: lines[TRAIN], VAL: lines[VAL], DEAD_LETTER: parsed[DEAD_LETTER]})
    if config.statistics:
        batches = {TRAIN: lines[TRAIN_BATCHES], VAL: lines[VAL_BATCHES]}
        outputs[STATS] = batches | "Statistics" >> ComputeStatistics()
    return outputs


def write_outputs(pcolls: dict[str, beam.PCollection], config: PreprocessConfig, folder: str | None = None) -> None:
    """Attach a sharded sink to each output under `folder` (default: config.output): text, or Parquet
    for the train and val shards with --shard_format parquet."""
    folder = folder or config.output
    for name, pcoll in pcolls.items():
        if name == STATS:  # one JSON line, read back by publish_statistics
            pcoll | "WriteStats" >> beam.Map(write_text_file, f"{folder}/{STATS_PARTS}")
            continue
        prefix, suffix = OUTPUT_FILES[name]
        if config.shard_format == "parquet" and name in (TRAIN, VAL):
            pcoll | f"Write{prefix.capitalize()}" >> WriteToParquetBatched(
                f"{folder}/{prefix}",
                schema=PARQUET_SCHEMA,
                codec="snappy",
                file_name_suffix=SUFFIXES["parquet"],
                num_shards=config.num_shards,
                shard_name_template="-SSSSS-of-NNNNN",
            )
            continue
        header = ",".join(contract.RAW_COLUMNS) if name == RAW else None
        pcoll | f"Write{prefix.capitalize()}" >> beam.io.WriteToText(
            f"{folder}/{prefix}",
            file_name_suffix=suffix,
            num_shards=config.num_shards,
            shard_name_template="-SSSSS-of-NNNNN",
            header=header,
        )


class EmptyOutputError(RuntimeError):
    """The run left no train or val row: written for inspection, not published (exit 1)."""

    def __init__(self, summary: dict, run_dir: str):
        self.summary, self.run_dir = summary, run_dir
        super().__init__(
            f"no rows to write ({summary['rows_read']:,} read, {summary['bad_input']:,} bad input, "
            f"{summary['dropped_total']:,} dropped, {summary['duplicates']:,} duplicates): the previous output "
            f"stays published; this run's files are in {run_dir} for inspection; "
            "pass --allow_empty to publish an empty output"
        )


def carried_files(previous: dict | None, config: PreprocessConfig) -> dict[str, int]:
    """The previous output's raw cache, kept listed by a CSV run (which writes none)."""
    if config.source != "csv" or not previous:
        return {}
    prefix, suffix = OUTPUT_FILES[RAW]
    return {
        rel: size
        for rel, size in previous["files"].items()
        if fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], f"{prefix}-*-of-*{suffix}")
    }


class DriftGateError(RuntimeError):
    """--fail_on_drift and drift flagged: the run is written, kept for inspection, not published (exit 3)."""

    def __init__(self, summary: dict, run_dir: str):
        self.summary, self.run_dir = summary, run_dir
        flagged = ", ".join(summary["drift"]["flagged"])
        super().__init__(
            f"drift flagged ({flagged}) with --fail_on_drift: this run is NOT published, the previous "
            f"output stays; its files and report are in {run_dir} for inspection"
        )


def empty_val_warning(summary: dict, config: PreprocessConfig) -> str | None:
    """The warning for a run with train rows but an empty validation split (its drift, val vs train, means nothing)."""
    if summary["val_rows"] or not summary["train_rows"]:
        return None
    line = f"the validation split is EMPTY: no kept ride from --val_start {config.val_start} on"
    if config.compare_to:
        return line
    line += "; drift (val against train) could not be measured"
    return line + (", so --fail_on_drift checked nothing" if config.fail_on_drift else "")


def gate_reason(summary: dict, config: PreprocessConfig) -> str | None:
    """Why this run must not be published, or None: no row left (unless --allow_empty), drift with --fail_on_drift."""
    if summary["train_rows"] + summary["val_rows"] == 0 and not config.allow_empty:
        return "no train or val row left (--allow_empty publishes such a run)"
    drift = summary.get("drift")
    if config.fail_on_drift and drift and drift["flagged"]:
        return f"drift flagged ({', '.join(drift['flagged'])}) and --fail_on_drift was given"
    return None


def mark_report_unpublished(run_dir: str, summary: dict, config: PreprocessConfig) -> None:
    """Rewrite the run's report.html so that it says the run was not published, and why (summary["not_published"])."""
    from taxifare_core.report import render_report

    payload = json.loads(storage.read_text(f"{run_dir}/{STATS_FILE}"))
    reference = resolve_reference(config.compare_to)[1] if config.compare_to else None
    storage.write_text(f"{run_dir}/{REPORT_FILE}", render_report(summary, payload, reference))


def run(options: PipelineOptions, config: PreprocessConfig) -> dict:
    """Run the pipeline in a run folder of its own and publish it; returns the published summary.

    One run at a time per output folder (UsageError for the second, and for an
    output that is not this project's to write: `outputs.publishing_run`). The run
    writes OUTPUT/run-<id>/ and publishes it by replacing OUTPUT/summary.json
    last; a failed or killed run leaves the previous output as it was.
    Not published, kept for inspection: EmptyOutputError when no row is left
    (unless config.allow_empty), DriftGateError when drift is flagged with --fail_on_drift.
    """
    files = check_inputs(config.input) if config.source == "csv" else []
    source = config.input if config.source == "csv" else f"BigQuery {config.table}"
    try:
        with outputs.publishing_run(config.output, KIND, config.force, _warn) as run_folder:
            print(
                f"preprocess: {source} -> {config.output} (runner {config.runner}, dedupe {config.dedupe})",
                file=sys.stderr,
            )
            if config.runner in LOCAL_RUNNERS and progress.runs_here(options):  # the parse step advances it
                progress.start("preprocess", input_bytes(files), unit="B")
            try:
                published = write_and_publish(options, config, run_folder)
            except BaseException:
                progress.stop(failed=True)
                raise
            progress.stop()
            return published
    except outputs.OutputUsageError as error:
        raise UsageError(str(error)) from None


def _warn(line: str) -> None:
    print(f"preprocess: warning: {line}", file=sys.stderr)


def write_and_publish(options: PipelineOptions, config: PreprocessConfig, run_folder: outputs.RunFolder) -> dict:
    """Run the pipeline into the run folder, then publish it, or keep it unpublished and raise why."""
    run_dir = run_folder.path
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    write_outputs(build_preprocess(pipeline, config), config, run_dir)
    result = pipeline.run()
    result.wait_until_finish()
    try:
        counters, stages = counters_from_result(result), stages_from_result(result)
    except MetricsUnavailableError as error:
        run_folder.keep_unpublished()  # finished files: kept for inspection, never published with made-up counts
        raise MetricsUnavailableError(f"{error}: nothing published; this run's files are in {run_dir}") from None
    summary = build_summary(counters, config.to_dict(), time.perf_counter() - started, stages)
    if config.statistics:  # into the run folder: published with it, or kept for inspection
        summary["drift"] = publish_statistics(run_dir, summary, config.compare_to)
        warning = empty_val_warning(summary, config)
        if warning:
            summary["warnings"] = [warning]
    reason = gate_reason(summary, config)
    if reason is None:
        return run_folder.publish(summary, carried_files(run_folder.previous, config))
    outputs.remove_beam_temp(run_dir)
    run_folder.keep_unpublished()
    summary["not_published"] = reason
    write_summary(f"{run_dir}/{SUMMARY_FILE}", summary)
    if summary.get("drift") is not None:
        mark_report_unpublished(run_dir, summary, config)
    if summary["train_rows"] + summary["val_rows"] == 0 and not config.allow_empty:
        raise EmptyOutputError(summary, run_dir)
    raise DriftGateError(summary, run_dir)


def build_dry_run_job(argv: list[str]):
    """Build the real Dataflow job of `python -m pipelines.preprocess argv` without submitting it.

    Adds `--dry_run True`, so Beam returns once the job is built (sdist included),
    before any call to Google Cloud. Returns Beam's apiclient.Job: `.proto_pipeline`
    is the pipeline proto Dataflow would receive, `.proto` the job request.
    """
    flags, beam_args = flag_parser().parse_known_args(argv)
    options = dataflow.dry_run_options(beam_args)
    config = resolve_config(flags, options)
    pipeline = beam.Pipeline(options=options)
    write_outputs(build_preprocess(pipeline, config), config)
    return pipeline.run().job
