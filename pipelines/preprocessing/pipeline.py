"""The preprocessing pipeline: its graph (`build_preprocess`) and one crash-safe run (`run`).

`build_preprocess(pipeline_or_rows, config)` builds the graph and returns its
PCollections, so tests can feed `beam.Create` rows in place of the source;
`run(options, config)` writes OUTPUT/run-<id>/ and publishes it with OUTPUT/summary.json
(`taxifare_core.storage.outputs`). The command line is `pipelines.preprocess`.
"""
from __future__ import annotations

import fnmatch
import sys
import time

import apache_beam as beam
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from pipelines.cloud import dataflow
from pipelines.preprocessing.bigquery import READ_BIGQUERY_LABEL, read_from_bigquery
from pipelines.preprocessing.clean import CleanRides, FilterDateWindowFn
from pipelines.preprocessing.encode import EncodeRides, FormatCsvLines, SplitTrainVal
from pipelines.preprocessing.options import PreprocessConfig, UsageError, resolve_config
from pipelines.preprocessing.parse import ParseCsvBlocks
from pipelines.preprocessing.records import ParseRecordBatches
from pipelines.preprocessing.sources import ReadCsvBlocks, read_header
from pipelines.preprocessing.statistics import (
    REPORT_FILE,
    STATS_FILE,
    STATS_PARTS,
    ComputeStatistics,
    publish_statistics,
    write_text_file,
)
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
from taxifare_core import contract, storage
from taxifare_core.parsing import MalformedRecord
from taxifare_core.storage import outputs


class PreprocessRides(beam.PTransform):
    """Typed rides -> {"train", "val"} CSV text: date window, cleaning, dedupe, encode, split, format.

    Also {"train_batches", "val_batches"}: the split's ProcessedBatches before formatting,
    for the statistics (pipelines.preprocessing.statistics.ComputeStatistics).
    """

    def __init__(self, min_date, max_date, val_start, dedupe: str = "batch", batch_rows: int = 100_000,
                 num_shards: int = 0):
        super().__init__()
        self.min_date, self.max_date, self.val_start = min_date, max_date, val_start
        self.dedupe, self.batch_rows, self.num_shards = dedupe, batch_rows, num_shards

    def expand(self, rides):
        split = (
            rides
            | "FilterDateWindow" >> beam.ParDo(FilterDateWindowFn(self.min_date, self.max_date)).with_output_types(
                pd.DataFrame)
            | "Clean" >> CleanRides(self.dedupe, self.batch_rows)
            | "Encode" >> EncodeRides()
            | "Split" >> SplitTrainVal(self.val_start)
        )
        return {
            TRAIN: split[TRAIN] | "FormatTrain" >> FormatCsvLines(pieces=self.num_shards),
            VAL: split[VAL] | "FormatVal" >> FormatCsvLines(pieces=self.num_shards),
            TRAIN_BATCHES: split[TRAIN],
            VAL_BATCHES: split[VAL],
        }


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
    if config.bigquery_emulator:
        from pipelines.cloud.bigquery_emulator import use_bigquery_emulator

        use_bigquery_emulator(config.bigquery_emulator)
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
        config.min_date, config.max_date, config.val_start, config.dedupe, config.block_rows, config.num_shards
    )
    outputs.update({TRAIN: lines[TRAIN], VAL: lines[VAL], DEAD_LETTER: parsed[DEAD_LETTER]})
    if config.statistics:
        batches = {TRAIN: lines[TRAIN_BATCHES], VAL: lines[VAL_BATCHES]}
        outputs[STATS] = batches | "Statistics" >> ComputeStatistics()
    return outputs


def write_outputs(pcolls: dict[str, beam.PCollection], config: PreprocessConfig, folder: str | None = None) -> None:
    """Attach a sharded text sink to each output under `folder` (default: config.output)."""
    folder = folder or config.output
    for name, pcoll in pcolls.items():
        if name == STATS:  # one JSON line, read back by publish_statistics
            pcoll | "WriteStats" >> beam.Map(write_text_file, f"{folder}/{STATS_PARTS}")
            continue
        prefix, suffix = OUTPUT_FILES[name]
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
            "pass --allow_empty to publish an empty output")


def legacy_patterns(config: PreprocessConfig) -> list[str]:
    """File names a run of the flat layout (shards directly in OUTPUT) left; never the raw cache a CSV run reads."""
    names = [TRAIN, VAL, DEAD_LETTER] + ([RAW] if config.source == "bigquery" else [])
    return [f"{OUTPUT_FILES[n][0]}-*-of-*{OUTPUT_FILES[n][1]}" for n in names] + [STATS_FILE, STATS_PARTS, REPORT_FILE]


