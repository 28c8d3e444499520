"""The Beam preprocessing pipeline: raw rides (CSV or BigQuery) -> clean -> 65 features -> sharded CSVs.

    python -m pipelines.preprocess                      # the embedded sample, in process, offline
    python -m pipelines.preprocess --input 'data/rides-*.csv' --output /tmp/processed
    python -m pipelines.preprocess --direct_num_workers 2 --direct_running_mode multi_processing
    python -m pipelines.preprocess --source bigquery --data_size 200k --project MY_PROJECT
    python -m pipelines.preprocess --help

Writes train-SSSSS-of-NNNNN.csv and val-SSSSS-of-NNNNN.csv (66 columns, no header),
errors-SSSSS-of-NNNNN.jsonl (the dead letter), stats.json and report.html (feature
statistics, drift; docs/statistics.md) and, for a BigQuery run, the raw rows as
raw-SSSSS-of-NNNNN.csv (with a header, so the next run can read them with --source csv
instead of querying again) into OUTPUT/run-<id>/, then publishes them by writing
OUTPUT/summary.json (counts + the manifest of those files) last. Readers take the globs
OUTPUT/train-*.csv etc. (`taxifare_core.outputs.resolve`). A failed or killed run leaves
the previous output as it was; one run at a time per OUTPUT (docs/reliability.md).

`build_preprocess(pipeline_or_rows, config)` builds the graph and returns its
PCollections, so tests can feed `beam.Create` rows in place of the source.
"""
from __future__ import annotations

import fnmatch
import logging
import sys
import time
import traceback

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions, TestOptions

from pipelines import dataflow

from pipelines.options import (
    DEFAULT_RUNNER,
    LOCAL_RUNNERS,
    PreprocessConfig,
    PreprocessOptions,
    UsageError,
    check_flags,
    help_parser,
    resolve_config,
)
from pipelines.sources import READ_BIGQUERY_LABEL, ReadCsvBlocks, bigquery_read_failure, read_from_bigquery, read_header
from pipelines.statistics import (
    EXIT_DRIFT,
    REPORT_FILE,
    STATS_FILE,
    STATS_PARTS,
    ComputeStatistics,
    print_drift,
    publish_statistics,
    write_text_file,
)
from pipelines.summary import (
    SUMMARY_FILE,
    build_summary,
    counters_from_result,
    format_table,
    stages_from_result,
    write_summary,
)
from pipelines.transforms import (
    DEAD_LETTER,
    PROGRESS,
    RAW,
    RIDES,
    TRAIN,
    TRAIN_BATCHES,
    VAL,
    VAL_BATCHES,
    ParseCsvBlocks,
    ParseRecordBatches,
    PreprocessRides,
)
from taxifare_core import contract, outputs, storage
from taxifare_core.parsing import MalformedRecord

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
        from pipelines.bigquery_emulator import use_bigquery_emulator

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
    try:
        outputs.check_output_folder(config.output)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if config.source == "csv":
        check_input(config)
    source = config.input if config.source == "csv" else f"BigQuery {config.table}"
    print(f"preprocess: {source} -> {config.output} (runner {config.runner}, dedupe {config.dedupe})",
          file=sys.stderr)
    lock = outputs.OutputLock(config.output)
    try:
        lock.acquire()
    except outputs.OutputLockedError as error:
        raise UsageError(str(error)) from None
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
        summary = build_summary(counters_from_result(result), config.to_dict(), time.perf_counter() - started,
                                stages_from_result(result))
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


def _default_input() -> str:
    """The embedded generated sample (made once under the local data path)."""
    from taxifare_core.generate import ensure_default_sample

    return ensure_default_sample()


def show_progress() -> None:
    """Print the blocks' progress lines on stderr (once per process)."""
    if not PROGRESS.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("preprocess: %(message)s"))
        PROGRESS.addHandler(handler)
        PROGRESS.setLevel(logging.INFO)
        PROGRESS.propagate = False


