"""Which Beam runner runs a job: the local runners' names, the offline default, and options from argv.

    options = pipeline_options(["--direct_num_workers", "2"])   # FnApiRunner unless --runner is given
    options.view_as(StandardOptions).runner in LOCAL_RUNNERS  # True
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

# The in-process engine the DirectRunner falls back to: chosen directly so an
# offline machine never waits for the Prism download the DirectRunner tries first.
DEFAULT_RUNNER = "FnApiRunner"
# Runners that execute in (or under) this process: they print their own progress, and the
# emulator redirect (pipelines.local.bigquery_emulator) can only reach their BigQuery clients.
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def pipeline_options(argv: list[str]) -> PipelineOptions:
    """Beam options from the command line, with the offline in-process runner unless --runner is given."""
    options = PipelineOptions(argv)
    if not options.view_as(StandardOptions).runner:
        options.view_as(StandardOptions).runner = DEFAULT_RUNNER
    return options
