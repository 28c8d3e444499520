"""Regenerate OUTPUT/report.html from a finished preprocessing output folder, optionally against another run.

    python -m pipelines.report OUTPUT                     # summary.json + stats.json -> OUTPUT/report.html
    python -m pipelines.report OUTPUT --compare_to REF    # drift against REF (a run's folder or its stats.json)
    python -m pipelines.report OUTPUT --out /tmp/r.html   # somewhere else

With --compare_to the page's drift section and its plots show the reference; stats.json
itself is left as the run wrote it. Local paths or gs://. Exit code 2 with one line for a
missing or foreign folder or file.
"""

from __future__ import annotations

import json
import sys

from pipelines.cli import OneLineErrorParser, UsageError, entry_point, report_usage_error
from pipelines.preprocessing.summary import SUMMARY_FILE
from pipelines.run_statistics import REPORT_FILE, resolve_reference, run_drift
from taxifare_core import storage
from taxifare_core.report import render_report
from taxifare_core.stats_file import STATS_FILE, StatsError, parse_stats
from taxifare_core.storage import outputs

PROG = "python -m pipelines.report"


def build_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="a preprocessing output folder holding summary.json and stats.json")
    parser.add_argument(
        "--compare_to",
        default=None,
        metavar="REF",
        help="score drift against another run: its output folder or its stats.json",
    )
    parser.add_argument("--out", default=None, help=f"where to write the page (default: OUTPUT/{REPORT_FILE})")
    return parser


def regenerate(output: str, compare_to: str | None = None, out: str | None = None) -> str:
    """Write the report of a finished run; returns its path. UsageError for a missing or foreign file."""
    output = output.rstrip("/")
    try:
        kind = (outputs.read_manifest(output) or {}).get("kind")
    except outputs.IncompleteOutputError as error:
        raise UsageError(str(error)) from None
    if kind and kind != "preprocess":
        raise UsageError(
            f"{output} holds a {kind} output, not a preprocessing one: the report reads "
            "preprocessing outputs (a batch prediction's statistics are its stats.json)"
        )
    try:
        stats_path = outputs.published_path(f"{output}/{STATS_FILE}")  # inside the published run folder
    except outputs.IncompleteOutputError as error:
        raise UsageError(str(error)) from None
    summary_path = f"{output}/{SUMMARY_FILE}"
    for path in (stats_path, summary_path):
        if not storage.exists(path):
            raise UsageError(f"{path} not found: is {output} a preprocessing output folder?")
    try:
        payload = parse_stats(storage.read_text(stats_path), stats_path)
        reference = resolve_reference(compare_to) if compare_to else None
    except StatsError as error:
        raise UsageError(str(error)) from None
    try:
        summary = json.loads(storage.read_text(summary_path))
    except ValueError:
        raise UsageError(f"{summary_path} is not JSON") from None
    if reference is not None:
        payload["drift"] = run_drift(payload["splits"], reference)
    path = out or f"{output}/{REPORT_FILE}"
    storage.write_text(path, render_report(summary, payload, reference[1] if reference else None))
    return path


@entry_point(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        path = regenerate(args.output, args.compare_to, args.out)
    except UsageError as error:
        return report_usage_error(PROG, error)
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
