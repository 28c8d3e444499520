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
OUTPUT/train-*.csv etc. (`taxifare_core.storage.outputs.resolve`). A failed or killed run leaves
the previous output as it was; one run at a time per OUTPUT (docs/reliability.md).

`build_preprocess(pipeline_or_rows, config)` builds the graph and returns its
PCollections, so tests can feed `beam.Create` rows in place of the source.
"""

from __future__ import annotations

import logging
import sys
import traceback

from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from pipelines import progress
from pipelines.cli import entry_point, on_interrupt, writes_to
from pipelines.cloud import dataflow
from pipelines.preprocessing.bigquery import BigQueryError, bigquery_read_failure, check_credentials
from pipelines.preprocessing.options import PreprocessConfig, UsageError, parse_args, resolve_config
from pipelines.preprocessing.pipeline import DriftGateError, EmptyOutputError, build_dry_run_job, run
from pipelines.preprocessing.summary import SUMMARY_FILE, MetricsUnavailableError, format_table
from pipelines.preprocessing.tags import PROGRESS
from pipelines.run_statistics import EXIT_DRIFT, REPORT_FILE, print_drift
from pipelines.runners import LOCAL_RUNNERS, check_beam_flags
from taxifare_core.stats_file import STATS_FILE
from taxifare_core.storage import outputs


def _default_input() -> str:
    """The embedded generated sample (made once under the local data path)."""
    from taxifare_core.default_sample import ensure_default_sample

    return ensure_default_sample()


def show_progress(quiet: bool = False) -> None:
    """Progress on stderr: the run's line (pipelines.progress: bytes read, rate, ETA) unless --quiet;
    the blocks' own lines (PROGRESS, at DEBUG) stay hidden."""
    progress.set_quiet(quiet)
    if not PROGRESS.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("preprocess: %(message)s"))
        PROGRESS.addHandler(handler)
        PROGRESS.setLevel(logging.INFO)
        PROGRESS.propagate = False


def check_remote_options(options: PipelineOptions) -> None:
    """Refuse Dataflow settings Beam would hang on (a local temp location, no project) in one line."""
    try:
        dataflow.check_dataflow_options(options)
    except dataflow.DataflowError as error:
        raise UsageError(str(error)) from None


def prepare_bigquery(options: PipelineOptions, config: PreprocessConfig, flags) -> None:
    """Before a BigQuery run in this process touches Google Cloud: the emulator redirect
    (--bigquery_emulator), or the credentials checked (BigQueryError); either way every BigQuery
    call bounded by --bigquery_timeout on an in-process runner (pipelines.local.bigquery_clients)."""
    if config.bigquery_emulator:
        from pipelines.local.bigquery_emulator import check_runs_in_process, use_bigquery_emulator

        try:
            check_runs_in_process(options)
            use_bigquery_emulator(config.bigquery_emulator, timeout=flags.bigquery_timeout)
        except ValueError as error:
            raise UsageError(str(error)) from None
        return
    check_credentials()
    if options.view_as(StandardOptions).runner in LOCAL_RUNNERS:
        from pipelines.local.bigquery_clients import bound_bigquery_calls

        bound_bigquery_calls(flags.bigquery_timeout)


def set_log_level(level: str | None, options: PipelineOptions) -> str | None:
    """--log_level for Python's logging (Beam's included); without it, local runs keep Beam quiet."""
    if level:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(level)
        logging.getLogger("apache_beam").setLevel(level)
    elif options.view_as(StandardOptions).runner in LOCAL_RUNNERS:
        # Local runs print their own progress, and a failure reaches main() as an exception anyway
        # (Beam would also log its traceback at ERROR); remote runners keep Beam's job logs.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        # Beam's BigQuery export also calls logging.warning(), which would set up the root logger
        # and print "WARNING:root:Error exporting table ..." above the run's own one-line error.
        if not logging.getLogger().handlers:
            logging.getLogger().addHandler(logging.NullHandler())
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


@entry_point("preprocess")
def main(argv: list[str] | None = None) -> int:
    """CLI entry point: validate flags, run, print the summary table (Ctrl-C, SIGTERM, a full disk: one line)."""
    argv = sys.argv[1:] if argv is None else argv
    flags, options = parse_args(argv)  # --help, and one-line errors for this pipeline's flags
    debug = set_log_level(flags.log_level, options) == "DEBUG"
    show_progress(flags.quiet)
    try:
        check_beam_flags(options, vars(flags))
        check_remote_options(options)
        config = resolve_config(flags, options, default_input=_default_input)
        writes_to(config.output)
        on_interrupt(lambda: f"{config.output} keeps its last published run")
        if dataflow.is_dataflow(options) and options.view_as(TestOptions).dry_run:
            job = build_dry_run_job(argv)
            print(
                f"dry run: Dataflow job {job.proto.name!r} built, not submitted "
                f"({len(job.proto_pipeline.components.transforms)} transforms)"
            )
            return 0
        if config.source == "bigquery":
            prepare_bigquery(options, config, flags)
        summary, failure = run_reporting_bigquery_failures(options, config, debug)
        if failure:
            print(f"preprocess: error: {failure}", file=sys.stderr)
            return 1
    except (BigQueryError, MetricsUnavailableError) as error:
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 1
    except EmptyOutputError as error:
        print(format_table(error.summary))
        print(f"preprocess: error: {error}", file=sys.stderr)
        return 1
    except DriftGateError as error:
        print(format_table(error.summary))
        print_drift(error.summary["drift"])
        print(f"statistics: {error.run_dir}/{STATS_FILE}, report: {error.run_dir}/{REPORT_FILE}")
        print(f"preprocess: error: {error}", file=sys.stderr)
        return EXIT_DRIFT
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
    for warning in summary.get("warnings", []):
        print(f"preprocess: WARNING: {warning}", file=sys.stderr)
    if not summary["balanced"]:
        return 1
    return EXIT_DRIFT if config.fail_on_drift and drift and drift["flagged"] else 0


if __name__ == "__main__":
    sys.exit(main())