def pipeline_options(argv: list[str]) -> PipelineOptions:
    """Beam options from the command line, with the offline in-process runner unless --runner is given."""
    options = PipelineOptions(argv)
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    return options


def check_remote_options(options: PipelineOptions) -> None:
    """Refuse Dataflow settings Beam would hang on (a local temp location, no project) in one line."""
    try:
        dataflow.check_dataflow_options(options)
    except dataflow.DataflowError as error:
        raise UsageError(str(error)) from None


def prepare_emulator(options: PipelineOptions, config: PreprocessConfig) -> None:
    """Point Beam's BigQuery clients at the emulator before anything touches Google Cloud."""
    from pipelines.bigquery_emulator import check_runs_in_process, use_bigquery_emulator

    try:
        check_runs_in_process(options)
        use_bigquery_emulator(config.bigquery_emulator)
    except ValueError as error:
        raise UsageError(str(error)) from None


def set_log_level(options: PipelineOptions) -> str | None:
    """--log_level for Python's logging (Beam's included); without it, local runs keep Beam quiet."""
    level = options.view_as(PreprocessOptions).log_level
    if level:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(level)
        logging.getLogger("apache_beam").setLevel(level)
    elif options.view_as(StandardOptions).runner in LOCAL_RUNNERS:
        # Local runs print their own progress, and a failure reaches main() as an exception anyway
        # (Beam would also log its traceback at ERROR); remote runners keep Beam's job logs.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    return level


def run_reporting_bigquery_failures(options: PipelineOptions, config: PreprocessConfig, debug: bool):
    """run(), but a failed BigQuery read ends with one line naming the table and read method
    (the traceback too with --log_level DEBUG); (summary, None) or (None, that line)."""
    try:
        return run(options, config), None
    except Exception as error:
        failure = None
        if config.source == "bigquery":
            failure = bigquery_read_failure(error, config.table, config.read_method)
        if failure is None:
            raise
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (--log_level DEBUG shows the traceback)"
        return None, failure + hint


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: validate flags, run, print the summary table."""
    argv = sys.argv[1:] if argv is None else argv
    help_parser().parse_known_args(argv)  # --help, and one-line errors for this pipeline's flags
    options = pipeline_options(argv)
    debug = set_log_level(options) == "DEBUG"
    show_progress()
    try:
        check_flags(argv)
        check_remote_options(options)
        config = resolve_config(options, default_input=_default_input)
        if config.bigquery_emulator:
            prepare_emulator(options, config)
        if dataflow.is_dataflow(options) and options.view_as(TestOptions).dry_run:
            job = dataflow.build_dry_run_job(argv)
            print(f"dry run: Dataflow job {job.proto.name!r} built, not submitted "
                  f"({len(job.proto_pipeline.components.transforms)} transforms)")
            return 0
        summary, failure = run_reporting_bigquery_failures(options, config, debug)
        if failure:
            print(f"preprocess: error: {failure}", file=sys.stderr)
            return 1
    except EmptyOutputError as error:
        print(format_table(error.summary))
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 1
    except UsageError as error:
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        # Beam's option validation ("Pipeline has validations errors:\n<reasons>").
        if "validations errors" not in str(error):
            raise
        reasons = "; ".join(line.strip() for line in str(error).splitlines()[1:] if line.strip())
        print(f"preprocess: error: {reasons}", file=sys.stderr)
        return 2
    drift = summary.get("drift")
    print(format_table(summary))
    print_drift(drift)
    print(f"summary: {config.output}/{SUMMARY_FILE}")
    if drift is not None:
        run_dir = f"{config.output}/{summary[outputs.MANIFEST_KEY]['run']}"
        print(f"statistics: {run_dir}/{STATS_FILE}, report: {run_dir}/{REPORT_FILE}")
    if not summary["balanced"]:
        return 1
    return EXIT_DRIFT if config.fail_on_drift and drift and drift["flagged"] else 0


if __name__ == "__main__":
    sys.exit(main())