def carried_files(previous: dict | None, config: PreprocessConfig) -> dict[str, int]:
    """The previous output's raw cache, kept listed by a CSV run (which writes none)."""
    if config.source != "csv" or not previous:
        return {}
    prefix, suffix = OUTPUT_FILES[RAW]
    return {rel: size for rel, size in previous["files"].items()
            if fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], f"{prefix}-*-of-*{suffix}")}


def check_input(config: PreprocessConfig) -> list[str]:
    """The CSV files the input matches, each with a usable header; UsageError otherwise."""
    try:
        matched = outputs.resolve(config.input)
    except outputs.IncompleteOutputError as error:
        raise UsageError(str(error)) from None
    if matched is None:
        matched = [m.path for m in FileSystems.match([config.input])[0].metadata_list]
    if not matched:
        raise UsageError(outputs.unfinished_hint(config.input) or f"no file matches --input {config.input}")
    for path in matched:
        try:
            read_header(path)
        except MalformedRecord as error:
            raise UsageError(str(error)) from None
    return matched


def run(options: PipelineOptions, config: PreprocessConfig) -> dict:
    """Run the pipeline in a run folder of its own and publish it; returns the published summary.

    One run at a time per output folder (UsageError for the second). The run
    writes OUTPUT/run-<id>/ and publishes it by replacing OUTPUT/summary.json
    last; a failed or killed run leaves the previous output as it was.
    EmptyOutputError (not published) when no row is left, unless config.allow_empty.
    """
    if config.source == "csv":
        check_input(config)
    try:
        lock = outputs.claim(config.output)
    except (ValueError, outputs.OutputLockedError) as error:
        raise UsageError(str(error)) from None
    source = config.input if config.source == "csv" else f"BigQuery {config.table}"
    print(f"preprocess: {source} -> {config.output} (runner {config.runner}, dedupe {config.dedupe})",
          file=sys.stderr)
    try:
        if lock.warning:
            print(f"preprocess: warning: {lock.warning}", file=sys.stderr)
        return _run_locked(options, config)
    finally:
        lock.release()


def _run_locked(options: PipelineOptions, config: PreprocessConfig) -> dict:
    """run()'s body, once the output folder's lock is held."""
    try:
        previous = outputs.read_manifest(config.output)
    except outputs.IncompleteOutputError:
        previous = None  # an unreadable summary.json publishes nothing worth keeping
    try:
        outputs.check_kind(config.output, previous, KIND)
    except ValueError as error:
        raise UsageError(str(error)) from None
    outputs.remove_litter(config.output, previous)
    run_name = outputs.new_run_name()
    run_dir = f"{config.output}/{run_name}"
    keep_run_dir = False
    try:
        started = time.perf_counter()
        pipeline = beam.Pipeline(options=options)
        write_outputs(build_preprocess(pipeline, config), config, run_dir)
        result = pipeline.run()
        result.wait_until_finish()
        try:
            counters, stages = counters_from_result(result), stages_from_result(result)
        except MetricsUnavailableError as error:
            keep_run_dir = True  # finished files: kept for inspection, never published with made-up counts
            raise MetricsUnavailableError(f"{error}: nothing published; this run's files are in {run_dir}") from None
        summary = build_summary(counters, config.to_dict(), time.perf_counter() - started, stages)
        if config.statistics:  # into the run folder: published with it, or kept for inspection
            summary["drift"] = publish_statistics(run_dir, summary, config.compare_to)
        if summary["train_rows"] + summary["val_rows"] == 0 and not config.allow_empty:
            outputs.remove_beam_temp(run_dir)
            write_summary(f"{run_dir}/{SUMMARY_FILE}", summary)
            keep_run_dir = True
            raise EmptyOutputError(summary, run_dir)
        published = outputs.publish(config.output, run_name, summary, carried_files(previous, config), KIND)
        keep_run_dir = True
    finally:
        if not keep_run_dir:
            storage.remove_tree(run_dir)
    # The new output is in place: what the previous one used can go.
    outputs.remove_litter(config.output, published[outputs.MANIFEST_KEY], legacy_patterns(config))
    return published


def build_dry_run_job(argv: list[str]):
    """Build the real Dataflow job of `python -m pipelines.preprocess argv` without submitting it.

    Adds `--dry_run True`, so Beam returns once the job is built (sdist included),
    before any call to Google Cloud. Returns Beam's apiclient.Job: `.proto_pipeline`
    is the pipeline proto Dataflow would receive, `.proto` the job request.
    """
    options = dataflow.dry_run_options(argv)
    config = resolve_config(options)
    pipeline = beam.Pipeline(options=options)
    write_outputs(build_preprocess(pipeline, config), config)
    return pipeline.run().job
