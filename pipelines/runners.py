"""Which Beam runner runs a job: the local runners' names, the offline default, and options from argv.

options = pipeline_options(["--direct_num_workers", "2"])   # FnApiRunner unless --runner is given
options.view_as(StandardOptions).runner in LOCAL_RUNNERS  # True
check_beam_flags(options, ["--input", "--output"])          # UsageError for a flag nobody defines
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.cli import UsageError

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


def check_beam_flags(options: PipelineOptions, ours: Iterable[str] = ()) -> None:
    """UsageError naming the first flag no Beam options class defines, with the closest known one.

    `options` holds what the job's own parser left; its flag names (`ours`) only feed the hint.
    Beam itself only logs "Discarding unparseable args" and runs anyway: a typo must stop the run.
    """
    known = PipelineOptions([]).get_all_options()  # every defined flag at its default (no flags: no warning)
    unknown = [name for name in options.get_all_options(retain_unknown_options=True) if name not in known]
    if not unknown:
        return
    flag = f"--{unknown[0]}"
    close = difflib.get_close_matches(flag, [f"--{name}" for name in [*known, *ours]], n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UsageError(f"unknown flag {flag}{hint}; see --help")
